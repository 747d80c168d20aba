"""The metadata vocabulary: column names and canonical values (docs/method.md, sec. 6).

Column names are snake_case. A given name is normalised (lower case, runs of other
characters become ``_``) and then looked up in the aliases, so the published names
(``Visual Category``, ``Training-Dataset``, ``3x3_filter_share``, older ``Datatype``, ...)
map to their columns.

The rule for names outside the vocabulary: a name starting with ``x_`` is a free column,
stored in the model's ``extra`` JSON under the name without the prefix, typed: a value given
as text (``--meta x_seed=3``, a manifest cell) that reads as an integer, a number or
``true``/``false`` is stored as such, anything else (or a value in quotes) as a string. Query
it as the column ``x_name`` (``x_seed = 3``, ``x_width > 100``) or with
``json_extract(extra, '$.name')``. Any other unknown name is refused with the list of known
columns.

Values: ``task`` and ``visual_category`` take the published spelling when they match a
published value ignoring case and punctuation; any task containing "segmentation" is
"Segmentation"; the older visual category "formula" is "fractals"; other values are kept
(tasks as given, visual categories in lower case). Data-set lists are comma-separated.
"""
from __future__ import annotations

import json
import math
import re

import numpy as np

from ..errors import FilterDBError

TASKS = ("Classification", "Segmentation", "GAN-Generator", "Object Detection",
         "GAN-Discriminator", "Style Transfer", "Super Resolution", "Face Detection",
         "Depth Estimation", "Face Recognition", "Auto-Encoder")
VISUAL_CATEGORIES = ("natural", "handwriting", "faces", "medical xray", "art", "medical ct",
                     "seismic", "medical mri", "depth", "map", "astronomy", "fractals",
                     "textures", "thermal", "cars", "plants")

# Columns a user may set (``--meta``, manifests, ZooModel.metadata()).
TEXT_COLUMNS = ("model", "name", "task", "visual_category", "training_dataset",
                "pretraining_dataset", "architecture", "paper", "url", "dataset_url",
                "accessible", "source")
# Columns computed from the model file; a given value overrides the computed one (imports
# of the published data set, where the original file is not available).
DERIVED_COLUMNS = ("producer", "producer_version", "op_set", "depth", "total_filters",
                   "filter_share_3x3", "kernel_counts", "op_counts")
COLUMNS = TEXT_COLUMNS + DERIVED_COLUMNS
INT_COLUMNS = {"op_set", "depth", "total_filters"}
FLOAT_COLUMNS = {"filter_share_3x3"}
DICT_COLUMNS = {"kernel_counts", "op_counts"}

ALIASES = {
    "datatype": "visual_category",
    "3x3_filter_share": "filter_share_3x3",
    "x3_filter_share": "filter_share_3x3",
    "share_3x3": "filter_share_3x3",
    "opset": "op_set",
    "pretrain_dataset": "pretraining_dataset",
    "train_dataset": "training_dataset",
    "paper_url": "paper",
    "model_name": "name",
}
EXTRA_PREFIX = "x_"


