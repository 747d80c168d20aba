"""Assemble one self-contained HTML report: embedded figures, sortable tables, no external
resources (no CDN, no web fonts, no links to files).

>>> rep = Report("My database")
>>> sec = rep.section("drift", "Drift", intro="How filters shift between groups.")
>>> sec.add_figure(fig, "drift-task", caption="Drift between tasks")   # doctest: +SKIP
>>> sec.add_table(df, "layers", highlight=df["degenerated"])           # doctest: +SKIP
>>> rep.write("report.html")                                           # doctest: +SKIP
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import numbers
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .template import CSS, JS

_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
FIGURE_DPI = 150  # PNG resolution; shown at 100 px per inch so all figures share a text size
CSS_DPI = 100


def _check_id(kind: str, value: str, seen: set) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise ValueError(f"{kind} id must start with a letter and hold only letters, digits, "
                         f"'-' and '_': {value!r}")
    if value in seen:
        raise ValueError(f"duplicate {kind} id: {value!r}")
    seen.add(value)
    return value


def esc(text) -> str:
    """HTML-escape text (quotes too, so the result is safe in attributes)."""
    return html.escape(str(text), quote=True)


_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![*\w])\*([^*\s][^*]*)\*(?!\w)"), r"<em>\1</em>"),
    (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), r'<a href="\2">\1</a>'),
]


def _inline(text: str) -> str:
    out = esc(text)
    for pat, rep in _INLINE:
        out = pat.sub(rep, out)
    return out


def markdown(text: str) -> str:
    """A tiny Markdown subset: paragraphs, ``- `` lists, `code`, **bold**, *em*, [a](href).

    Text starting with ``<`` is taken as HTML as it is.
    """
    if text.lstrip().startswith("<"):
        return text
    blocks = re.split(r"\n\s*\n", text.strip())
    out = []
    for b in blocks:
        lines = [l.strip() for l in b.splitlines() if l.strip()]
        if lines and all(l.startswith(("- ", "* ")) for l in lines):
            items = "".join(f"<li>{_inline(l[2:])}</li>" for l in lines)
            out.append(f"<ul>{items}</ul>")
        elif lines:
            out.append(f"<p>{_inline(' '.join(lines))}</p>")
    return "\n".join(out)


def figure_png(fig, dpi: int = FIGURE_DPI) -> bytes:
    """PNG bytes of a matplotlib Figure (package style, tight bounding box, no metadata)."""
    import matplotlib as mpl

    from ..plots._style import STYLE

    buf = io.BytesIO()
    with mpl.rc_context(STYLE):
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def figure_svg(fig) -> bytes:
    import matplotlib as mpl

    from ..plots._style import STYLE

    buf = io.BytesIO()
    with mpl.rc_context(STYLE):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def _png_size(data: bytes) -> tuple[int, int]:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG image")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _is_nan(v) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v))


def cell_value(v) -> str:
    """The raw value of a cell as text (the ``data-value`` used for sorting): full-precision
    numbers, ``true``/``false``, ``""`` for missing."""
    if _is_nan(v):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        f = float(v)
        return repr(f) if math.isfinite(f) else ("Infinity" if f > 0 else "-Infinity")
    return str(v)


def cell_text(v, float_format: str = "{:.4g}") -> str:
    """How a cell is shown: floats via ``float_format``, integers with thousands separators,
    ``yes``/``no`` for booleans, an en dash for missing values."""
    if _is_nan(v):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, numbers.Integral):
        return f"{int(v):,}"
    if isinstance(v, numbers.Real):
        return float_format.format(float(v))
    return str(v)


class Section:
    """One section of a :class:`Report`; add blocks in the order they should appear."""

    def __init__(self, report: "Report", id: str, title: str, intro: str | None = None):
        self.report = report
        self.id = id
        self.title = title
        self.blocks: list[str] = []
        if intro:
            self.blocks.append(f'<div class="intro">{markdown(intro)}</div>')

    def add_heading(self, text: str) -> "Section":
        self.blocks.append(f"<h3>{esc(text)}</h3>")
        return self

    def add_text(self, text: str) -> "Section":
        """Markdown-lite text (see :func:`markdown`) or raw HTML (starting with ``<``)."""
        self.blocks.append(markdown(text))
        return self

    def add_figure(self, fig, id: str, caption: str | None = None, format: str = "png",
                   dpi: int = FIGURE_DPI, alt: str | None = None) -> "Section":
        """Embed a matplotlib Figure (or PNG bytes) as ``<img data-figure="id">``.

        ``format="svg"`` embeds it as an SVG data URI instead of a PNG.
        """
        _check_id("figure", id, self.report._figure_ids)
        if format == "svg":
            data, mime, size = figure_svg(fig), "image/svg+xml", ""
        elif format == "png":
            data = fig if isinstance(fig, (bytes, bytearray)) else figure_png(fig, dpi)
            w, h = _png_size(bytes(data))
            k = CSS_DPI / dpi
            size = f' width="{round(w * k)}" height="{round(h * k)}"'
            mime = "image/png"
        else:
            raise ValueError(f"figure format must be 'png' or 'svg', got {format!r}")
        uri = f"data:{mime};base64,{base64.b64encode(bytes(data)).decode('ascii')}"
        alt = alt if alt is not None else (caption or id)
        cap = f"<figcaption>{_inline(caption)}</figcaption>" if caption else ""
        self.blocks.append(
            f'<figure id="fig-{id}"><img data-figure="{esc(id)}" src="{uri}" '
            f'alt="{esc(alt)}"{size}>{cap}</figure>')
        return self

    def add_table(self, df: pd.DataFrame, id: str, highlight=None, sortable: bool = True,
                  caption: str | None = None, float_format: str = "{:.4g}",
                  index: bool = False, highlight_class: str = "degenerated",
                  max_rows: int | None = None) -> "Section":
        """A table of ``df``'s rows. ``highlight``: a boolean mask (array-like of ``len(df)``)
        or a column name; those rows get the class ``highlight_class``.

        Each cell carries its raw value in ``data-value`` (the sort key) and shows it
        formatted (see :func:`cell_text`). ``max_rows`` keeps the first rows only.
        """
        _check_id("table", id, self.report._table_ids)
        if index:
            df = df.reset_index()
        if highlight is None:
            mask = np.zeros(len(df), dtype=bool)
        elif isinstance(highlight, str):
            mask = df[highlight].fillna(False).to_numpy(dtype=bool)
        else:
            mask = np.asarray(highlight, dtype=bool).ravel()
            if mask.size != len(df):
                raise ValueError(f"highlight mask has {mask.size} values for {len(df)} rows")
        n_all = len(df)
        if max_rows is not None and n_all > max_rows:
            df, mask = df.iloc[:max_rows], mask[:max_rows]
        num = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
               for c in df.columns]
        numcls = ' class="num"'
        head = "".join(f'<th scope="col" data-col="{esc(c)}"{numcls if n else ""}>'
                       f"{esc(c)}</th>" for c, n in zip(df.columns, num))
        rows = []
        for r, values in enumerate(df.itertuples(index=False, name=None)):
            cls = f' class="{esc(highlight_class)}"' if mask[r] else ""
            cells = "".join(
                f'<td data-value="{esc(cell_value(v))}"{numcls if n else ""}>'
                f"{esc(cell_text(v, float_format))}</td>" for v, n in zip(values, num))
            rows.append(f"<tr{cls}>{cells}</tr>")
        klass = "data sortable" if sortable else "data"
        note = caption or ""
        if len(df) < n_all:
            note = (note + " " if note else "") + f"(first {len(df):,} of {n_all:,} rows)"
        cap = f'<p class="table-caption">{_inline(note)}</p>' if note else ""
        self.blocks.append(
            f'<div class="table-wrap"><table id="tbl-{id}" data-table="{esc(id)}" '
            f'class="{klass}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
            f"</tbody></table></div>{cap}")
        return self

    def add_kv(self, items: dict, float_format: str = "{:.4g}") -> "Section":
        """A two-column table of ``key: value`` facts."""
        rows = "".join(f"<tr><th scope=\"row\">{esc(k)}</th><td>{esc(cell_text(v, float_format))}"
                       f"</td></tr>" for k, v in items.items())
        self.blocks.append(f'<table class="kv"><tbody>{rows}</tbody></table>')
        return self

    def html(self) -> str:
        body = "\n".join(self.blocks)
        return f'<section id="{esc(self.id)}">\n<h2>{esc(self.title)}</h2>\n{body}\n</section>'


class Report:
    """A self-contained HTML report: a title, a table of contents and sections."""

    def __init__(self, title: str, subtitle: str | None = None, footer: str | None = None,
                 timestamp: bool = True):
        self.title = title
        self.subtitle = subtitle
        self.footer = footer
        self.timestamp = timestamp
        self.sections: list[Section] = []
        self._section_ids: set = set()
        self._figure_ids: set = set()
        self._table_ids: set = set()

    def section(self, id: str, title: str, intro: str | None = None) -> Section:
        """Add and return a new section (its ``id`` is the anchor in the contents)."""
        _check_id("section", id, self._section_ids)
        s = Section(self, id, title, intro)
        self.sections.append(s)
        return s

    def html(self) -> str:
        from .. import __version__

        toc = "".join(f'<li><a href="#{esc(s.id)}">{esc(s.title)}</a></li>'
                      for s in self.sections)
        sub = f'<p class="subtitle">{_inline(self.subtitle)}</p>' if self.subtitle else ""
        foot = f"generated by filterdb {esc(__version__)}"
        if self.timestamp:
            foot += " on " + _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        if self.footer:
            foot += f" · {_inline(self.footer)}"
        body = "\n".join(s.html() for s in self.sections)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(self.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f'<header class="page"><h1>{esc(self.title)}</h1>{sub}</header>\n'
            f'<nav class="toc" aria-label="Contents"><h2>Contents</h2><ol>{toc}</ol></nav>\n'
            f"{body}\n"
            f'<footer class="page">{foot}</footer>\n</main>\n<script>{JS}</script>\n'
            "</body>\n</html>\n")

    def write(self, path) -> Path:
        """Write the page (UTF-8) to ``path`` and return it."""
        p = Path(os.fspath(path))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.html(), encoding="utf-8")
        return p
