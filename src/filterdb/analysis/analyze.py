"""Everything the report needs in the fewest passes over the filters (issue 21).

:func:`analyze` computes, for a selection, the PCA, the exact shared coefficient range,
the histograms of every grouping column (:data:`COLUMNS`), the c0-c1 density and the
health metrics of every layer (docs/method.md, sections 3-5), in two passes (three at most):

1. PCA moments and the layers' health statistics (sparsity, variance entropies), and the
   rows most extreme on a provisional basis (the PCA of a 4 M-filter sample read first),
   from which :mod:`filterdb.kernels.extremes` proves the exact coefficient range. With
   the range fixed (no extremes needed) and the health statistics recomputed, the PCA
   moments come from the health kernel's load of each row (``health_task`` with
   ``pca_moments``): one load of every row instead of two;
2. the exact coefficient range, only if that proof fails (or with the PCA cached and the
   range not; skipped with a fixed ``range``);
3. the histograms of all columns at once and the c0-c1 density, from one projection.

So the analysis normally reads the filters twice. A pass whose result does not depend on
the order of the tasks (all but the first) runs in the other direction from the pass
before it, so its first reads hit what the page cache still holds.

Every pass runs on one layer-cut plan (tasks hold whole layers:
:func:`filterdb.engine.make_plan` with ``whole_layers``), so the costly orthogonality of a layer can
be computed in any pass: layers are dealt to the passes (largest first, to the pass with
the least estimated work, :func:`assign_orthogonality`) so that no pass is left waiting
on one core. The engine (:mod:`filterdb.engine`: two reader threads, ``workers`` compute
threads, or Dask) overlaps reading and compute.

Results go to the database's caches under the keys of the separate commands
(:mod:`filterdb.analysis` for pca / range / hist / hist2d, the catalog's ``layer_metrics``
for health), so ``filterdb pca``, ``drift``, ``health`` and ``report`` afterwards do no
pass. Results equal the separate commands' up to the order of float64 sums (the PCA
moments are summed over other task boundaries: about 1e-16 relative).

``orthogonality_precision="float32"`` (default): float32 BLAS products over blocks of
4,096 columns accumulated in float64 (:func:`filterdb.kernels.fused.orthogonality_f32`);
measured against the float64 definition: at most 1.7e-8 absolute on the zoo's layers and
3.6e-10 on synthetic layers up to 7,001 channels (``benchmarks/orthogonality_f32.py``;
``tests/test_analyzer.py`` bounds it by 1e-6).
``"float64"`` is the exact path of ``filterdb health``. It combines the analysis context
(:mod:`filterdb.analysis.context`) with :mod:`filterdb.health` (the same layer 5).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._repr import dataclass_repr
from ..engine import make_plan, reversed_plan, single_blas
from ..errors import FilterDBError
from ..health import HealthThresholds
from ..health import database as HD
from ..kernels import extremes as _ext
from ..kernels import fused as F
from ..kernels import hist as _hist
from ..kernels import pca as _pca
from ..kernels.drift import resolve_weights
from ..kernels.layer_stats import VALUES, health_task
from .context import DEPTH_BIN, analysis_context, norm_where, npz_bytes, npz_load
from .drift import DriftSummary, drift_result, summary_provenance
from .passes import pca_params, pca_range_from, provisional_pca

COLUMNS = ("task", "visual_category", "training_dataset", "architecture", DEPTH_BIN, "model")
HIST2D_BINS = 256  # the report's c0-c1 density
ORTHO_PRECISIONS = HD.ORTHO_PRECISIONS
# Compute per filter of each part of a pass, in multiply-adds of the orthogonality's BLAS
# products (so that the parts and the orthogonality can be dealt out on one scale): each
# part's time per filter in RAM on one thread times the products' rate, 35.6 G/s (layers
# of 469 x 469 filters, 2026-12-04: moments 12.7 ns, with moments_top's extremes 23.2, from
# the health kernel's load 6.8 more than health's 12.9; range 16.5; histograms 26.7, the
# c0-c1 density 2.6 more)
PASS_COST = {"moments": 450.0, "moments_top": 830.0, "moments_shared": 240.0,
             "health": 460.0, "range": 590.0, "hist": 950.0, "hist2d": 90.0}


@dataclass
class PassInfo:
    name: str
    parts: list
    n_orth: int  # layers whose orthogonality this pass computed
    seconds: float


@dataclass
class AnalyzeResult:
    """PCA, range, drift of every column, c0-c1 density and the health table."""

    __repr__ = dataclass_repr

    pca: _pca.PCA
    range: tuple[float, float]
    summary: DriftSummary
    hist2d: np.ndarray | None
    health: pd.DataFrame
    passes: list = field(default_factory=list)  # PassInfo of the passes run (none: cached)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        h = self.health
        return {"pca": self.pca.to_dict(), "range": list(self.range),
                "drift": self.summary.to_dict(),
                "health": {"layers": len(h), "assessed": int(h["assessed"].sum()),
                           "degenerated": int(h["degenerated"].sum())},
                "passes": [{"name": p.name, "parts": p.parts, "orthogonality_layers": p.n_orth,
                            "seconds": p.seconds} for p in self.passes],
                "seconds": self.seconds}


def assign_orthogonality(cost, base) -> np.ndarray:
    """Pass index for each layer: largest ``cost`` first, each to the pass whose ``base``
    plus assigned cost is smallest (longest-processing-time greedy)."""
    cost = np.asarray(cost, np.float64)
    load = np.asarray(base, np.float64).copy()
    out = np.zeros(len(cost), np.int64)
    for i in np.argsort(-cost, kind="stable").tolist():
        p = int(np.argmin(load))
        out[i] = p
        load[p] += cost[i]
    return out


def _pass_cost(names, top: bool = False, shared: bool = False, hist2d: bool = False) -> float:
    """:data:`PASS_COST` of a pass computing ``names``: the moments with the extremes
    (``top``) or from the health kernel's load (``shared``), the histograms with the c0-c1
    density (``hist2d``)."""
    cost = 0.0
    for k in names:
        if k == "moments":
            k = "moments_top" if top else "moments_shared" if shared else k
        cost += PASS_COST[k] + (PASS_COST["hist2d"] if k == "hist" and hist2d else 0.0)
    return cost


def _ortho_cost(n, c_out) -> np.ndarray:
    """Multiply-adds of a layer's orthogonality: about ``c_out * 9 n / 2`` (half a Gram)."""
    return np.asarray(n, np.float64) * 4.5 * np.maximum(np.asarray(c_out, np.float64), 1)


