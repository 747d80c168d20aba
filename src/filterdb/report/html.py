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

from .. import __version__
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
    import matplotlib as mpl  # lazy: start-up time (matplotlib for figures only)

    from ..plots._style import STYLE  # lazy: start-up time (matplotlib for figures only)

    buf = io.BytesIO()
    with mpl.rc_context(STYLE):
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def figure_svg(fig) -> bytes:
    import matplotlib as mpl  # lazy: start-up time (matplotlib for figures only)

    from ..plots._style import STYLE  # lazy: start-up time (matplotlib for figures only)

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


def cell_value(v, digits: int | None = None) -> str:
    """The raw value of a cell as text (the ``data-value`` used for sorting): full-precision
    numbers (``digits`` significant digits when given), ``true``/``false``, ``""`` for
    missing."""
    if _is_nan(v):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        f = float(v)
        if not math.isfinite(f):
            return "Infinity" if f > 0 else ("-Infinity" if f < 0 else "")
        return repr(f) if digits is None else f"{f:.{digits}g}"
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


LONG_TEXT = 48  # cells longer than this show their head and tail (the full text on hover)


def short_text(text: str, limit: int = LONG_TEXT) -> str:
    """``text`` itself, or its head and tail around an ellipsis when longer than ``limit``.

    >>> short_text("model/backbone/stage3/unit2/conv2/BiasAdd;model/stage3/unit2/Conv2D", 30)
    'model/backbone/…unit2/Conv2D'
    """
    if len(text) <= limit:
        return text
    k = (limit - 1) // 2
    return text[:k] + "…" + text[-(limit - 1 - k):]


