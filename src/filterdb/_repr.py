"""Short reprs: shapes and sizes, never raw arrays (a model's repr must fit on a line)."""
from __future__ import annotations

import dataclasses


def brief(v, width: int = 60) -> str:
    """A short text for one value: arrays and tables as their type and shape."""
    shape = getattr(v, "shape", None)
    if shape is not None and not isinstance(v, (str, bytes)) and hasattr(v, "dtype"):
        dims = "x".join(str(int(s)) for s in shape) or "scalar"
        return f"{type(v).__name__}({dims} {v.dtype})"
    if shape is not None and hasattr(v, "columns"):  # DataFrame
        return f"DataFrame({shape[0]}x{shape[1]})"
    if shape is not None and hasattr(v, "index"):  # Series
        return f"Series({shape[0]})"
    if isinstance(v, (list, tuple)) and len(v) > 4:
        return f"[{len(v)} items]"
    if isinstance(v, dict) and len(v) > 4:
        return f"{{{len(v)} entries}}"
    text = repr(v)
    return text if len(text) <= width else text[: width - 3] + "..."


def dataclass_repr(self) -> str:
    """``Name(field=brief value, ...)`` over a dataclass's fields (``__repr__ = dataclass_repr``)."""
    parts = [f"{f.name}={brief(getattr(self, f.name))}" for f in dataclasses.fields(self)
             if f.repr]
    return f"{type(self).__name__}({', '.join(parts)})"
