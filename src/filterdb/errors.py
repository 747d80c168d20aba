"""Errors a user sees as one line: the file (if any) and the reason."""
from __future__ import annotations

import os


class FilterDBError(Exception):
    """An error for the user: printed as one line by the CLI, exit code 2."""


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
