"""The metric registry: one :class:`MetricSpec` per per-layer health quantity (method.md,
section 5), read by every consumer instead of its own list.

- ``filterdb check`` and ingest compute each ``source="weight"`` spec's :attr:`function`
  on a layer's raw weight (:func:`layer_values`, via
  :func:`filterdb.kernels.assessment.weight_metrics`);
- the database pass (:func:`filterdb.kernels.layer_stats.health_task`) computes each
  ``stored`` spec from the pass's per-layer statistics (:attr:`from_pass`, or its own
  per-filter sum :attr:`row_sum`) and the catalog stores them;
- tables, JSON, CSV, the reports, the figures and the population percentiles read the
  names, labels, formats and flags here.

``source="assessment"`` specs (``TH`` and ``H / TH``) are computed by
:func:`filterdb.health.assess.assess`; they are listed for their labels and flags.

A new metric is a kernel function (pure, arrays in, a float out) and one spec appended to
:data:`METRICS`. The registry lives with the kernels (layer 2) because ingest, in the store
(layer 3), computes the metrics of layers whose filters are not stored.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import health as K

NAN = float("nan")


@dataclass(frozen=True)
class MetricSpec:
    """One per-layer metric.

    - ``name``: the column / JSON key; ``label``: short table heading; ``title``: long name
      (figure axes, prose); ``unit``: what the number is ("" for a pure number);
      ``fmt``: format spec of its values in tables; ``better``: ``"higher"``, ``"lower"``
      or ``""`` (no good direction); ``help``: one line for legends and docs;
      ``words``: ``(above, below)`` phrases for extreme percentiles ("more sparse").
    - ``function(weight, eps) -> float``: the metric of one layer's raw
      ``(c_out, c_in / groups, kh, kw)`` weight (``eps``: the sparsity epsilon; NaN where
      not applicable). ``costly``: skipped (NaN) when orthogonality is switched off.
      ``dense_equals``: the earlier metric this one equals when no filter is sparse (then
      not computed again).
    - ``stored``: computed by the database pass and stored in ``layer_metrics``.
      ``from_pass(values) -> array``: the metric of many 3x3 layers from the pass's
      per-layer arrays (``n``, ``n_sparse``, the kernel metrics, earlier specs and, for a
      spec with ``row_sum``, ``values[name + "_sum"]``: the sum over the layer's filters of
      ``row_sum(rows)``, ``rows`` float32 ``(k, 9)``, one float64 per row). Default: the
      pass's kernel column of the same name.
    - ``percentile``: ranked against the population (``check``'s percentiles, the built-in
      reference, population bands); ``table``: a column of the people's tables;
      ``headline``: one of the few metrics of summaries and figures (group means,
      percentile columns of the report, the population figure).
    """

    name: str
    label: str
    title: str
    function: Callable | None = None
    source: str = "weight"
    unit: str = ""
    fmt: str = ".3f"
    better: str = ""
    help: str = ""
    words: tuple = ("higher", "lower")
    stored: bool = True
    from_pass: Callable | None = None
    row_sum: Callable | None = None
    costly: bool = False
    dense_equals: str = ""
    percentile: bool = True
    table: bool = True
    headline: bool = False

    def format(self, v) -> str:
        """``v`` in this metric's table format (``"nan"`` for NaN / None)."""
        if v is None:
            return "nan"
        v = float(v)
        return "nan" if not math.isfinite(v) else format(v, self.fmt)


def _filters(weight):
    """``(n, d)`` filter rows of a finite weight with ``d > 1`` and filters, else None."""
    w = np.asarray(weight)
    c_out, c_in_g, kh, kw = w.shape
    n, d = c_out * c_in_g, kh * kw
    if d <= 1 or n == 0 or not np.isfinite(w).all():
        return None
    return w.reshape(n, d)


def _on_filters(fn):
    def metric(weight, eps):
        W = _filters(weight)
        return NAN if W is None else float(fn(W, eps))
    return metric


