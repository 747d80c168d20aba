"""Helpers shared by the CLI modules. JSON output and progress bars live in
:mod:`filterdb.utils` (layer 1, usable below the CLI); they are re-exported here."""
from __future__ import annotations

from ..utils import json_clean as _clean
from ..utils import json_default as _default
from ..utils import print_json, progress

__all__ = ["_clean", "_default", "print_json", "progress"]
