"""The Python API of ``filterdb check`` and ``filterdb inspect``, for notebooks and scripts.

``filterdb.check(obj)`` and ``filterdb.inspect(obj)`` take a model file, a folder of them, or a
live model (torch ``nn.Module``, state dict, Keras model, ``onnx.ModelProto``: see
:mod:`filterdb.readers.live`) and return result objects: tables are DataFrames
(``.layers``, ``.frame()``), the rest plain dicts and strings, ``.to_json()`` the CLI's JSON.

:class:`CheckResult` is a thin wrapper over the output of :func:`filterdb.health.model_health`
(the object ``filterdb check --json`` prints): whatever the health module puts in its summary
(verdict, reasons, ...) comes through unchanged.

Layer 5 (uses readers and health only).
"""
from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import FilterDBError

# option names accepted by check(), as the CLI spells them, -> HealthThresholds fields
_ALIASES = {"eps": "sparsity_eps", "low_diversity_h": "low_diversity_H", "sparse_s": "sparse_S"}
HTML_ROWS = 40  # layers shown by _repr_html_


def _json_safe(o):
    """NaN / Inf -> None, numpy scalars -> Python (the CLI's JSON conventions)."""
    if isinstance(o, dict):
        return {str(k): _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):  # numpy scalar
        try:
            o = o.item()
        except (ValueError, TypeError):
            pass
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def _label(verdict) -> str:
    """``"caution: 2 of 9 layers degenerated"`` -> ``"caution"``."""
    return str(verdict).split(":", 1)[0].strip() if verdict is not None else ""


def _cell(v) -> str:
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.3f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)) or "-"
    return html.escape(str(v))


def _html_table(rows: list[list], headers: list[str], more: int = 0) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    tail = f"<p>... {more} more rows (see <code>.layers</code>)</p>" if more > 0 else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{tail}"


# ---- check ----------------------------------------------------------------------------------


@dataclass(repr=False)
class CheckResult:
    """Layer health of one model (method.md, section 5).

    ``data`` is the object of ``filterdb check --json``: ``path``, ``format``, ``layers`` (one
    dict per conv layer) and ``summary``; ``model`` the :class:`~filterdb.readers.Model` read.
    """

    data: dict
    model: Any = None

    @property
    def path(self) -> str:
        return self.data.get("path", "")

    @property
    def name(self) -> str:
        return self.path

    @property
    def summary(self) -> dict:
        return self.data.get("summary", {})

    @property
    def verdict(self) -> str:
        """The verdict text (e.g. ``"poor start: 3 of 9 layers degenerated ..."``)."""
        v = self.data.get("verdict", self.summary.get("verdict"))
        return v if isinstance(v, str) else json.dumps(_json_safe(v))

    @property
    def label(self) -> str:
        """The verdict class: ``good start``, ``caution``, ``poor start``, ``not assessed``
        (the summary's ``verdict_class``; else the verdict text's first words)."""
        return self.summary.get("verdict_class") or _label(self.verdict)

    @property
    def reasons(self) -> list[str]:
        """Why the verdict: the health summary's ``reasons`` when it gives them, else one line
        per flagged layer among the worst layers (``"layer1.0.conv1: random, degenerated"``)
        and the model's warnings."""
        r = self.data.get("reasons", self.summary.get("reasons"))
        if r is not None:
            return [x if isinstance(x, str) else json.dumps(_json_safe(x)) for x in r]
        out = [f"{w['name']}: {', '.join(w['flags'])}"
               for w in self.summary.get("worst_layers", []) if w.get("flags")]
        if self.model is not None:
            out += [f"warning: {w}" for w in self.model.warnings]
        return out

    @property
    def layers(self):
        """One row per conv layer: the JSON's columns (``flags`` a list) plus one boolean
        column per flag (``random``, ``low_diversity``, ``sparse``, ``degenerated``)."""
        import pandas as pd  # lazy: start-up time: on first use

        from .health.assess import FLAGS  # lazy: start-up time: on first use

        df = pd.DataFrame(self.data.get("layers", []))
        if "flags" in df:
            for f in FLAGS:
                if f not in df:
                    df[f] = df["flags"].map(lambda fl, f=f: f in fl).astype(bool)
        return df

    def frame(self):
        """The per-layer table (:attr:`layers`)."""
        return self.layers

    def row(self) -> dict:
        """One line for a table of models: name, layers, assessed, degenerated, verdict."""
        s = self.summary
        return {"name": self.path, "format": self.data.get("format"),
                "layers": s.get("n_layers", len(self.data.get("layers", []))),
                "assessed": s.get("n_assessed"), "degenerated": s.get("n_degenerated"),
                "verdict": self.label, "error": None}

    def to_dict(self) -> dict:
        """The JSON object of ``filterdb check --json`` (NaN as None)."""
        return _json_safe(self.data)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __repr__(self) -> str:
        s = self.summary
        return (f"CheckResult({self.path!r}, {s.get('n_layers', '?')} conv layers, "
                f"{s.get('n_assessed', '?')} assessed, {s.get('n_degenerated', '?')} "
                f"degenerated, verdict={self.verdict!r})")

    def _repr_html_(self) -> str:
        ls = self.data.get("layers", [])
        from .kernels.metrics import labels  # lazy: start-up time: on first use

        lab = labels(headline=True)
        rows = [[l.get("name"), l.get("kernel"), l.get("n")] + [l.get(m) for m in lab]
                + [l.get("flags", [])] for l in ls[:HTML_ROWS]]
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in self.reasons[:8])
        fmt = html.escape(str(self.data.get("format")))
        return (f"<div><p><b>{html.escape(self.path)}</b> ({fmt}): "
                f"<b>{html.escape(self.verdict)}</b></p>"
                + (f"<ul>{reasons}</ul>" if reasons else "")
                + _html_table(rows, ["layer", "kernel", "n", *lab.values(), "flags"],
                              len(ls) - HTML_ROWS)
                + "</div>")


