"""Safety checks for HDF5 files: nothing outside the given file is read, nothing runs.

HDF5 can make a reader open other files: a dataset's *external storage* (raw data kept in
named files, ``H5Pset_external``), a *virtual dataset* (VDS: data mapped from datasets of other
files), an *external link* (a link naming another file) and user-defined link types, and a
dataset *filter* the library does not know (HDF5 then searches its plugin directories and
loads a shared library). :func:`check_hdf5` walks every link and object of an open file through
the low-level API, without following anything but hard links, and refuses all of these before a
single dataset is read; soft links (paths inside the same file) are allowed. h5py's plugin
search path is emptied as well (filterdb needs no plugins). A user block
(bytes before the HDF5 superblock, where a file can hide a second format) is refused too: Keras,
h5py and pandas never write one. So are datasets whose logical size exceeds
:data:`MAX_RATIO` times the file (at least :data:`MIN_ALLOWANCE`): compressed or never-written
chunks that would expand in memory.

PyTables (pandas' HDFStore) unpickles string attributes that end in ``.`` and the rows of
``ObjectAtom`` arrays: :func:`restricted_pytables_pickle` swaps its ``pickle.loads`` for a
loader that builds plain data only (builtins containers and numbers, numpy arrays and scalars)
and records anything else, so the caller can refuse the file.
"""
from __future__ import annotations

import contextlib
import io
import pickle
import threading

from ..errors import ReadError

# HDF5's own filters: deflate, shuffle, fletcher32, szip, nbit, scaleoffset
BUILTIN_FILTERS = frozenset({1, 2, 3, 4, 5, 6})
# filters PyTables registers itself (no plugin search): lzo, bzip2, blosc, blosc2
PYTABLES_FILTERS = BUILTIN_FILTERS | {305, 307, 32001, 32026}
MAX_OBJECTS = 1_000_000
# the datasets' logical size against the file's (an HDF5 "bomb": compressed or never-written
# chunks read back as a huge array); the same bounds as for zip archives
MAX_RATIO = 200
MIN_ALLOWANCE = 256 << 20


def _text(b) -> str:
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)


def _no_plugin_search() -> None:
    """Empty h5py's plugin search path (defence in depth: HDF5 then loads no filter library
    from disk even for a filter the walk below missed). filterdb needs no plugins."""
    from h5py import h5pl  # lazy: start-up time (h5py / PyTables only for HDF5 files)

    try:
        while h5pl.size():
            h5pl.remove(0)
    except Exception:  # no plugin API here: the walk still refuses
        pass


def check_hdf5(f, path, what: str = "HDF5 file", filters=BUILTIN_FILTERS) -> None:
    """Refuse an open ``h5py.File`` whose content would read outside it (see the module doc).

    ``path`` names the file in the :class:`ReadError`; ``what`` says which file it is (e.g.
    "model.weights.h5 in the .keras archive"). Call it right after opening, before any access
    by path (``f[...]``, ``in``, ``visititems``), which would traverse external links.
    """
    from h5py import h5d, h5g, h5l, h5o  # lazy: start-up time (h5py / PyTables only for HDF5 files)

    def refuse(reason: str):
        raise ReadError(path, f"refusing {what}: {reason}; filterdb reads nothing outside "
                              "the given file")

    _no_plugin_search()
    ub = f.userblock_size
    if ub:
        refuse(f"it has a user block of {ub} bytes before the HDF5 superblock")
    seen: set[int] = set()
    stack = [("/", h5g.open(f.id, b"/"))]
    count = 0
    logical = 0
    size = int(f.id.get_filesize())
    limit = max(MIN_ALLOWANCE, MAX_RATIO * size)
    while stack:
        gpath, gid = stack.pop()
        names: list[bytes] = []
        gid.links.iterate(names.append)
        for n in names:
            count += 1
            if count > MAX_OBJECTS:
                refuse(f"more than {MAX_OBJECTS} links")
            full = (gpath.rstrip("/") + "/" + _text(n))
            info = gid.links.get_info(n)
            if info.type == h5l.TYPE_SOFT:
                continue  # a path inside this file; its target is walked as a hard link
            if info.type == h5l.TYPE_EXTERNAL:
                fname, target = gid.links.get_val(n)
                refuse(f"{full!r} is an external link to {_text(target)!r} in "
                       f"{_text(fname)!r}")
            if info.type != h5l.TYPE_HARD:
                refuse(f"{full!r} is a user-defined link (type {info.type})")
            oid = h5o.open(gid, n)
            addr = h5o.get_info(oid).addr
            if addr in seen:
                continue
            seen.add(addr)
            if isinstance(oid, h5g.GroupID):
                stack.append((full, oid))
            elif isinstance(oid, h5d.DatasetID):
                plist = oid.get_create_plist()
                if plist.get_layout() == h5d.VIRTUAL:
                    refuse(f"dataset {full!r} is a virtual dataset (its data lives in other "
                           "files)")
                if plist.get_external_count():
                    ext = _text(plist.get_external(0)[0])
                    refuse(f"dataset {full!r} keeps its data in the external file {ext!r}")
                for i in range(plist.get_nfilters()):
                    code = plist.get_filter(i)[0]
                    if code not in filters:
                        refuse(f"dataset {full!r} uses HDF5 filter {code}, which would be "
                               "loaded as a plugin library")
                elements = 1
                for d in oid.shape:
                    elements *= int(d)
                logical += elements * oid.dtype.itemsize
                if logical > limit:
                    raise ReadError(path, f"refusing {what}: its datasets hold "
                                          f"{logical / (1 << 20):.1f} MiB from a "
                                          f"{size / (1 << 20):.1f} MiB file (limit "
                                          f"{limit / (1 << 20):.1f} MiB; compressed or unwritten "
                                          "data that would expand in memory)")


