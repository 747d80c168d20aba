"""Hostile files (issue 13, items 1, 2 zip bomb and 7): nothing outside the given file is read,
nothing runs, costs are bounded, and every refusal is one line naming the file, exit 2.

The HDF5 attacks point at a *sentinel* in a directory beside the model's: a file of unique
bytes, and an HDF5 file holding them. Each test asserts the command fails with exit 2, that
the sentinel bytes appear in no output and no file of the database, and (Linux inotify, no
strace needed) that no process opened anything in the sentinel's directory at all. A control
(the same file without the attack) is read, to show each harness can see what it checks.
"""
from __future__ import annotations

import ctypes
import io
import json
import os
import pickle
import struct
import time
import zipfile

import h5py
import numpy as np
import pandas as pd
import pytest

from filterdb import ReadError, read_model
from filterdb.cli import main

KSHAPE = (3, 3, 1, 4)  # Keras kernel [kh, kw, c_in, c_out]: 36 float32 = 144 bytes
NBYTES = 4 * int(np.prod(KSHAPE))


# ---- the watch: inotify on the sentinel's directory -------------------------------------------

IN_ACCESS, IN_OPEN = 0x1, 0x20


class OpenWatch:
    """Counts opens and reads of anything in a directory (any process), via inotify."""

    def __init__(self, directory):
        self.libc = ctypes.CDLL(None, use_errno=True)
        if not hasattr(self.libc, "inotify_init1"):
            pytest.skip("no inotify on this system")
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            pytest.skip("inotify unavailable")
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(directory), IN_OPEN | IN_ACCESS)
        if wd < 0:
            os.close(self.fd)
            pytest.skip("inotify watch refused")

    def events(self) -> list[str]:
        """Names of the entries opened or read since the last call."""
        out = []
        while True:
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return out
            pos = 0
            while pos < len(buf):
                _wd, mask, _cookie, n = struct.unpack_from("iIII", buf, pos)
                name = buf[pos + 16:pos + 16 + n].rstrip(b"\0").decode()
                out.append(f"{name or '.'}:{mask:#x}")
                pos += 16 + n

    def close(self):
        os.close(self.fd)


@pytest.fixture
def outside(tmp_path):
    """``(directory, sentinel bytes, sentinel path, other.h5 path)`` outside the model dir,
    and the model directory; yields a watch that must stay silent."""
    d = tmp_path / "outside"
    d.mkdir()
    rng = np.random.default_rng(13)
    # finite float32 values, so a reader that took them would not even warn
    vals = rng.uniform(-1, 1, int(np.prod(KSHAPE))).astype("<f4")
    sentinel = vals.tobytes()
    assert len(sentinel) == NBYTES
    (d / "secret.bin").write_bytes(sentinel)
    with h5py.File(d / "other.h5", "w") as f:
        f["k"] = vals.reshape(KSHAPE)
        f["filters"] = vals.reshape(4, 9)
        mw = f.create_group("model_weights")
        _keras2_layers(mw, lambda g, n: g.create_dataset(n, data=vals.reshape(KSHAPE)))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    watch = OpenWatch(d)
    yield {"dir": d, "bytes": sentinel, "secret": d / "secret.bin", "other": d / "other.h5",
           "model_dir": model_dir, "watch": watch}
    watch.close()


def test_watch_sees_opens(outside):
    """The watch works: reading the sentinel is seen (so silence below means something)."""
    assert outside["watch"].events() == []
    outside["secret"].read_bytes()
    assert any(e.startswith("secret.bin") for e in outside["watch"].events())


def _tree_bytes(path) -> bytes:
    out = b""
    for root, _, files in os.walk(path):
        for fn in files:
            with open(os.path.join(root, fn), "rb") as f:
                out += f.read()
    return out


def _contains_sentinel(blob: bytes, sentinel: bytes) -> bool:
    return any(sentinel[i:i + 16] in blob for i in range(0, len(sentinel) - 16, 16))


