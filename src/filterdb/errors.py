"""Errors a user sees as one line: the file (if any) and the reason."""
from __future__ import annotations

import os


class FilterDBError(Exception):
    """An error for the user: printed as one line by the CLI, exit code 2."""


class DiskFullError(FilterDBError):
    """The database's file system is full: nothing committed is lost, the write is undone."""

    def __init__(self, path, what: str = ""):
        self.path = os.fspath(path)
        what = f" ({what})" if what else ""
        super().__init__(f"{self.path}: no space left on device{what}")


def is_disk_full(e: BaseException) -> bool:
    import errno

    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", 122))


class ReadError(FilterDBError):
    """A model file could not be read: names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class MissingExtraError(FilterDBError):
    """An optional dependency is needed: names the extra to install."""

    def __init__(self, module: str, extra: str, what: str = ""):
        what = f" to {what}" if what else ""
        super().__init__(
            f"the optional dependency '{module}' is needed{what}: "
            f"pip install 'filterdb[{extra}]'"
        )