def open_checked(source, path, what: str = "HDF5 file", filters=BUILTIN_FILTERS):
    """``h5py.File(source, "r")`` after :func:`check_hdf5` (closed again if it is refused).

    ``source`` is a path or a file-like object. An unreadable file is a ReadError."""
    import h5py  # lazy: start-up time (h5py / PyTables only for HDF5 files)

    try:
        f = h5py.File(source, "r")
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ReadError(path, f"corrupt or truncated {what} ({first})") from None
    try:
        check_hdf5(f, path, what, filters)
    except ReadError:
        f.close()
        raise
    except Exception as e:  # a corrupt object header met during the walk
        f.close()
        raise ReadError(path, f"corrupt {what} ({type(e).__name__}: {e})") from None
    return f


# ---- PyTables unpickling ---------------------------------------------------------------------

_SAFE_GLOBALS = {
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"),
    ("builtins", "slice"), ("builtins", "bytearray"), ("_codecs", "encode"),
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
}


class _Refused(pickle.UnpicklingError):
    pass


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid):
        raise _Refused("a persistent id")


class _PickleShim:
    """Stands in for the ``pickle`` module inside PyTables while a file is read."""

    def __init__(self, refused: list[str]):
        self.refused = refused

    def loads(self, data, **kw):
        try:
            return _DataUnpickler(io.BytesIO(bytes(data)), **kw).load()
        except _Refused as e:
            self.refused.append(str(e))
            raise

    def __getattr__(self, name):  # dumps, HIGHEST_PROTOCOL, UnpicklingError, ...
        return getattr(pickle, name)


_lock = threading.RLock()


@contextlib.contextmanager
def restricted_pytables_pickle(path):
    """While active, PyTables unpickles plain data only; on exit a :class:`ReadError` names
    what the file asked to import (PyTables itself swallows unpickling errors)."""
    import tables.atom  # lazy: start-up time (h5py / PyTables only for HDF5 files)
    import tables.attributeset  # lazy: start-up time (h5py / PyTables only for HDF5 files)

    refused: list[str] = []
    shim = _PickleShim(refused)
    mods = (tables.atom, tables.attributeset)
    with _lock:
        saved = [m.pickle for m in mods]
        for m in mods:
            m.pickle = shim
        try:
            yield
        except Exception:
            if refused:
                raise _refusal(path, refused) from None
            raise
        finally:
            for m, s in zip(mods, saved):
                m.pickle = s
    if refused:
        raise _refusal(path, refused)


def _refusal(path, refused: list[str]) -> ReadError:
    return ReadError(path, f"refusing to unpickle a PyTables attribute or object array that "
                           f"references {refused[0]}; filterdb never runs code from files")