def _orthogonality(weight, eps):
    w = np.asarray(weight)
    return K.orthogonality(w) if np.isfinite(w).all() else NAN


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("sparsity", "S", "sparsity S", _on_filters(K.sparsity), unit="share",
               better="lower", help="share of filters with every |w| < eps * max|W|",
               words=("more sparse", "less sparse"), headline=True),
    MetricSpec("variance_entropy", "H", "variance entropy H",
               _on_filters(lambda W, eps: K.variance_entropy(W)), unit="log10",
               help="entropy of the filters' PCA variance spectrum (0 .. log10(kh*kw))",
               words=("higher entropy", "lower entropy")),
    MetricSpec("threshold", "TH", "randomness threshold TH(n)", source="assessment",
               unit="log10", help="the paper's TH(n) (3x3; other kernels: mean H of random "
               "layers)", stored=False, percentile=False, table=False),
    MetricSpec("variance_entropy_norm", "H/TH", "normalised variance entropy H / TH",
               source="assessment", help="H / TH(n): about 0.9 trained, > 1 random-like",
               words=("higher H/TH", "lower H/TH"), stored=False, headline=True),
    MetricSpec("variance_entropy_clean", "H clean", "clean variance entropy",
               _on_filters(K.variance_entropy_clean), unit="log10",
               help="H of the non-sparse filters only",
               words=("higher clean entropy", "lower clean entropy"), table=False,
               dense_equals="variance_entropy"),
    MetricSpec("orthogonality", "orth", "orthogonality", _orthogonality, better="higher",
               help="1 - mean |G - I| of the L2-normalised output-channel rows",
               words=("more orthogonal", "less orthogonal"), costly=True, headline=True),
    MetricSpec("variance_entropy_clean_norm", "Hc/TH", "clean H / TH(n clean)",
               _on_filters(K.variance_entropy_clean_norm),
               help="clean entropy over TH of the non-sparse filter count (3x3; "
               "torchconvquality's variance_entropy_clean_norm)",
               words=("higher clean H/TH", "lower clean H/TH"),
               from_pass=lambda v: K.entropy_norm(v["variance_entropy_clean"],
                                                  v["n"] - v["n_sparse"]),
               percentile=False),
)

_BY_NAME = {s.name: s for s in METRICS}


def spec(name: str) -> MetricSpec:
    """The spec named ``name`` (KeyError naming the known ones)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(_BY_NAME)}") from None


def specs(**flags) -> tuple[MetricSpec, ...]:
    """The specs whose attributes equal ``flags`` (e.g. ``stored=True``), in order."""
    return tuple(s for s in METRICS if all(getattr(s, k) == v for k, v in flags.items()))


def names(**flags) -> tuple[str, ...]:
    """The names of :func:`specs` ``(**flags)``."""
    return tuple(s.name for s in specs(**flags))


def labels(**flags) -> dict:
    """``{name: label}`` of :func:`specs` ``(**flags)``."""
    return {s.name: s.label for s in specs(**flags)}


def split_names(names_, at: str = "variance_entropy_norm") -> tuple[tuple, tuple]:
    """``names_`` cut after ``at`` (tables put the random-layer columns there)."""
    names_ = tuple(names_)
    i = names_.index(at) + 1 if at in names_ else len(names_)
    return names_[:i], names_[i:]


def layer_values(weight, eps: float = 0.01, orthogonality: bool = True) -> dict:
    """Every ``source="weight"`` metric of one raw weight, plus ``n_sparse`` (floats; NaN
    where not applicable). A 3x3 layer's spec with ``from_pass`` (and no ``row_sum``) is
    computed by it from the metrics before it, as the database pass does (the same numbers;
    ``function`` is its definition, tested against it)."""
    W = _filters(weight)
    n_sparse = NAN
    if W is not None:
        peak = float(np.abs(W).max())
        n_sparse = float(len(W) if peak == 0 else K.sparse_count(W, eps * peak))
    is3 = W is not None and W.shape[1] == 9
    v = {"n": float(len(W)) if W is not None else NAN, "n_sparse": n_sparse}
    for s in specs(source="weight"):
        if s.costly and not orthogonality:
            v[s.name] = NAN
        elif s.dense_equals and n_sparse == 0 and v["n"] >= 2:
            v[s.name] = v[s.dense_equals]
        elif is3 and s.from_pass is not None and s.row_sum is None:
            v[s.name] = float(s.from_pass(v))  # 3x3: the database pass's formula, no new pass
        else:
            v[s.name] = float(s.function(weight, eps))
    out = {s.name: v[s.name] for s in specs(source="weight")}
    out["n_sparse"] = n_sparse
    return out


def pass_values(values: dict, x=None, starts=None, ends=None) -> dict:
    """The ``stored`` metrics of many layers from the database pass's per-layer arrays
    ``values`` (see :class:`MetricSpec`); ``x[starts[q]:ends[q]]`` are layer ``q``'s rows,
    needed only by specs with ``row_sum``."""
    v = dict(values)
    for s in specs(stored=True):
        if s.row_sum is not None:
            v[s.name + "_sum"] = np.array([float(np.sum(s.row_sum(x[a:b]), dtype=np.float64))
                                           for a, b in zip(np.asarray(starts).tolist(),
                                                           np.asarray(ends).tolist())])
        if s.from_pass is not None:
            v[s.name] = np.asarray(s.from_pass(v), np.float64)
    return {s.name: np.asarray(v[s.name], np.float64) for s in specs(stored=True)}


STORED = names(stored=True)
PERCENTILE = names(percentile=True)

__all__ = [
    "METRICS",
    "PERCENTILE",
    "STORED",
    "MetricSpec",
    "labels",
    "layer_values",
    "names",
    "pass_values",
    "spec",
    "specs",
    "split_names",
]