def analyze(db, where=None, *, columns=COLUMNS, bins: int = 70, range=None,
            weights="evr", hist2d_bins: int = HIST2D_BINS, health: bool = True,
            orthogonality: bool = True, orthogonality_precision: str = "float32",
            thresholds=None, engine="local", scheduler=None, workers: int = 2,
            progress=None, cache: bool = True, recompute: bool = False,
            precision: str = "float32", matrices=None) -> AnalyzeResult:
    """PCA, range, histograms of ``columns``, c0-c1 density and health, in 2 passes (3 if
    the range cannot be proved from pass 1).

    ``recompute``: ignore cached results (and store the new ones); ``cache=False``: neither
    read nor store (the analysis caches; health metrics are stored unless ``cache=False``).
    ``matrices``: the columns whose drift matrix goes into ``summary`` (default: all but
    ``"model"``, whose 647 x 647 matrix costs seconds; its histograms are cached all the
    same). Other parameters as :func:`filterdb.analysis.drift_summary` and
    :func:`filterdb.health.database_health`.
    """
    HD.check_orthogonality_precision(orthogonality_precision)
    resolve_weights(weights, np.ones(9) / 9)
    columns = list(dict.fromkeys(columns))
    t = thresholds or HealthThresholds()
    t0 = time.perf_counter()
    with analysis_context(db, where, engine, scheduler, workers, progress, cache,
                          precision, recompute) as ctx:
        for c in columns:
            ctx.check_by(c)
        sel = ctx.layers.sort_values("filter_start")
        lids = sel["layer_id"].to_numpy(np.int64)
        runner = _Runner(ctx, sel)

        # what is cached
        pkey = ctx.key("pca")
        hit = ctx.get(pkey)
        p = _pca.PCA.from_dict(hit) if isinstance(hit, dict) else None
        rng = ctx.coefficient_range(None, range) if range is not None else None
        if rng is None:
            hit = ctx.get(ctx.key("range"))
            if isinstance(hit, list) and len(hit) == 2:
                rng = (float(hit[0]), float(hit[1]))
        hlayers = hparams = None
        todo_h = np.zeros(0, np.int64)
        vals = {}
        if health:
            db_ = ctx.db
            hlayers = db_.layers(ctx.where, columns=HD.LAYER_QUERY_COLUMNS)
            hparams = HD.metrics_params(t.sparsity_eps, orthogonality)
            has = hlayers["filter_count"].fillna(0).astype(np.int64).to_numpy() > 0
            vals, todo = HD.stored_or_todo(db_, hlayers, hparams, recompute or not cache)
            todo_h = np.asarray(todo, np.int64)
            if not np.isin(todo_h, lids).all():
                raise FilterDBError("internal error: health layers outside the selection")

        # the passes and their parts
        need_pca = p is None
        need_range = rng is None
        # the range found in pass 1 (a provisional basis from a sample: kernels.extremes);
        # pass 2 runs only if its check fails
        prov = runner.provisional() if need_pca and need_range else None
        passes = [[], [], []]  # names of the parts per pass
        if need_pca:
            passes[0].append("moments")
        if len(todo_h):
            passes[0].append("health")
        if need_range and prov is None:
            passes[1].append("range")
        hist_todo = None  # decided once the range is known
        passes[2].append("hist")  # tentatively (dropped if all cached)

        # health index / c_out by layer id
        L = int(max(lids.max(), hlayers["layer_id"].max() if health and len(hlayers) else 0)) + 1
        c_out_by_id = np.zeros(L, np.int64)
        cnt_by_id = np.zeros(L, np.int64)
        c_out_by_id[lids] = sel["c_out"].fillna(0).to_numpy(np.int64) if "c_out" in sel else 0
        if health:
            hl = hlayers.set_index("layer_id")
            c_out_by_id[hl.index.to_numpy(np.int64)] = hl["c_out"].fillna(0).to_numpy(np.int64)
        cnt_by_id[lids] = sel["filter_count"].to_numpy(np.int64)
        hindex = np.full(L, -1, np.int64)
        hindex[todo_h] = np.arange(len(todo_h))
        h_c_out = c_out_by_id[todo_h]

        # hist: which columns are cached (needs the range; if unknown, assume all todo)
        if rng is not None:
            hist_todo = _hist_todo(ctx, columns, bins, rng)
            h2_needed = hist2d_bins and _hist2d_hit(ctx, hist2d_bins, rng) is None
            if not hist_todo and not h2_needed:
                passes[2] = []
        active = [i for i in (0, 1, 2) if passes[i]]
        # the plain moments from the health statistics' load of each row (one load)
        shared = (need_pca and prov is None and len(todo_h) > 0
                  and ctx.precision == "float32")
        # deal orthogonality out over the passes that run (pass 1 if none)
        orth_pass = np.zeros(len(todo_h), np.int64)
        if health and orthogonality and len(todo_h):
            n_sel = float(cnt_by_id[lids].sum())
            act = active or [0]
            cost = [_pass_cost(passes[0], prov is not None, shared), _pass_cost(passes[1]),
                    _pass_cost(passes[2], hist2d=bool(hist2d_bins) and (
                        rng is None or h2_needed))]
            base = [n_sel * cost[i] for i in act]
            orth_pass = np.asarray(act, np.int64)[assign_orthogonality(
                _ortho_cost(cnt_by_id[todo_h], h_c_out), base)]
        ortho_f32 = orthogonality_precision == "float32"
        orth_vals = np.full(len(todo_h), np.nan)
        orth_seen = np.zeros(len(todo_h), np.int64)

        def ortho_params(i):
            if not (health and orthogonality and len(todo_h)):
                return None
            pick = orth_pass == i
            if not pick.any():
                return None
            idx = np.full(L, -1, np.int64)
            idx[todo_h[pick]] = np.flatnonzero(pick)
            return {"index": idx, "c_out": h_c_out, "float32": ortho_f32}

        def take_orth(res, i):
            o = F.split(res, "orth")
            if o:
                pick = orth_pass == i
                orth_vals[pick] = o["orth"][pick]
                orth_seen[pick] += o["count"][pick]

        # pass 1
        hvalues = None
        if passes[0]:
            parts = []
            if need_pca and prov is not None:
                parts.append(("moments", _ext.moments_top_task, pca_params(prov, ctx.precision)))
            elif need_pca and not shared:
                parts.append(("moments", _pca.moments_task, {"precision": ctx.precision}))
            if len(todo_h):
                parts.append(("health", health_task,
                              {"index": hindex, "c_out": h_c_out, "eps": float(t.sparsity_eps),
                               "orthogonality": False, "pca_moments": shared}))
            r = runner.run(" + ".join(passes[0]), parts, ortho_params(0), 0,
                           int((orth_pass == 0).sum()), names=passes[0])
            take_orth(r, 0)
            if need_pca:
                m = F.split(r, "health" if shared else "moments")
                if prov is not None:
                    p, rng = pca_range_from(m, prov)
                    if rng is not None:
                        ctx.found_range(rng)
                    else:  # the check failed: the range pass after all
                        passes[1].append("range")
                else:
                    p = _pca.pca_from_moments(int(m["n"]), m["s"], m["sxx"])
                ctx.put(pkey, p.to_dict())
            if len(todo_h):
                hv = F.split(r, "health")
                if not (hv["count"] == 1).all():
                    raise FilterDBError("internal error: layers not seen exactly once")
                hvalues = hv["values"]
        elif len(todo_h) and (orth_pass == 0).any():
            r = runner.run("orthogonality", [], ortho_params(0), 0,
                           int((orth_pass == 0).sum()))
            take_orth(r, 0)

        # pass 2
        if passes[1]:
            parts = [("range", _pca.range_task, pca_params(p, ctx.precision))]
            r = runner.run("range", parts, ortho_params(1), 1,
                           int((orth_pass == 1).sum()), any_order=True)
            take_orth(r, 1)
            rr = F.split(r, "range")
            rng = _pca.shared_range(rr["cmin"], rr["cmax"])
            ctx.put(ctx.key("range"), [float(rng[0]), float(rng[1])])
            hist_todo = _hist_todo(ctx, columns, bins, rng)

        # pass 3
        got = {}
        h2 = _hist2d_hit(ctx, hist2d_bins, rng) if hist2d_bins else None
        if hist_todo is None:
            hist_todo = _hist_todo(ctx, columns, bins, rng)
        if passes[2] and (hist_todo or (hist2d_bins and h2 is None) or (orth_pass == 2).any()):
            parts = []
            edges = _hist.bin_edges(rng[0], rng[1], int(bins))
            d2 = None
            if hist2d_bins and h2 is None:
                e2 = _hist.bin_edges(rng[0], rng[1], int(hist2d_bins))
                d2 = dict(a=0, b=1, edges_a=e2, edges_b=e2)
            if hist_todo:  # with the c0-c1 density from the same projection
                ctx.load_columns(hist_todo)
                coded = [(c, *ctx.labels_codes(c)) for c in hist_todo]
                cells, lookup, n_cells = ctx.cells(coded)
                parts.append(("hist", F.hist_cells_task,
                              dict(pca_params(p, ctx.precision), lookup=lookup,
                                   n_groups=max(n_cells, 1), edges=edges, hist2d=d2)))
            elif d2 is not None:
                parts.append(("hist", _hist.hist2d_task, dict(pca_params(p, ctx.precision),
                                                               **d2)))
            names = ([f"histograms ({len(hist_todo)} columns)"] if hist_todo else []) + \
                (["c0-c1 density"] if d2 is not None else [])
            r = runner.run(" + ".join(names) or "orthogonality", parts,
                           ortho_params(2), 2, int((orth_pass == 2).sum()), any_order=True)
            take_orth(r, 2)
            if hist_todo:
                cc = F.split(r, "hist")["counts"]
                for c, (labels, counts) in ctx.split_cells(coded, cells, cc, bins).items():
                    got[c] = (labels, counts)
                    ctx.put_counts(c, bins, rng, labels, counts)
            if d2 is not None:
                h2 = F.split(r, "hist")["counts2d" if hist_todo else "counts"]
                ctx.put(ctx.hist2d_key(hist2d_bins, rng), npz_bytes(counts=h2))
        # the rest from the cache (just filled or hit)
        rest = [c for c in columns if c not in got]
        if rest:
            got.update(ctx.group_counts(p, rng, rest, bins) if cache and not recompute
                       else {})
        sizes = {c: ctx.group_sizes(c, got[c][0]) for c in columns if c in got}

        # health: combine and store
        htable = None
        if health:
            frames = [HD.values_frame(vals)] if vals else []
            if len(todo_h):
                hv = pd.DataFrame(hvalues, columns=list(VALUES),
                                  index=pd.Index(todo_h, name="layer_id"))
                if orthogonality:
                    if not (orth_seen == 1).all():
                        raise FilterDBError("internal error: orthogonality of some layers "
                                            "not computed exactly once")
                    hv["orthogonality"] = orth_vals
                if cache:
                    HD.store_metrics(ctx.db, hparams, hv)
                frames.append(hv[list(HD.STORED)])
            # layers without stored 3x3 filters: the metrics stored at ingest, as health does
            ing = HD.ingest_metrics(ctx.db, hlayers[~has], t.sparsity_eps)
            if len(ing):
                if not orthogonality:
                    ing["orthogonality"] = np.nan
                frames.append(ing)
            htable = HD.health_table(hlayers, pd.concat(frames) if frames
                                     else HD.values_frame({}), t)
        passes_run = runner.info
    w = norm_where(where)
    mats = [c for c in columns if c != "model"] if matrices is None else list(matrices)
    res = {c: drift_result(c, *got[c], sizes[c], p, rng, bins, weights, w, precision,
                           range is not None)
           for c in columns if c in mats and c in got and got[c][0]}
    summ = DriftSummary(res, p, rng, summary_provenance(columns, bins, rng, range is not None,
                                                        weights, p, precision))
    return AnalyzeResult(p, rng, summ, h2, htable if htable is not None else pd.DataFrame(),
                         passes_run, time.perf_counter() - t0)