def assert_refused(capsys, outside, path, reason, db=None, commands=("inspect", "check")):
    """Every command exits 2 (``add``: 1, a failed file of a batch) with one line naming
    ``path`` and ``reason``; the sentinel is in
    no output and no database file; nothing in its directory was opened."""
    with pytest.raises(ReadError) as e:
        read_model(path)
    assert str(path) in str(e.value) and reason in str(e.value), str(e.value)
    runs = [[c, str(path)] for c in commands]
    if db is not None:
        runs.append(["add", str(db), str(path)])
    for argv in runs:
        for extra in ([], ["--json"]):
            capsys.readouterr()
            if extra and argv[0] == "add":
                continue
            rc = main(argv + extra)
            out, err = capsys.readouterr()
            # add is a batch: a file that fails is reported and the exit code is 1
            assert rc == 2, (argv, out, err)
            lines = err.strip().splitlines()
            assert len(lines) == 1 and str(path) in lines[0] and reason in lines[0], err
            assert "Traceback" not in err
            for text in (out, err):
                assert not _contains_sentinel(text.encode(), outside["bytes"])
    if db is not None and os.path.exists(db):
        assert not _contains_sentinel(_tree_bytes(db), outside["bytes"])
    assert outside["watch"].events() == [], "something outside the model file was opened"


# ---- Keras files ------------------------------------------------------------------------------

CONFIG2 = {"class_name": "Sequential", "config": {"name": "s", "layers": [
    {"class_name": "Conv2D", "config": {"name": "conv", "filters": 4, "kernel_size": [3, 3]}}]}}


def _keras2_layers(root, write_kernel):
    root.attrs["layer_names"] = np.array([b"conv"])
    g = root.create_group("conv")
    g.attrs["weight_names"] = np.array([b"conv/kernel:0"])
    write_kernel(g, "conv/kernel:0")


def keras2_h5(path, write_kernel, userblock=0, root_link=None):
    kw = {"userblock_size": userblock} if userblock else {}
    with h5py.File(path, "w", **kw) as f:
        f.attrs["model_config"] = json.dumps(CONFIG2)
        f.attrs["keras_version"] = "2.4.0"
        if root_link is not None:
            f["model_weights"] = root_link
        else:
            _keras2_layers(f.create_group("model_weights"), write_kernel)
    if userblock:
        with open(path, "r+b") as fh:  # a second format hidden in the user block
            fh.write(b"#!/bin/sh\n" + b"\0" * 54)
    return path


def keras3_weights(fileobj, write_kernel):
    with h5py.File(fileobj, "w") as f:
        f.create_group("vars")
        v = f.create_group("layers/conv2d/vars")
        v.attrs["name"] = "conv"
        write_kernel(v, "0")


def keras3_archive(path, write_kernel):
    buf = io.BytesIO()
    keras3_weights(buf, write_kernel)
    cfg = {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "Conv2D", "name": "conv", "config": {"name": "conv"}, "inbound_nodes": []}]}}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.5.0"}))
        z.writestr("config.json", json.dumps(cfg))
        z.writestr("model.weights.h5", buf.getvalue())
    return path


def _plain(vals):
    return lambda g, n: g.create_dataset(n, data=vals.reshape(KSHAPE))


def _attacks(o):
    """name -> (kernel writer, reason in the error)."""
    secret, other = str(o["secret"]), str(o["other"])

    def external_storage(g, n):
        g.create_dataset(n, shape=KSHAPE, dtype="<f4", external=[(secret, 0, NBYTES)])

    def external_link_abs(g, n):
        g[n] = h5py.ExternalLink(other, "/k")

    def external_link_rel(g, n):
        g[n] = h5py.ExternalLink("../outside/other.h5", "/k")

    def virtual(g, n):
        layout = h5py.VirtualLayout(shape=KSHAPE, dtype="<f4")
        layout[...] = h5py.VirtualSource(other, "k", shape=KSHAPE)
        g.create_virtual_dataset(n, layout)

    return {"external storage": (external_storage, "external file"),
            "external link": (external_link_abs, "external link"),
            "relative external link": (external_link_rel, "external link"),
            "virtual dataset": (virtual, "virtual dataset")}


