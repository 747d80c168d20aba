"""Safety checks for the zip archives readers open (``.keras``, PyTorch, TorchScript, ``.npz``).

:func:`check_zip` reads only the central directory and refuses, before anything is
decompressed: member names that are not valid UTF-8 (when flagged as UTF-8), absolute or with
``..`` parts, duplicate names (two readers could take different members), symbolic-link
entries, encrypted members, and archives whose declared uncompressed size is more than
:data:`MAX_RATIO` times the file (at least :data:`MIN_ALLOWANCE`) or over :data:`MAX_TOTAL`: a
zip bomb. Declared sizes can lie, so :func:`read_member` also bounds what it actually
decompresses by the declared size. Nothing is ever extracted to disk.
"""
from __future__ import annotations

import os
import stat
import zipfile

from ..errors import ReadError

MAX_RATIO = 200  # uncompressed / archive size; weights compress far less (zeros ~ 1000x)
MIN_ALLOWANCE = 256 << 20  # small archives may hold up to this much regardless of the ratio
MAX_TOTAL = 64 << 30


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def open_zip(path, what: str = "zip archive", source=None) -> zipfile.ZipFile:
    """The archive opened and checked by :func:`check_zip` (a ReadError when refused);
    ``source``: a seekable file object read instead of ``path`` (which then only names it)."""
    p = os.fspath(path)
    size = None
    if source is not None:
        size = source.seek(0, os.SEEK_END)
        source.seek(0)
    try:
        z = zipfile.ZipFile(p if source is None else source)
    except UnicodeDecodeError:
        raise ReadError(p, f"corrupt {what}: a member name is flagged UTF-8 but is not valid "
                           "UTF-8") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise ReadError(p, f"corrupt or truncated {what} ({type(e).__name__}: {e})") from None
    try:
        check_zip(z, p, what, size)
    except BaseException:
        z.close()
        raise
    return z


def check_zip(z: zipfile.ZipFile, path, what: str = "zip archive",
              size: int | None = None) -> None:
    """Refuse a hostile archive from its central directory alone (see the module doc);
    ``size``: the archive's bytes (default: the file's size)."""
    p = os.fspath(path)
    size = os.path.getsize(p) if size is None else size
    seen: set[str] = set()
    total = 0
    for info in z.infolist():
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
            raise ReadError(p, f"refusing {what}: member name {name!r} points outside the "
                               "archive")
        if name in seen:
            raise ReadError(p, f"refusing {what}: member {name!r} appears twice")
        seen.add(name)
        if info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16):
            raise ReadError(p, f"refusing {what}: member {name!r} is a symbolic link")
        if info.flag_bits & 0x1:
            raise ReadError(p, f"refusing {what}: member {name!r} is encrypted")
        if info.file_size < 0 or info.compress_size < 0:
            raise ReadError(p, f"corrupt {what}: member {name!r} has a negative size")
        total += info.file_size
    limit = min(MAX_TOTAL, max(MIN_ALLOWANCE, MAX_RATIO * size))
    if total > limit:
        raise ReadError(p, f"refusing {what}: its members declare {_mib(total)} uncompressed "
                           f"from a {_mib(size)} file (limit {_mib(limit)}); a zip bomb")


def read_member(z: zipfile.ZipFile, name: str, path, what: str = "zip archive") -> bytes:
    """One member's bytes, never more than its declared size (checked by :func:`check_zip`);
    a member that decompresses to more or less than it declares is corrupt."""
    info = z.getinfo(name)
    want = info.file_size
    chunks, got = [], 0
    with z.open(info) as f:
        while got <= want:
            b = f.read(min(1 << 20, want + 1 - got))
            if not b:
                break
            chunks.append(b)
            got += len(b)
    if got != want:
        raise ReadError(path, f"corrupt {what}: member {name!r} holds "
                              f"{'more' if got > want else 'less'} data than it declares")
    return b"".join(chunks)


def check_zip_file(path, what: str = "zip archive") -> None:
    """:func:`open_zip` for a reader that opens the archive itself (torch, numpy)."""
    open_zip(path, what).close()