def _hist_todo(ctx, columns, bins, rng) -> list:
    """The columns whose histograms are not cached."""
    return [c for c in columns
            if not isinstance(ctx.get(ctx.hist_key(c, bins, rng)), (bytes, bytearray))]


def _hist2d_hit(ctx, bins, rng):
    hit = ctx.get(ctx.hist2d_key(bins, rng))
    return npz_load(hit)["counts"] if isinstance(hit, (bytes, bytearray)) else None


class _Runner:
    """Runs fused passes on one layer-cut plan with the context's engine and progress."""

    def __init__(self, ctx, sel):
        self.ctx = ctx
        self.sel = sel
        self._plan = None
        self.info: list[PassInfo] = []

    def provisional(self):
        """The provisional PCA of a sample of the selection (None: no variance)."""
        ctx = self.ctx
        return single_blas(lambda: ctx.run("PCA sample", provisional_pca, ctx.precision,
                                           plan=ctx.sample))

    @property
    def plan(self):
        if self._plan is None:
            s = self.sel
            self._plan = make_plan(s["filter_start"].to_numpy(np.int64),
                                   s["filter_count"].to_numpy(np.int64),
                                   s["layer_id"].to_numpy(np.int64), whole_layers=True)
        return self._plan

    def run(self, desc, parts, ortho, index, n_orth, any_order=False, names=None) -> dict:
        """One fused pass; ``any_order`` (results independent of the task order): every
        other pass runs backwards, starting on what the page cache holds. ``names``: what
        the pass computes, if not one thing per part (the parts' prefixes)."""
        ctx = self.ctx
        ctx.engine  # noqa: B018 - started before the clock, as before
        plan = reversed_plan(self.plan) if any_order and len(self.info) % 2 else self.plan
        desc = f"pass {len(self.info) + 1}: {desc}"
        t = time.perf_counter()
        r = single_blas(lambda: ctx.map_reduce(
            desc, plan, F.fused_task, {"parts": parts, "ortho": ortho},
            reduce=F.fused_reduce(parts)))
        self.info.append(PassInfo(desc, list(names or [n for n, _, _ in parts]) +
                                  (["orthogonality"] if ortho else []), n_orth,
                                  time.perf_counter() - t))
        return r


__all__ = ["COLUMNS", "AnalyzeResult", "PassInfo", "analyze", "assign_orthogonality"]