ATTACKS = ["external storage", "external link", "relative external link", "virtual dataset"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_keras_h5_refuses_reads_outside(attack, outside, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(outside["model_dir"])
    write, reason = _attacks(outside)[attack]
    p = keras2_h5(outside["model_dir"] / "m.h5", write)
    assert_refused(capsys, outside, p, reason, db=tmp_path / "db")


def test_keras_h5_control_and_internal_soft_link(outside, capsys, tmp_path):
    """The same layout without the attack is read (exit 0), also through a soft link inside
    the file; and the file-level checks see nothing outside was opened."""
    vals = np.frombuffer(outside["bytes"], "<f4")
    p = keras2_h5(outside["model_dir"] / "ok.h5", _plain(vals))
    (l,) = read_model(p).layers
    np.testing.assert_array_equal(l.weight, np.transpose(vals.reshape(KSHAPE), (3, 2, 0, 1)))

    def soft(g, n):
        g.file["real/kernel"] = vals.reshape(KSHAPE)
        g[n] = h5py.SoftLink("/real/kernel")

    p2 = keras2_h5(outside["model_dir"] / "soft.h5", soft)
    (l2,) = read_model(p2).layers
    np.testing.assert_array_equal(l2.weight, l.weight)
    assert main(["add", str(tmp_path / "db"), str(p2)]) == 0
    assert outside["watch"].events() == []


def test_keras_h5_root_group_external_link(outside, capsys, tmp_path):
    p = keras2_h5(outside["model_dir"] / "m.h5", None,
                  root_link=h5py.ExternalLink(str(outside["other"]), "/model_weights"))
    assert_refused(capsys, outside, p, "external link", db=tmp_path / "db")


def test_keras_h5_user_block_refused(outside, capsys, tmp_path):
    vals = np.frombuffer(outside["bytes"], "<f4")
    p = keras2_h5(outside["model_dir"] / "ub.h5", _plain(vals), userblock=512)
    with h5py.File(p, "r") as f:  # h5py itself reads it
        assert f.userblock_size == 512
    assert_refused(capsys, outside, p, "user block of 512 bytes", db=tmp_path / "db")


def test_keras_h5_plugin_filter_refused(outside, tmp_path):
    """A filter HDF5 does not know would make it search for and load a plugin library."""
    p = outside["model_dir"] / "filt.h5"

    def unknown_filter(g, n):
        g.create_dataset(n, data=np.zeros(KSHAPE, "<f4"), chunks=KSHAPE, compression=32004,
                         allow_unknown_filter=True)

    try:
        keras2_h5(p, unknown_filter)
    except (ValueError, OSError) as e:
        pytest.skip(f"h5py cannot write an unknown filter here ({e})")
    with pytest.raises(ReadError, match="HDF5 filter 32004"):
        read_model(p)


@pytest.mark.parametrize("attack", ["external storage", "external link", "virtual dataset"])
def test_keras3_weights_h5_refuses_reads_outside(attack, outside, capsys, tmp_path):
    write, reason = _attacks(outside)[attack]
    p = outside["model_dir"] / "m.weights.h5"
    keras3_weights(p, write)
    assert_refused(capsys, outside, p, reason, db=tmp_path / "db")


@pytest.mark.parametrize("attack", ["external storage", "external link", "virtual dataset"])
def test_keras_archive_refuses_reads_outside(attack, outside, capsys, tmp_path):
    write, reason = _attacks(outside)[attack]
    p = keras3_archive(outside["model_dir"] / "m.keras", write)
    assert_refused(capsys, outside, p, reason, db=tmp_path / "db")
    # control: the same archive with the kernel inside is read
    vals = np.frombuffer(outside["bytes"], "<f4")
    ok = keras3_archive(outside["model_dir"] / "ok.keras", _plain(vals))
    assert read_model(ok).n_filters_3x3 == 4


# ---- the published file (import-h5) -----------------------------------------------------------

def _meta():
    df = pd.DataFrame({"model_id": [0], "conv_depth": [0], "conv_depth_norm": [0.0],
                       "model": ["m0"], "Name": ["M0"], "filter_ids": ["0:3"]})
    return df.set_index(["model_id", "conv_depth", "conv_depth_norm"])


def published(path, write_filters=None, meta_link=None):
    with h5py.File(path, "w") as f:
        if write_filters is None:
            f["filters"] = np.arange(36, dtype="<f4").reshape(4, 9)
        else:
            write_filters(f)
    if meta_link is None:
        _meta().to_hdf(path, key="meta", mode="a")
    else:
        with h5py.File(path, "a") as f:
            f["meta"] = meta_link
    return path


def _published_attacks(o):
    secret, other = str(o["secret"]), str(o["other"])

    def ext(f):
        f.create_dataset("filters", shape=(4, 9), dtype="<f4", external=[(secret, 0, NBYTES)])

    def link(f):
        f["filters"] = h5py.ExternalLink(other, "/filters")

    def vds(f):
        layout = h5py.VirtualLayout(shape=(4, 9), dtype="<f4")
        layout[...] = h5py.VirtualSource(other, "filters", shape=(4, 9))
        f.create_virtual_dataset("filters", layout)

    return {"external storage": (ext, "external file"), "external link": (link, "external link"),
            "virtual dataset": (vds, "virtual dataset")}


def _import_refused(capsys, outside, p, reason, db):
    capsys.readouterr()
    assert main(["import-h5", str(db), str(p)]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(p) in lines[0] and reason in lines[0], err
    assert not _contains_sentinel((out + err).encode(), outside["bytes"])
    if os.path.exists(db):
        assert not _contains_sentinel(_tree_bytes(db), outside["bytes"])
    assert outside["watch"].events() == [], "something outside the file was opened"


@pytest.mark.parametrize("attack", ["external storage", "external link", "virtual dataset"])
def test_import_h5_refuses_reads_outside(attack, outside, capsys, tmp_path):
    write, reason = _published_attacks(outside)[attack]
    p = published(outside["model_dir"] / "dataset.h5", write)
    _import_refused(capsys, outside, p, reason, tmp_path / "db")


def test_import_h5_control(outside, tmp_path):
    p = published(outside["model_dir"] / "dataset.h5")
    assert main(["import-h5", str(tmp_path / "db"), str(p)]) == 0
    assert outside["watch"].events() == []


def test_import_h5_meta_table_behind_external_link(outside, capsys, tmp_path):
    """PyTables would follow a link to a 'meta' table in another file."""
    other_meta = outside["dir"] / "meta.h5"
    _meta().to_hdf(other_meta, key="meta", mode="w")
    outside["watch"].events()
    p = published(outside["model_dir"] / "dataset.h5",
                  meta_link=h5py.ExternalLink(str(other_meta), "/meta"))
    _import_refused(capsys, outside, p, "external link", tmp_path / "db")


class _Mkdir:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_import_h5_pytables_pickle_does_not_run(outside, capsys, tmp_path):
    """PyTables unpickles string attributes ending in '.': a crafted one would run code."""
    marker = tmp_path / "pwned"
    p = published(outside["model_dir"] / "dataset.h5")
    payload = pickle.dumps(_Mkdir(str(marker)), protocol=0)
    assert payload.endswith(b".")
    with h5py.File(p, "a") as f:
        f["meta"].attrs["encoding"] = np.bytes_(payload)
    capsys.readouterr()
    assert main(["import-h5", str(tmp_path / "db"), str(p)]) == 2
    err = capsys.readouterr().err
    assert not marker.exists(), "the pickle in the file ran"
    assert "refusing to unpickle" in err and "posix.mkdir" in err and str(p) in err
    assert len(err.strip().splitlines()) == 1


def test_import_h5_user_block_refused(outside, capsys, tmp_path):
    p = outside["model_dir"] / "dataset.h5"
    with h5py.File(p, "w", userblock_size=1024) as f:
        f["filters"] = np.zeros((4, 9), "<f4")
    _meta().to_hdf(p, key="meta", mode="a")
    assert main(["import-h5", str(tmp_path / "db"), str(p)]) == 2
    assert "user block" in capsys.readouterr().err


# ---- zip archives -----------------------------------------------------------------------------

def _zeros_member(z, name, n, header=b""):
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with z.open(info, "w", force_zip64=True) as w:
        w.write(header)
        chunk = b"\0" * (1 << 20)
        left = n - len(header)
        while left > 0:
            w.write(chunk[:left])
            left -= len(chunk)


def test_keras_zip_bomb_refused_before_decompressing(tmp_path):
    p = tmp_path / "bomb.keras"
    buf = io.BytesIO()
    keras3_weights(buf, _plain(np.zeros(36, np.float32)))
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", json.dumps({"class_name": "Functional", "config": {}}))
        z.writestr("model.weights.h5", buf.getvalue())
        _zeros_member(z, "assets/padding.bin", 400 << 20)
    assert p.stat().st_size < 2 << 20
    t0 = time.perf_counter()
    with pytest.raises(ReadError, match="zip bomb") as e:
        read_model(p)
    assert time.perf_counter() - t0 < 1.0
    assert str(p) in str(e.value) and "400.0 MiB" in str(e.value)


@pytest.fixture
def small_allowance(monkeypatch):
    import filterdb.readers._zip as zp

    monkeypatch.setattr(zp, "MIN_ALLOWANCE", 1 << 20)


def test_npz_zip_bomb(tmp_path, small_allowance):
    p = tmp_path / "bomb.npz"
    n = 16 << 20
    hdr = io.BytesIO()
    np.lib.format.write_array_header_1_0(hdr, {"descr": "<f4", "fortran_order": False,
                                               "shape": (n // 4 // 9, 1, 3, 3)})
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        _zeros_member(z, "conv.weight.npy", n, hdr.getvalue())
    with pytest.raises(ReadError, match="zip bomb"):
        read_model(p)


def test_torch_zip_bomb(tmp_path, small_allowance):
    torch = pytest.importorskip("torch")
    p = tmp_path / "bomb.pt"
    torch.save({"conv.weight": torch.zeros(4, 1, 3, 3)}, p)
    with zipfile.ZipFile(p, "a", zipfile.ZIP_DEFLATED) as z:
        _zeros_member(z, "bomb/data/pad", 16 << 20)
    with pytest.raises(ReadError, match="zip bomb"):
        read_model(p)


def _patch_sizes(path, name, new_size):
    """Make a member declare ``new_size`` uncompressed bytes (local and central headers)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
        cd = z.start_dir
    struct.pack_into("<I", data, info.header_offset + 22, new_size)
    pos = cd
    while True:  # the central directory entry of this member
        nlen = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46:pos + 46 + nlen] == name.encode():
            struct.pack_into("<I", data, pos + 24, new_size)
            break
        pos = data.index(b"PK\x01\x02", pos + 4)
    path.write_bytes(bytes(data))


def test_lying_member_size_is_bounded(tmp_path):
    """A member declaring fewer bytes than it holds yields no more than it declares."""
    p = tmp_path / "liar.keras"
    buf = io.BytesIO()
    keras3_weights(buf, _plain(np.zeros(36, np.float32)))
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", json.dumps({"class_name": "Functional", "config": {}}))
        z.writestr("model.weights.h5", buf.getvalue() + b"\0" * (8 << 20))
    _patch_sizes(p, "model.weights.h5", 1000)
    with pytest.raises(ReadError) as e:
        read_model(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("member", ["../evil.npy", "/abs/evil.npy", "dup"])
def test_hostile_member_names(tmp_path, member):
    p = tmp_path / "m.npz"
    arr = io.BytesIO()
    np.save(arr, np.zeros((2, 1, 3, 3), np.float32))
    with zipfile.ZipFile(p, "w") as z:
        if member == "dup":
            z.writestr("a.npy", arr.getvalue())
            with pytest.warns(UserWarning, match="Duplicate name"):
                z.writestr("a.npy", arr.getvalue())
        else:
            z.writestr(member, arr.getvalue())
    with pytest.raises(ReadError, match="twice" if member == "dup" else "outside the archive"):
        read_model(p, format="npz")


def test_symlink_member_refused(tmp_path):
    p = tmp_path / "m.keras"
    keras3_archive(p, _plain(np.zeros(36, np.float32)))
    info = zipfile.ZipInfo("assets/link")
    info.create_system = 3
    info.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(p, "a") as z:
        z.writestr(info, "/etc/passwd")
    with pytest.raises(ReadError, match="symbolic link"):
        read_model(p)


def test_non_utf8_member_name(tmp_path, capsys):
    p = tmp_path / "m.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("abc\u00e9.npy", b"x")  # stored UTF-8 with the flag set
    data = p.read_bytes().replace("abc\u00e9".encode(), b"abc\xff\xfe")
    p.write_bytes(data)
    with pytest.raises(ReadError, match="not valid UTF-8"):
        read_model(p)
    assert main(["inspect", str(p)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(p) in err and "Traceback" not in err


# ---- torch: the pickle-protocol warning -------------------------------------------------------

def test_torch_protocol_warning_does_not_leak(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    import warnings

    p3 = tmp_path / "p3.pt"
    w = torch.arange(2 * 1 * 9, dtype=torch.float32).reshape(2, 1, 3, 3)
    torch.save({"conv.weight": w}, p3, pickle_protocol=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # what the CLI would print on stderr
        (l,) = read_model(p3).layers
        capsys.readouterr()
        assert main(["inspect", str(p3)]) == 0
    assert [str(c.message) for c in caught] == []
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(l.weight, w.numpy())
    # protocol 4 uses an instruction torch's safe loader lacks: a true reason, not "code"
    p4 = tmp_path / "p4.pt"
    torch.save({"conv.weight": w}, p4, pickle_protocol=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["inspect", str(p4)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and [str(c.message) for c in caught] == [], lines
    assert "pickle protocol 4" in lines[0] and "arbitrary code" not in lines[0]


# ---- ONNX external data -----------------------------------------------------------------------

def _onnx_model(path, location):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    t = TensorProto()
    t.name, t.data_type = "w", TensorProto.FLOAT
    t.dims.extend([4, 1, 3, 3])
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(NBYTES))):
        e = t.external_data.add()
        e.key, e.value = k, v
    node = helper.make_node("Conv", ["x", "w"], ["y"])
    g = helper.make_graph([node], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [t])
    onnx.save_model(helper.make_model(g), str(path))
    return path


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlinked file", "symlinked dir"])
def test_onnx_external_data_stays_in_the_directory(how, outside, capsys, tmp_path):
    md = outside["model_dir"]
    loc = {"absolute": str(outside["secret"]), "dotdot": "../outside/secret.bin",
           "symlinked file": "w.bin", "symlinked dir": "sub/secret.bin"}[how]
    if how == "symlinked file":
        os.symlink(outside["secret"], md / "w.bin")
    if how == "symlinked dir":
        os.symlink(outside["dir"], md / "sub")
    p = _onnx_model(md / "m.onnx", loc)
    assert_refused(capsys, outside, p, "refusing external data", db=tmp_path / "db")


def test_onnx_external_data_inside_is_read(outside, tmp_path):
    md = outside["model_dir"]
    (md / "data").mkdir()
    (md / "data" / "w.bin").write_bytes(outside["bytes"])
    (l,) = read_model(_onnx_model(md / "m.onnx", "data/w.bin")).layers
    np.testing.assert_array_equal(l.weight.ravel(), np.frombuffer(outside["bytes"], "<f4"))


# ---- safetensors offsets ----------------------------------------------------------------------

@pytest.mark.parametrize("offsets", [[-36, 108], [144, 0], [0, 1 << 40]])
def test_safetensors_offsets_outside_the_data(tmp_path, offsets):
    header = json.dumps({"c.weight": {"dtype": "F32", "shape": [4, 1, 3, 3],
                                      "data_offsets": offsets}}).encode()
    p = tmp_path / "m.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * NBYTES)
    with pytest.raises(ReadError) as e:
        read_model(p)
    assert str(p) in str(e.value)


# ---- TorchScript: code that runs at load ------------------------------------------------------

def test_torchscript_file_access_at_load_refused(outside, capsys, tmp_path):
    torch = pytest.importorskip("torch")

    class Conv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(4, 1, 3, 3))

        def forward(self, x):
            return torch.nn.functional.conv2d(x, self.weight)

        @torch.jit.export
        def __getstate__(self):
            return (self.weight, self.training, self.path)

        @torch.jit.export
        def __setstate__(self, state: tuple[torch.Tensor, bool, str]):
            self.path = state[2]
            self.weight = torch.from_file(self.path, False, 36,
                                          dtype=torch.float32).view(4, 1, 3, 3)
            self.training = state[1]

    conv = Conv()
    conv.path = str(outside["secret"])
    p = outside["model_dir"] / "evil.jit"
    torch.jit.script(torch.nn.Sequential(conv)).save(str(p))
    outside["watch"].events()  # scripting itself does not open the secret: drain anyway
    assert_refused(capsys, outside, p, "from_file", db=tmp_path / "db")


def test_torchscript_save_at_load_refused(tmp_path):
    torch = pytest.importorskip("torch")
    target = tmp_path / "overwritten"

    class Conv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(4, 1, 3, 3))

        def forward(self, x):
            return torch.nn.functional.conv2d(x, self.weight)

        @torch.jit.export
        def __getstate__(self):
            return (self.weight, self.training, self.path)

        @torch.jit.export
        def __setstate__(self, state: tuple[torch.Tensor, bool, str]):
            self.path = state[2]
            torch.save(state[0], self.path)
            self.weight = state[0]
            self.training = state[1]

    conv = Conv()
    conv.path = str(target)
    p = tmp_path / "evil.jit"
    try:
        torch.jit.script(torch.nn.Sequential(conv)).save(str(p))
    except Exception as e:  # a torch without a scriptable torch.save
        pytest.skip(f"torch.save is not scriptable here ({type(e).__name__}: {e})")
    with pytest.raises(ReadError, match="refusing TorchScript"):
        read_model(p)
    assert not target.exists()


def test_plain_torchscript_still_read(tmp_path):
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))
    p = tmp_path / "ok.jit"
    torch.jit.script(net).save(str(p))
    m = read_model(p)
    assert [l.shape for l in m.layers] == [(4, 2, 3, 3), (4, 4, 3, 3)]
    np.testing.assert_array_equal(m.layers[1].weight, net[2].weight.detach().numpy())


def test_import_h5_plain_pickled_objects_still_read(tmp_path):
    """pandas pickles mixed-type object columns (numpy object arrays): plain data, allowed."""
    df = pd.DataFrame({"model_id": [0, 0], "conv_depth": [0, 1], "conv_depth_norm": [0.0, 1.0],
                       "model": ["m0", "m0"], "filter_ids": ["0:1", "2:3"],
                       "mixed": [1, "a"]}).set_index(["model_id", "conv_depth",
                                                     "conv_depth_norm"])
    p = tmp_path / "dataset.h5"
    with h5py.File(p, "w") as f:
        f["filters"] = np.arange(36, dtype="<f4").reshape(4, 9)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas' PerformanceWarning about pickling
        df.to_hdf(p, key="meta", mode="a")
    from filterdb.store.published import read_meta_table

    got = read_meta_table(p)
    assert sorted(map(str, got["mixed"])) == ["1", "a"] and set(got["model"]) == {"m0"}
    assert main(["import-h5", str(tmp_path / "db"), str(p)]) == 0


def test_import_h5_meta_comes_from_the_checked_file(tmp_path):
    """The 'meta' table is read only from the file open_filters checked: a path swapped for
    another file in between is refused before PyTables reads anything from it."""
    from filterdb.store.published import _identity, open_filters, read_meta_table

    p = published(tmp_path / "dataset.h5")
    evil = tmp_path / "evil.h5"
    published(evil)
    with h5py.File(evil, "a") as f:
        f["meta"].attrs["encoding"] = np.bytes_(pickle.dumps(_Mkdir(str(tmp_path / "x")), 0))
    f, _ds = open_filters(p)
    try:
        ident = _identity(f)
        assert ident is not None
        assert read_meta_table(p, ident)["model"].tolist() == ["m0"]
        os.rename(p, tmp_path / "moved.h5")
        os.rename(evil, p)  # the path now names the hostile file
        with pytest.raises(ReadError, match="changed while it was being read"):
            read_meta_table(p, ident)
    finally:
        f.close()
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("code", [32001, 32004])
def test_import_h5_filters_plugin_refused(tmp_path, capsys, code):
    """blosc (32001) is PyTables' own filter, fine for the meta table, but h5py reading
    'filters' would search for a plugin library; an unknown filter anywhere is refused."""
    def write(f):
        f.create_dataset("filters", data=np.zeros((4, 9), "<f4"), chunks=(4, 9),
                         compression=code, allow_unknown_filter=True)

    p = tmp_path / "dataset.h5"
    try:
        published(p, write)
    except (ValueError, OSError) as e:
        pytest.skip(f"h5py cannot write an unknown filter here ({e})")
    assert main(["import-h5", str(tmp_path / "db"), str(p)]) == 2
    err = capsys.readouterr().err
    assert f"filter {code}" in err and str(p) in err and len(err.strip().splitlines()) == 1


def test_keras_h5_bomb_refused(tmp_path):
    """A tiny file declaring a huge dataset whose chunks were never written (read back as
    fill values) is refused before it is read."""
    p = tmp_path / "bomb.h5"
    keras2_h5(p, lambda g, n: g.create_dataset(n, shape=(3, 3, 4096, 8192), dtype="<f4",
                                                chunks=(3, 3, 64, 64)))
    assert p.stat().st_size < 1 << 20
    t0 = time.perf_counter()
    with pytest.raises(ReadError, match="1152.0 MiB from a"):
        read_model(p)
    assert time.perf_counter() - t0 < 1.0


# ---- TFLite external buffers ------------------------------------------------------------------

@pytest.mark.parametrize("offset", [1 << 40, (1 << 64) - 16])
def test_tflite_buffer_offset_stays_in_the_file(tmp_path, offset):
    """A buffer stored after the flatbuffer (Buffer.offset / size) must lie inside the file."""
    pytest.importorskip("tflite")
    from test_reader_tflite import T, build_tflite  # the by-hand TFLite writer

    data = np.arange(2 * 3 * 3 * 1, dtype=np.float32).reshape(2, 3, 3, 1)
    blob = build_tflite([T("x", [1, 8, 8, 1]), T("w", [2, 3, 3, 1], data=data),
                         T("y", [1, 6, 6, 2])], [("CONV_2D", [0, 1], [2])], [0], [2],
                        external=[1])
    real = len(blob) - data.nbytes  # the payload goes last
    assert blob[real:] == data.tobytes()
    packed = struct.pack("<Q", real)
    assert blob.count(packed) == 1  # the Buffer.offset field
    p = tmp_path / "m.tflite"
    p.write_bytes(blob)
    np.testing.assert_array_equal(read_model(p).layers[0].weight,
                                  np.transpose(data, (0, 3, 1, 2)))
    p.write_bytes(blob.replace(packed, struct.pack("<Q", offset)))
    with pytest.raises(ReadError, match="past the file end"):
        read_model(p)
