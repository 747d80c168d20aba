"""A file cache of the simulated ``H`` distributions of random layers
(:mod:`filterdb.kernels.randomness`), so each ``(n, kernel)`` is simulated once per machine.

Where: ``$FILTERDB_CACHE/random-entropy``, else ``$XDG_CACHE_HOME/filterdb/random-entropy``,
else ``~/.cache/filterdb/random-entropy``; ``FILTERDB_NO_RANDOM_CACHE=1`` turns it off. One
``.npy`` file per simulation (a few KB), written to a temporary name and renamed (atomic);
anything unreadable or malformed is simulated again. Errors (read-only disk) are ignored:
the cache only saves time.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..kernels import randomness


def cache_dir() -> Path:
    base = os.environ.get("FILTERDB_CACHE")
    if base:
        return Path(base) / "random-entropy"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "filterdb" / "random-entropy"


class FileStore:
    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self, key: str):
        try:
            a = np.load(self.path / f"{key}.npy", allow_pickle=False)
        except (OSError, ValueError):
            return None
        return a if a.dtype == np.float64 and a.ndim == 1 else None

    def save(self, key: str, draws) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{key}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    np.save(f, np.asarray(draws, np.float64), allow_pickle=False)
                os.replace(tmp, self.path / f"{key}.npy")
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except OSError:
            pass


def install() -> None:
    """Make the file store the kernels' store (unless turned off by the environment)."""
    if os.environ.get("FILTERDB_NO_RANDOM_CACHE", "") not in ("", "0"):
        randomness.STORE = None
    else:
        randomness.STORE = FileStore(cache_dir())


__all__ = ["FileStore", "cache_dir", "install"]
