"""The metadata vocabulary: column names and canonical values (shared/spec/method.md, sec. 6).

Column names are snake_case. A given name is normalised (lower case, runs of other
characters become ``_``) and then looked up in the aliases, so the published names
(``Visual Category``, ``Training-Dataset``, ``3x3_filter_share``, older ``Datatype``, ...)
map to their columns.

The rule for names outside the vocabulary: a name starting with ``x_`` is a free column,
stored in the model's ``extra`` JSON under the name without the prefix (query it with
``json_extract(extra, '$.name')``); any other unknown name is refused with the list of
known columns.

Values: ``task`` and ``visual_category`` take the published spelling when they match a
published value ignoring case and punctuation; any task containing "segmentation" is
"Segmentation"; the older visual category "formula" is "fractals"; other values are kept
(tasks as given, visual categories in lower case). Data-set lists are comma-separated.
"""
from __future__ import annotations

import json
import math
import re

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
        return value if isinstance(value, (int, float, bool)) else str(value).strip()
    return str(value).strip()


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
        out[k.strip()] = v
    return out