# viridis at 9 evenly spaced points: the colour map of the drift heat-map figures
_VIRIDIS = ((68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
            (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37))


def _color(t: float) -> tuple[str, str]:
    """Background and text colour of a heat-map cell at ``t`` in [0, 1] (viridis, linearly
    interpolated; dark text on the light end)."""
    if not math.isfinite(t):
        return "#ffffff", "#1d232a"
    t = min(max(float(t), 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(t), len(_VIRIDIS) - 2)
    a, b, f = _VIRIDIS[i], _VIRIDIS[i + 1], t - i
    rgb = [round(x + (y - x) * f) for x, y in zip(a, b)]
    return f"rgb({rgb[0]},{rgb[1]},{rgb[2]})", "#1d232a" if t > 4.8 else "#fff"


class Section:
    """One section of a :class:`Report`; add blocks in the order they should appear."""

    def __init__(self, report: Report, id: str, title: str, intro: str | None = None):
        self.report = report
        self.id = id
        self.title = title
        self.blocks: list = []
        if intro:
            self.blocks.append(f'<div class="intro">{markdown(intro)}</div>')

    def details(self, id: str, title: str, summary: str | None = None,
                open: bool = False) -> Details:
        """A collapsed block (``<details id=...>``) inside this section; add to it as to a
        section. ``summary``: a short line shown beside the title while collapsed."""
        _check_id("section", id, self.report._section_ids)
        d = Details(self.report, id, title, summary=summary, open=open)
        self.blocks.append(d)
        return d

    def add_svg(self, svg: str, id: str, caption: str | None = None) -> Section:
        """An inline SVG figure (``<figure data-svg="id">``): its elements' ``<title>`` show
        on hover. ``svg`` must be generated by filterdb (it is inserted as it is)."""
        _check_id("figure", id, self.report._figure_ids)
        cap = f"<figcaption>{_inline(caption)}</figcaption>" if caption else ""
        self.blocks.append(f'<figure id="fig-{id}" class="svg" data-svg="{esc(id)}">{svg}'
                           f"{cap}</figure>")
        return self

    def add_heatmap(self, matrix, labels, id: str, vmax: float | None = None,
                    unit: str = "", caption: str | None = None, annotate: bool | None = None,
                    row_notes=None) -> Section:
        """A matrix as an HTML heat map: one cell per pair, its value in ``title`` (shown on
        hover) and, for up to 12 labels (or ``annotate``), printed in the cell. ``vmax``:
        the top of the colour scale (shared between maps for comparable colours)."""
        _check_id("table", id, self.report._table_ids)
        M = np.asarray(matrix, dtype=float)
        top = vmax if vmax is not None else (np.nanmax(M) if np.isfinite(M).any() else 1.0)
        top = top if top and math.isfinite(top) and top > 0 else 1.0
        show = len(labels) <= 12 if annotate is None else annotate
        u = f" {unit}" if unit else ""
        notes = list(row_notes) if row_notes is not None else [""] * len(labels)
        head = "".join(f'<th scope="col" title="{esc(l)}">{esc(short_text(str(l), 16))}</th>'
                       for l in labels)
        rows = []
        for i, a in enumerate(labels):
            cells = []
            for j, b in enumerate(labels):
                v = M[i, j]
                bg, fg = _color(v / top)
                text = f"{v:.3g}" if show and math.isfinite(v) else ""
                cells.append(f'<td data-value="{esc(cell_value(v))}" title="{esc(a)} vs '
                             f'{esc(b)}: {esc(cell_text(v))}{esc(u)}" style="background:{bg};'
                             f'color:{fg}">{text}</td>')
            note = f' <span class="note">{esc(notes[i])}</span>' if notes[i] else ""
            rows.append(f'<tr><th scope="row" title="{esc(a)}">{esc(short_text(str(a), 28))}'
                        f"{note}</th>{''.join(cells)}</tr>")
        scale = (f'<p class="table-caption">colour scale (viridis): 0 (dark purple) to '
                 f"{top:.3g}{esc(u)} (yellow)" + (f". {_inline(caption)}" if caption else "")
                 + "</p>")
        self.blocks.append(
            f'<div class="table-wrap heat-wrap"><table id="tbl-{id}" data-table="{esc(id)}" '
            f'class="heat{" small" if not show else ""}"><thead><tr><th></th>{head}</tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table></div>{scale}')
        return self

    def add_heading(self, text: str) -> Section:
        self.blocks.append(f"<h3>{esc(text)}</h3>")
        return self

    def add_text(self, text: str) -> Section:
        """Markdown-lite text (see :func:`markdown`) or raw HTML (starting with ``<``)."""
        self.blocks.append(markdown(text))
        return self

    def add_figure(self, fig, id: str, caption: str | None = None, format: str = "png",
                   dpi: int = FIGURE_DPI, alt: str | None = None) -> Section:
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
                  max_rows: int | None = None, value_digits: int | None = None) -> Section:
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
            cells = "".join(self._cell(v, n, float_format, value_digits)
                            for v, n in zip(values, num))
            rows.append(f"<tr{cls}>{cells}</tr>")
        klass = "data sortable" if sortable else "data"
        note = caption or ""
        if len(df) < n_all:
            note = (note + " " if note else "") + f"(first {len(df):,} of {n_all:,} rows)"
        cap = f'<p class="table-caption">{_inline(note)}</p>' if note else ""
        tools = ""
        if len(df) > 1:
            tools = (f'<div class="table-tools"><input type="search" data-filter="{esc(id)}" '
                     f'placeholder="search rows" aria-label="search the rows of {esc(id)}">'
                     f'<a class="csv" href="#" download="{esc(id)}.csv" data-csv="{esc(id)}">'
                     "download CSV</a></div>")
        self.blocks.append(
            f'{tools}<div class="table-wrap"><table id="tbl-{id}" data-table="{esc(id)}" '
            f'class="{klass}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
            f"</tbody></table></div>{cap}")
        return self

    @staticmethod
    def _cell(v, numeric: bool, float_format: str, digits: int | None = None) -> str:
        text = cell_text(v, float_format)
        short = short_text(text) if not numeric else text
        title = f' title="{esc(text)}"' if short != text else ""
        num = ' class="num"' if numeric else ""
        raw = cell_value(v, digits)  # the sort key and the CSV value; left out when the text
        value = "" if raw == short else f' data-value="{esc(raw)}"'
        return f"<td{value}{num}{title}>{esc(short)}</td>"

    def add_kv(self, items: dict, float_format: str = "{:.4g}") -> Section:
        """A two-column table of ``key: value`` facts."""
        rows = "".join(f"<tr><th scope=\"row\">{esc(k)}</th><td>{esc(cell_text(v, float_format))}"
                       f"</td></tr>" for k, v in items.items())
        self.blocks.append(f'<table class="kv"><tbody>{rows}</tbody></table>')
        return self

    def _body(self) -> str:
        return "\n".join(b if isinstance(b, str) else b.html() for b in self.blocks)

    def html(self) -> str:
        return (f'<section id="{esc(self.id)}">\n<h2>{esc(self.title)}</h2>\n{self._body()}\n'
                "</section>")


class Details(Section):
    """A collapsed block of a section (``<details>``): a model's detail, say."""

    def __init__(self, report, id, title, summary=None, open=False):
        super().__init__(report, id, title)
        self.summary = summary
        self.open = open

    def html(self) -> str:
        extra = f' <span class="note">{_inline(self.summary)}</span>' if self.summary else ""
        return (f'<details id="{esc(self.id)}" class="detail"{" open" if self.open else ""}>'
                f"<summary>{esc(self.title)}{extra}</summary>\n{self._body()}\n</details>")


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
        toc = "".join(f'<li><a href="#{esc(s.id)}">{esc(s.title)}</a></li>'
                      for s in self.sections)
        sub = f'<p class="subtitle">{_inline(self.subtitle)}</p>' if self.subtitle else ""
        foot = f"generated by filterdb {esc(__version__)}"
        if self.timestamp:
            foot += " on " + _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        if self.footer:
            foot += f" · {_inline(self.footer)}"
        lead = [s for s in self.sections if s.id == "findings"][:1]
        body = "\n".join(s.html() for s in self.sections if s not in lead)
        first = lead[0].html() + "\n" if lead else ""
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(self.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f'<header class="page"><h1>{esc(self.title)}</h1>{sub}</header>\n'
            f"{first}"
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