def _squash(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", s.lower())


_TASK_KEYS = {_squash(t): t for t in TASKS}
_VC_KEYS = {_squash(v): v for v in VISUAL_CATEGORIES}
_VC_KEYS["formula"] = "fractals"


def column_name(key: str) -> str:
    """The canonical column of a metadata key, or ``x_...`` for a free column.

    Raises FilterDBError for unknown keys."""
    k = str(key).strip()
    if k.startswith(EXTRA_PREFIX) and len(k) > len(EXTRA_PREFIX):
        return k
    norm = re.sub(r"[^a-z0-9]+", "_", k.lower()).strip("_")
    norm = ALIASES.get(norm, norm)
    if norm in COLUMNS:
        return norm
    raise FilterDBError(
        f"unknown metadata column {key!r}; known columns: {', '.join(COLUMNS)} "
        f"(prefix free columns with '{EXTRA_PREFIX}', e.g. {EXTRA_PREFIX}license=MIT)")


def normalize_task(v: str) -> str:
    s = " ".join(str(v).split())
    if "segmentation" in s.lower():
        return "Segmentation"
    return _TASK_KEYS.get(_squash(s), s)


def normalize_visual_category(v: str) -> str:
    s = " ".join(str(v).split())
    return _VC_KEYS.get(_squash(s), s.lower())


def normalize_list(v: str) -> str:
    parts = [" ".join(p.split()) for p in str(v).split(",")]
    return ", ".join(p for p in parts if p)


def _is_missing(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and not v.strip()


def normalize_value(column: str, value):
    """The canonical form of one value (None for a missing one)."""
    if _is_missing(value):
        return None
    try:
        if column in INT_COLUMNS:
            return int(float(value))
        if column in FLOAT_COLUMNS:
            return float(value)
        if column in DICT_COLUMNS:
            d = json.loads(value) if isinstance(value, str) else dict(value)
            return {str(k): int(v) for k, v in d.items()}
    except (TypeError, ValueError) as e:
        raise FilterDBError(f"metadata column {column!r}: bad value {value!r} ({e})") from None
    if column == "task":
        return normalize_task(value)
    if column == "visual_category":
        return normalize_visual_category(value)
    if column in ("training_dataset", "pretraining_dataset"):
        return normalize_list(value) or None
    if column.startswith(EXTRA_PREFIX):
        if isinstance(value, (bool, int, float, np.generic)):
            return value.item() if isinstance(value, np.generic) else value
        return str(value).strip()
    return str(value).strip()


_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def parse_value(text: str):
    """A free column's value given as text, typed: ``"3"`` -> 3, ``"1.5"`` -> 1.5,
    ``"true"`` -> True, ``'"3"'`` -> ``"3"`` (quotes keep a string), else the stripped text.

    >>> [parse_value(v) for v in ("3", "-2.5e3", "False", "'07'", "resnet")]
    [3, -2500.0, False, '07', 'resnet']
    """
    if not isinstance(text, str):
        return text
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    if _INT.match(t):
        return int(t)
    if _FLOAT.match(t):
        return float(t)
    return t


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def similar_label(value: str, known) -> str | None:
    """A known label that ``value`` is probably a typo of (same letters ignoring case and
    punctuation, or within an edit distance of 1 per 4 letters, at most 3), else None.
    ``value`` itself being known gives None.

    >>> similar_label("Classifcation", ["Classification", "Segmentation"])
    'Classification'
    """
    known = [k for k in dict.fromkeys(known) if isinstance(k, str) and k]
    if value in known:
        return None
    v = _squash(value)
    best, best_d = None, None
    for k in known:
        kk = _squash(k)
        d = 0 if kk == v else _edit_distance(v, kk)
        if d <= min(3, max(1, len(kk) // 4)) and (best_d is None or d < best_d):
            best, best_d = k, d
    return best


def label_warnings(meta: dict, known: dict) -> list[str]:
    """Warnings for new values of the controlled columns close to a known one; ``known``
    maps a column to the values already in use (the vocabulary is added here)."""
    out = []
    vocab = {"task": TASKS, "visual_category": VISUAL_CATEGORIES}
    for col, base in vocab.items():
        v = meta.get(col)
        if v is None:
            continue
        have = list(base) + [k for k in known.get(col, ()) if k]
        if v in have:
            continue
        near = similar_label(v, have)
        if near is not None:
            out.append(f"{col} {v!r} is new, but close to the known {near!r}")
    return out


def normalize_meta(meta: dict | None) -> dict:
    """Canonical column names and values; raises FilterDBError on an unknown column or a
    column given twice under different spellings."""
    out: dict = {}
    seen: dict = {}
    for key, value in (meta or {}).items():
        col = column_name(key)
        if col in seen and seen[col] != key:
            raise FilterDBError(f"metadata column {col!r} given twice ({seen[col]!r} and {key!r})")
        seen[col] = key
        v = normalize_value(col, value)
        if v is not None:
            out[col] = v
    return out


def parse_meta_args(items) -> dict:
    """``["task=Classification", ...]`` (the CLI's ``--meta``) -> a dict (names not checked)."""
    out = {}
    for item in items or ():
        if "=" not in item:
            raise FilterDBError(f"--meta {item!r}: expected key=value")
        k, v = item.split("=", 1)
        if not k.strip():
            raise FilterDBError(f"--meta {item!r}: empty key")
        k = k.strip()
        out[k] = parse_value(v) if k.startswith(EXTRA_PREFIX) else v
    return out
