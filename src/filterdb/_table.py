"""Plain-text tables for people (the CLI's default output)."""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def fmt_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3g}"
        return f"{v:.4f}".rstrip("0").rstrip(".") if v != int(v) or abs(v) < 1e6 else f"{v:.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, (tuple, list)):
        return "x".join(str(x) for x in v) if all(isinstance(x, int) for x in v) else str(v)
    return str(v)


def shorten(text: str, width: int = 60) -> str:
    """``text`` cut in the middle to at most ``width`` characters (long fused TFLite layer
    names keep their start and their end, the op itself)."""
    text = str(text)
    if len(text) <= width:
        return text
    head = (width - 3) // 3
    return text[:head] + "..." + text[len(text) - (width - 3 - head):]


def format_table(rows: Iterable[Sequence], headers: Sequence[str]) -> str:
    """Left-aligned text columns, numbers right-aligned."""
    rows = [list(r) for r in rows]
    cells = [[fmt_value(v) for v in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in cells:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    numeric = [
        all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in rows if r[i] is not None)
        and any(r[i] is not None for r in rows)
        for i in range(len(headers))
    ]

    def line(vals):
        return "  ".join(
            (v.rjust(w) if num else v.ljust(w)) for v, w, num in zip(vals, widths, numeric)
        ).rstrip()

    out = [line(list(headers)), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)
