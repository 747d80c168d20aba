"""Drift against its noise floor: within-group model-to-model drift and a permutation test
(issue 7; the drift itself is docs/method.md, section 4).

:func:`noise_floor` bins the selection once with the *models* as groups (the histogram
pass of :func:`filterdb.analysis.drift`, same PCA, same shared range, cached in the
database); everything else works in memory on the per-model counts ``(M, 9, bins)``:

- a group's counts are the sum of its models' counts, so the between-group matrix is
  exactly :func:`filterdb.analysis.drift`'s;
- **within-group floor**: the drift between pairs of models of one group (every pair, or
  with ``within=COLUMNS`` only the pairs that agree on those columns: the replicates,
  e.g. ``within=["architecture", "x_width", "x_depth", "x_trained"]`` keeps the pairs of a
  trained zoo that differ only in their seed);
- **permutation test** per pair of groups (a, b): the models of a and b are pooled and
  relabelled at random, keeping ``n_a`` and ``n_b``; the pair's drift is recomputed from the
  summed counts. ``p = (1 + #{D_perm >= D_obs}) / (1 + n_permutations)``. When the number
  of distinct relabellings ``C(n_a + n_b, n_a)`` is at most ``n_permutations`` (and
  ``exact="auto"``), all of them are enumerated instead: ``p = #{D >= D_obs} / C`` (the
  observed labelling counted once), the exact permutation p-value.

Random relabellings of pair ``(i, j)`` (``i < j`` in sorted group order) come from
``np.random.default_rng([seed, i, j])``: ``rng.permuted(np.tile(np.arange(n), (N, 1)),
axis=1)``, the first ``n_a`` positions of each row going to group a (models of a, then of
b, each in sorted model order). Results are deterministic for a seed and do not depend on
which other pairs exist.

``by`` must be constant within each model (a model column such as task, visual_category,
architecture, or a free ``x_`` column of the models' ``extra`` JSON, e.g. ``x_trained``);
models with a NULL ``by`` are left out of the groups (they still count in the PCA and the
range). Depth bins vary within models and have no model-level noise floor.

Caveat: a single model's histogram is sparser than a group's, so model-to-model drift is
inflated by the eps floor of empty bins (the notebook's floor on the density, as
everywhere: :func:`filterdb.kernels.hist.probabilities`); the permutation null
(``null_median`` per pair) is the sample-size-matched floor, and the p-value is the
calibrated answer.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import FilterDBError
from ..kernels import hist as _hist
from ..kernels.drift import drift_matrix, resolve_weights
from .context import DEPTH_BIN, analysis_context, norm_where, sort_key
from .drift import DriftResult, drift_result

__all__ = ["noise_floor", "NoiseFloor", "pair_drift", "permutation_pvalue", "within_pairs"]

TIE_RTOL = 1e-9  # D_perm >= D_obs * (1 - TIE_RTOL) counts as "at least as large"


# ---- pure functions -----------------------------------------------------------------------

def pair_drift(A, B, w, edges) -> np.ndarray:
    """Drift between count histograms ``A`` and ``B`` ``(..., 9, bins)`` over the bin
    ``edges`` (probabilities as the notebook's, :func:`filterdb.kernels.hist.probabilities`),
    weights ``w`` (9,) -> ``(...)``."""
    P, Q = _hist.probabilities(A, edges), _hist.probabilities(B, edges)
    return ((P - Q) * (np.log(P) - np.log(Q))).sum(axis=-1) @ np.asarray(w, np.float64)


def _assignments(n: int, n_a: int, n_permutations: int, rng_seed, exact) -> tuple:
    """Indicator matrix ``(K, n)`` (1: the model goes to group a) and whether it is the
    exhaustive enumeration."""
    n_assign = math.comb(n, n_a)
    if exact is True or (exact == "auto" and n_assign <= n_permutations):
        if n_assign > 1_000_000:
            raise FilterDBError(f"exact permutation test: {n_assign:,} relabellings is too "
                                "many; use exact=False")
        ind = np.zeros((n_assign, n))
        for k, c in enumerate(itertools.combinations(range(n), n_a)):
            ind[k, list(c)] = 1.0
        return ind, True
    rng = np.random.default_rng(rng_seed)
    perm = rng.permuted(np.tile(np.arange(n), (int(n_permutations), 1)), axis=1)
    ind = np.zeros((int(n_permutations), n))
    np.put_along_axis(ind, perm[:, :n_a], 1.0, axis=1)
    return ind, False


def permutation_pvalue(counts_a, counts_b, w, edges, n_permutations: int = 1000, rng_seed=0,
                       exact="auto") -> dict:
    """Permutation test of the drift between two groups of models.

    ``counts_a`` ``(n_a, 9, bins)`` and ``counts_b`` ``(n_b, 9, bins)``: the models' counts
    over the bin ``edges``.
    Returns ``{"drift", "p_value", "n", "exact", "null_median"}`` (``n``: relabellings
    drawn, or enumerated when ``exact``).
    """
    ca = np.asarray(counts_a, np.float64)
    cb = np.asarray(counts_b, np.float64)
    n_a, n_b = len(ca), len(cb)
    C = np.concatenate([ca, cb]).reshape(n_a + n_b, -1)
    shape = ca.shape[1:]
    total = C.sum(axis=0)
    d_obs = float(pair_drift(ca.sum(axis=0), cb.sum(axis=0), w, edges))
    ind, is_exact = _assignments(n_a + n_b, n_a, n_permutations, rng_seed, exact)
    A = ind @ C
    d = pair_drift(A.reshape(-1, *shape), (total - A).reshape(-1, *shape), w, edges)
    hits = int((d >= d_obs * (1 - TIE_RTOL)).sum())
    p = hits / len(d) if is_exact else (1 + hits) / (1 + len(d))
    return {"drift": d_obs, "p_value": p, "n": len(d), "exact": is_exact,
            "null_median": float(np.median(d))}


def within_pairs(counts, groups, keys, w, edges) -> pd.DataFrame:
    """Model-to-model drift inside each group.

    ``counts`` ``(M, 9, bins)`` over the bin ``edges``; ``groups`` (M,) group label per
    model (None: no group); ``keys`` (M,) a hashable replicate key per model (pairs need
    equal keys; None: never paired). Returns rows ``group, a, b, drift`` with ``a < b``
    model indices.
    """
    rows = []
    groups = list(groups)
    for g in dict.fromkeys(x for x in groups if x is not None):
        idx = [i for i, x in enumerate(groups) if x == g]
        if len(idx) < 2:
            continue
        D = drift_matrix(_hist.probabilities(np.asarray(counts)[idx], edges), w)
        for s, t in itertools.combinations(range(len(idx)), 2):
            if keys[idx[s]] is not None and keys[idx[s]] == keys[idx[t]]:
                rows.append((g, idx[s], idx[t], float(D[s, t])))
    return pd.DataFrame(rows, columns=["group", "a", "b", "drift"])


# ---- the result -------------------------------------------------------------------------

@dataclass
class NoiseFloor:
    """Between-group drift beside the within-group floor and permutation p-values."""

    drift: DriftResult  # the between-group matrix (= analysis.drift), display order
    models: pd.DataFrame  # model, group, filters, + the within columns
    within: pd.DataFrame  # per group: models, pairs, median, q25, q75, min, max
    within_pairs: pd.DataFrame  # group, model_a, model_b, drift
    pairs: pd.DataFrame  # group_a, group_b, drift, floor_a, floor_b, null_median, p_value, n, exact
    within_columns: list
    n_permutations: int
    seed: int
    extra: dict = field(default_factory=dict)

    @property
    def by(self) -> str:
        return self.drift.by

    @property
    def groups(self) -> list:
        return self.drift.groups

    @property
    def matrix(self) -> pd.DataFrame:
        return self.drift.matrix

    @property
    def p_values(self) -> pd.DataFrame:
        """``(G, G)`` p-values in the matrix's order (NaN on the diagonal)."""
        g = self.groups
        P = pd.DataFrame(np.nan, index=self.matrix.index, columns=self.matrix.columns)
        for r in self.pairs.itertuples():
            P.iloc[g.index(r.group_a), g.index(r.group_b)] = r.p_value
            P.iloc[g.index(r.group_b), g.index(r.group_a)] = r.p_value
        return P

    @property
    def summary(self) -> dict:
        """Median between-group drift vs median within-group (model-to-model) drift."""
        up = self.drift.upper_triangle()
        b = float(np.median(up)) if len(up) else float("nan")
        wv = self.within_pairs["drift"].to_numpy()
        wm = float(np.median(wv)) if len(wv) else float("nan")
        pv = self.pairs["p_value"].to_numpy()
        return {"by": self.by, "between_median": b, "within_median": wm,
                "ratio": b / wm if wm > 0 else float("nan"),
                "null_median": float(np.median(self.pairs["null_median"])) if len(pv)
                else float("nan"),
                "pairs": int(len(pv)), "significant_0.05": int((pv <= 0.05).sum()),
                "within_pairs": int(len(wv))}

    def to_dict(self) -> dict:
        def clean(v):
            return None if isinstance(v, float) and not np.isfinite(v) else v

        within = {r.group: {k: clean(getattr(r, k)) for k in
                            ("models", "pairs", "median", "q25", "q75", "min", "max")}
                  for r in self.within.itertuples()}
        P = self.p_values.to_numpy()
        return {"by": self.by, "where": self.drift.where, "groups": self.groups,
                "sizes": [int(v) for v in self.drift.sizes],
                "matrix": self.matrix.to_numpy().tolist(),
                "within": within,
                "p_values": [[None if not np.isfinite(x) else float(x) for x in row]
                             for row in P],
                "n_permutations": self.n_permutations, "seed": self.seed,
                "within_columns": list(self.within_columns),
                "pairs": [{k: clean(v.item() if hasattr(v, "item") else v)
                           for k, v in r.items()} for r in self.pairs.to_dict("records")],
                "summary": {k: clean(v) for k, v in self.summary.items()},
                "bins": self.drift.bins, "range": list(self.drift.range),
                "weights": self.drift.weights_name, "precision": self.drift.precision,
                "floor": self.drift.provenance["floor"], "provenance": self.drift.provenance}


# ---- model-level columns -----------------------------------------------------------------

def _model_values(layers: pd.DataFrame, col: str) -> pd.Series:
    """One value per model (index: ``model``) of a layer-view column, or of a free column
    ``x_NAME`` / ``NAME`` of the models' ``extra`` JSON. Raises if it varies within a model."""
    if col == DEPTH_BIN:
        raise FilterDBError("depth bins vary within models: the noise floor needs a "
                            "per-model column")
    if col in layers.columns:
        vals = layers[["model", col]].dropna()
        n = vals.drop_duplicates().groupby("model").size()
        if (n > 1).any():
            bad = n[n > 1].index[0]
            raise FilterDBError(f"{col!r} varies within model {bad!r}: the noise floor needs "
                                "a per-model column (task, visual_category, architecture, "
                                "model, x_...)")
        s = vals.drop_duplicates("model").set_index("model")[col]
        return s.reindex(layers["model"].unique())
    key = col[2:] if col.startswith("x_") else col
    ex = layers.drop_duplicates("model").set_index("model")["extra"]
    out, found = {}, False
    for m, e in ex.items():
        try:
            d = json.loads(e) if isinstance(e, str) and e else {}
        except ValueError:
            d = {}
        v = d.get(key) if isinstance(d, dict) else None
        found |= v is not None
        out[m] = None if v is None else (v if isinstance(v, (str, int, float)) else
                                         json.dumps(v, sort_keys=True))
    if not found:
        cols = ", ".join(c for c in layers.columns)
        raise FilterDBError(f"unknown column {col!r}: not a layer column ({cols}) nor a free "
                            f"column of the selected models' extra")
    return pd.Series(out, dtype=object)


def _selected_layers(ctx) -> pd.DataFrame:
    """The selected layers owning 3x3 filters, every layer-view column."""
    ctx.layers  # noqa: B018 - raises on an empty selection
    df = ctx.db.layers(ctx.where)
    return df[df["filter_count"].fillna(0).astype(np.int64) > 0].reset_index(drop=True)


def _as_list(within) -> list:
    if within is None:
        return []
    if isinstance(within, str):
        return [c.strip() for c in within.split(",") if c.strip()]
    return list(within)


# ---- the analysis ------------------------------------------------------------------------

def noise_floor(db, by, where=None, bins: int = 70, range=None,
                weights="evr", within=None, n_permutations: int = 1000, seed: int = 0,
                exact="auto", engine="local", scheduler=None, *, workers: int = 2,
                progress=None, cache: bool = True, recompute: bool = False,
                precision: str = "float32") -> NoiseFloor:
    """Between-group drift of ``by``, the within-group model-to-model floor and a
    permutation p-value per pair of groups (see the module docstring).

    ``within``: columns (a list or ``"a,b"``) on which two models of a group must agree to
    be compared (replicates); None compares every pair of models of a group.
    ``exact``: ``"auto"`` (enumerate when there are at most ``n_permutations``
    relabellings), True or False.
    """
    resolve_weights(weights, np.ones(9) / 9)
    wcols = _as_list(within)
    n_permutations = int(n_permutations)
    if n_permutations < 1:
        raise FilterDBError(f"n_permutations must be >= 1, got {n_permutations}")
    if exact not in ("auto", True, False):
        raise FilterDBError(f"exact must be 'auto', True or False, got {exact!r}")
    with analysis_context(db, where, engine, scheduler, workers, progress, cache,
                          precision, recompute) as ctx:
        layers = _selected_layers(ctx)
        byv = _model_values(layers, by)
        wv = {c: _model_values(layers, c) for c in wcols}
        p, rng, got = ctx.shared_passes(["model"], range, bins)
        mlabels, mcounts = got["model"]
    filters = layers.groupby("model")["filter_count"].sum()
    models = pd.DataFrame({"model": mlabels})
    raw = [byv.get(m) for m in mlabels]
    raw = [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in raw]
    uniq = sorted(set(v for v in raw if v is not None), key=sort_key)
    if not uniq:
        raise FilterDBError(f"no groups: every selected model has a NULL {by!r}")
    labels = [str(v) for v in uniq]
    code = {v: i for i, v in enumerate(uniq)}
    gcode = np.array([-1 if v is None else code[v] for v in raw], np.int64)
    models["group"] = [None if c < 0 else labels[c] for c in gcode]
    models["filters"] = [int(filters[m]) for m in mlabels]
    for c in wcols:
        models[c] = [wv[c].get(m) for m in mlabels]
    G = len(labels)
    gcounts = np.zeros((G, *mcounts.shape[1:]), np.int64)
    np.add.at(gcounts, gcode[gcode >= 0], mcounts[gcode >= 0])
    sizes = pd.Series(np.bincount(gcode[gcode >= 0], weights=models["filters"].to_numpy()
                                  [gcode >= 0], minlength=G).astype(np.int64),
                      index=pd.Index(labels, name=by), name="filters")
    res = drift_result(by, labels, gcounts, sizes, p, rng, bins, weights,
                       norm_where(where), precision, range is not None)
    w = res.weights

    # within-group floor
    def key(i):
        vals = tuple(models.at[i, c] for c in wcols)
        return None if any(v is None or (isinstance(v, float) and np.isnan(v))
                           for v in vals) else vals
    keys = [key(i) for i in np.arange(len(models))]
    wp = within_pairs(mcounts, models["group"].tolist(), keys, w, res.edges)
    wpairs = pd.DataFrame({"group": wp["group"],
                           "model_a": [mlabels[i] for i in wp["a"]],
                           "model_b": [mlabels[i] for i in wp["b"]],
                           "drift": wp["drift"]})
    rows = []
    for g in labels:
        d = wpairs.loc[wpairs["group"] == g, "drift"].to_numpy()
        q = np.percentile(d, [0, 25, 50, 75, 100]) if len(d) else [np.nan] * 5
        rows.append((g, int((models["group"] == g).sum()), len(d), q[2], q[1], q[3], q[0], q[4]))
    wtab = pd.DataFrame(rows, columns=["group", "models", "pairs", "median", "q25", "q75",
                                       "min", "max"]).set_index("group")

    # permutation test per pair
    members = [np.flatnonzero(gcode == i) for i in np.arange(G)]
    M = res.matrix
    prow = []
    for i, j in itertools.combinations(np.arange(G).tolist(), 2):
        t = permutation_pvalue(mcounts[members[i]], mcounts[members[j]], w, res.edges,
                               n_permutations, [int(seed), i, j], exact)
        a, b = labels[i], labels[j]
        prow.append((a, b, float(M.loc[a, b]), wtab.at[a, "median"], wtab.at[b, "median"],
                     t["null_median"], t["p_value"], t["n"], t["exact"]))
    pairs = pd.DataFrame(prow, columns=["group_a", "group_b", "drift", "floor_a", "floor_b",
                                        "null_median", "p_value", "n", "exact"])
    return NoiseFloor(res, models, wtab.reset_index(), wpairs, pairs, wcols, n_permutations,
                      int(seed))