@dataclass(repr=False)
class Failed:
    """A model that could not be read: its path and the one-line error."""

    path: str
    error: str

    def row(self) -> dict:
        return {"name": self.path, "format": None, "layers": None, "assessed": None,
                "degenerated": None, "verdict": "error", "error": self.error}

    def to_dict(self) -> dict:
        return {"path": self.path, "error": self.error}

    def __repr__(self) -> str:
        return f"Failed({self.path!r}, {self.error!r})"


@dataclass(repr=False)
class Results:
    """Results of several models (a folder, or many inputs), in input order; a file that
    failed is a :class:`Failed` among them."""

    items: list = field(default_factory=list)

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    @property
    def ok(self) -> list:
        return [r for r in self.items if not isinstance(r, Failed)]

    @property
    def failed(self) -> list:
        return [r for r in self.items if isinstance(r, Failed)]

    def frame(self):
        """One row per model: name, format, layers, assessed, degenerated, verdict, error
        (an inspect result: name, format, layers, conv_depths, filters_3x3, error)."""
        import pandas as pd  # lazy: start-up time: on first use

        return pd.DataFrame([r.row() for r in self.items])

    def to_dict(self) -> list:
        return [r.to_dict() for r in self.items]

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __repr__(self) -> str:
        kinds = {type(r).__name__ for r in self.ok}
        what = f" ({', '.join(sorted(kinds))})" if kinds else ""
        return f"Results({len(self.items)} models{what}, {len(self.failed)} failed)"

    def _repr_html_(self) -> str:
        df = self.frame()
        return _html_table(df.values.tolist(), list(df.columns))


def _thresholds(thresholds, options: dict):
    from .health.assess import HealthThresholds  # lazy: start-up time: on first use

    if thresholds is not None and options:
        raise TypeError("give either thresholds= or threshold options, not both")
    if thresholds is not None:
        return thresholds
    fields = set(HealthThresholds.__dataclass_fields__)
    kw = {}
    for k, v in options.items():
        key = _ALIASES.get(k, k)
        if key not in fields:
            raise TypeError(f"unknown option {k!r}; options: {', '.join(sorted(fields))}, "
                            "thresholds, orthogonality, name, format")
        v = float(v)
        if not math.isfinite(v) or v < 0:
            raise FilterDBError(f"{k} must be a finite number >= 0, got {v}")
        kw[key] = v
    return HealthThresholds(**kw)


def check_model(model, thresholds=None, orthogonality: bool = True,
                reference: bool = True) -> CheckResult:
    """:class:`CheckResult` of a :class:`~filterdb.readers.Model` (already read): the JSON of
    ``filterdb check --json``, percentiles against the built-in reference population included
    unless ``reference=False`` (``--no-reference``)."""
    from .health import model_health  # lazy: start-up time: on first use
    from .health.assess import FLAGS, flag_names  # lazy: start-up time: on first use

    df, summary = model_health(model, thresholds, orthogonality=orthogonality)
    cols = [c for c in df.columns if c not in FLAGS]
    layers = []
    for r in df.to_dict(orient="records"):
        d = {c: _json_safe(r[c]) if not isinstance(r[c], float) else float(r[c]) for c in cols}
        d["flags"] = flag_names(r)
        layers.append(d)
    data = {"path": model.path, "format": model.format, "layers": layers, "summary": summary,
            "warnings": list(model.warnings)}
    if reference:
        from .zoo.reference import percentiles  # lazy: start-up time: on first use

        pct, info = percentiles(df, model.sha256)
        info["db"] = f"the built-in reference {info['name']} ({info['n_models']} zoo models)"
        summary["reference"] = {k: info[k] for k in
                                ("name", "source", "n_models", "n_layers", "n_filters_3x3")}
        for row, p in zip(layers, pct):
            row["percentiles"] = p
        data["population"] = info
    return CheckResult(data, model)


