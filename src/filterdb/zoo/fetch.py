"""Fetch zoo wheels with pip, verify their sha256, extract only the model files."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Iterable

from ..errors import FilterDBError
from .catalog import CATALOG, Wheel, ZooModel


def default_cache() -> Path:
    """``$FILTERDB_CACHE``, else ``$XDG_CACHE_HOME/filterdb``, else ``~/.cache/filterdb``."""
    if os.environ.get("FILTERDB_CACHE"):
        return Path(os.environ["FILTERDB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "filterdb"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def model_path(model: ZooModel, cache: Path | None = None) -> Path:
    """Where ``model``'s file lives in the cache once fetched."""
    cache = Path(cache) if cache else default_cache()
    return cache / "models" / f"{model.wheel.package}-{model.wheel.version}" / model.member


def _have(path: Path, sha256: str) -> bool:
    return path.is_file() and _sha256(path) == sha256


def _download_wheel(wheel: Wheel, cache: Path, log: Callable[[str], None]) -> Path:
    dest = cache / "wheels" / wheel.filename
    if _have(dest, wheel.sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    log(f"downloading {wheel.requirement} ...")
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", "-d", tmp, *wheel.pip_args, wheel.requirement]
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        got = Path(tmp) / wheel.filename
        if r.returncode != 0 or not got.is_file():
            last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no wheel file"]
            raise FilterDBError(f"pip download {wheel.requirement} failed: {last[0]}")
        digest = _sha256(got)
        if digest != wheel.sha256:
            raise FilterDBError(
                f"{wheel.filename}: sha256 {digest} does not match the pinned {wheel.sha256}")
        os.replace(got, dest)
    return dest


def _extract(wheel_file: Path, model: ZooModel, cache: Path) -> Path:
    out = model_path(model, cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with zipfile.ZipFile(wheel_file) as z, z.open(model.member) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    if _sha256(tmp) != model.sha256:
        tmp.unlink()
        raise FilterDBError(f"{model.member} in {wheel_file.name}: sha256 does not match the catalog")
    os.replace(tmp, out)
    return out


def fetch(models: Iterable[ZooModel] | None = None, cache: Path | str | None = None,
          log: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Make every model file available in the cache; return ``{model id: path}``.

    Files already present with the right hash are reused: a second fetch downloads nothing.
    """
    cache = Path(cache) if cache else default_cache()
    log = log or (lambda msg: None)
    models = list(CATALOG if models is None else models)
    paths: dict[str, Path] = {}
    missing: dict[Wheel, list[ZooModel]] = {}
    for m in models:
        p = model_path(m, cache)
        if _have(p, m.sha256):
            paths[m.id] = p
        else:
            missing.setdefault(m.wheel, []).append(m)
    for wheel, todo in missing.items():
        wf = _download_wheel(wheel, cache, log)
        for m in todo:
            paths[m.id] = _extract(wf, m, cache)
    return {m.id: paths[m.id] for m in models}