def _is_path(obj) -> bool:
    return isinstance(obj, (str, os.PathLike))


def _each(obj, fn, format=None, name=None):
    """Apply ``fn(model)`` to one object, or to every model file of a folder (a
    :class:`Results`, bad files as :class:`Failed`)."""
    from .readers import read_model  # lazy: start-up time: on first use
    from .readers.find import expand_inputs  # lazy: start-up time: on first use
    from .readers.live import to_model  # lazy: start-up time: on first use

    if _is_path(obj) and os.path.isdir(obj):
        out = []
        for p, err in expand_inputs([obj]):
            if err:
                out.append(Failed(p, f"{p}: {err}"))
                continue
            try:
                out.append(fn(read_model(p, format)))
            except FilterDBError as e:
                out.append(Failed(p, str(e)))
        return Results(out)
    if _is_path(obj):
        return fn(read_model(obj, format))
    return fn(to_model(obj, name))


def check(obj, *, thresholds=None, orthogonality: bool = True, reference: bool = True,
          name: str | None = None, format: str | None = None, **options):
    """Layer health of a model: sparsity, variance entropy, orthogonality and degeneration
    flags per conv layer, a summary and a verdict (method.md, section 5).

    ``obj``: a model file, a folder (every model file under it: a :class:`Results`), a torch
    ``nn.Module``, a state dict, a Keras model or an ``onnx.ModelProto``. Options: the
    thresholds of :class:`~filterdb.health.HealthThresholds` by name (``sparsity_eps``,
    ``random_margin``, ``low_diversity_H``, ``sparse_S``, ``poor_share``; or ``thresholds=``),
    ``orthogonality=False`` to skip that costly metric, ``reference=False`` for no percentiles
    against the built-in reference population, ``name=`` for a live model, ``format=`` to
    force a file's format. Returns a :class:`CheckResult`.
    """
    t = _thresholds(thresholds, options)
    return _each(obj, lambda m: check_model(m, t, orthogonality, reference), format, name)


# ---- inspect --------------------------------------------------------------------------------


@dataclass(repr=False)
class InspectResult:
    """The conv layers of one model (``filterdb inspect``): ``model`` is the
    :class:`~filterdb.readers.Model`."""

    model: Any

    @property
    def path(self) -> str:
        return self.model.path

    @property
    def summary(self) -> dict:
        """Per-model facts (format, producer, depth source, filter counts, warnings)."""
        return self.model.summary()

    @property
    def warnings(self) -> list[str]:
        return list(self.model.warnings)

    @property
    def layers(self):
        """One row per conv layer: the JSON's columns (name, op, shape, groups, kernel,
        graph_depth, conv_depth, conv_depth_norm, filters, filters_3x3, nonfinite)."""
        import pandas as pd  # lazy: start-up time: on first use

        return pd.DataFrame(self.model.to_dict()["layers"])

    @property
    def skipped(self):
        import pandas as pd  # lazy: start-up time: on first use

        return pd.DataFrame([{"name": s.name, "op": s.op, "reason": s.reason}
                             for s in self.model.skipped], columns=["name", "op", "reason"])

    def frame(self):
        return self.layers

    def row(self) -> dict:
        m = self.model
        return {"name": m.path, "format": m.format, "layers": len(m.layers),
                "conv_depths": m.n_conv_depths, "filters_3x3": m.n_filters_3x3,
                "depth_source": m.depth_source, "error": None}

    def to_dict(self) -> dict:
        """The JSON object of ``filterdb inspect --json``."""
        return _json_safe(self.model.to_dict())

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __repr__(self) -> str:
        return f"InspectResult({self.model!r})"

    def _repr_html_(self) -> str:
        m = self.model
        rows = [[l.name, l.op, "x".join(map(str, l.shape)), l.groups, l.conv_depth,
                 l.conv_depth_norm] for l in m.layers[:HTML_ROWS]]
        warn = "".join(f"<li>{html.escape(w)}</li>" for w in m.warnings)
        return (f"<div><p><b>{html.escape(m.path)}</b> ({html.escape(m.format)}, "
                f"{len(m.layers)} conv layers, {m.n_filters_3x3:,} 3x3 filters, depth from "
                f"{html.escape(m.depth_source)})</p>" + (f"<ul>{warn}</ul>" if warn else "")
                + _html_table(rows, ["layer", "op", "shape", "groups", "conv_depth",
                                     "conv_depth_norm"], len(m.layers) - HTML_ROWS) + "</div>")


def inspect(obj, *, name: str | None = None, format: str | None = None):
    """The 2-D conv layers of a model (``filterdb inspect``): an :class:`InspectResult`
    (a :class:`Results` for a folder). ``obj`` as for :func:`check`."""
    return _each(obj, InspectResult, format, name)


__all__ = ["check", "inspect", "check_model", "CheckResult", "InspectResult", "Results",
           "Failed"]
