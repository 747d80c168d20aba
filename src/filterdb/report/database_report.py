"""``filterdb report DB``: one self-contained HTML page about a database (or a selection).

Sections: summary, PCA, coefficient distributions, drift per grouping column, the health of
every model, then one section per model. The analyses come from :mod:`filterdb.analysis`
and :mod:`filterdb.health` (both cache their results in the database), so a second report
of an unchanged database only redraws the figures. What a selection cannot support (a
column with a single group, a model without 3x3 filters) is skipped with a sentence.
"""
from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import plots as P
from ..errors import FilterDBError
from .html import FIGURE_DPI, Report, figure_png
from .model_report import add_model_blocks, first_filter_layer

DRIFT_COLUMNS = ("task", "visual_category", "training_dataset", "architecture", "depth")
RIDGE_COLUMNS = ("task", "visual_category", "depth")
COLUMN_TITLES = {"task": "task", "visual_category": "visual category",
                 "training_dataset": "training data set", "architecture": "architecture",
                 "depth": "depth bin", "model": "model", "format": "format"}
FIGURE_CACHE_VERSION = 1
MODEL_FIGURE_DPI = 100  # the per-model figures: smaller files, same size on the page
MODEL_COLUMNS = ("model", "name", "format", "task", "visual_category", "training_dataset",
                 "architecture", "n_layers", "filters_3x3", "total_filters", "depth_source")


@dataclass
class ReportResult:
    """What :func:`build_report` wrote: the page, the numbers embedded in it (``data``, also
    in the page's ``<script id="filterdb-data">``), the figures (with ``keep_figures``) and
    the sentences of what was skipped."""

    path: Path
    data: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)
    seconds: float = 0.0


class _Log:
    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"report [{time.perf_counter() - self.t0:6.1f} s] {msg}", file=sys.stderr,
                  flush=True)


def _slug(text: str, seen: set) -> str:
    s = re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-") or "x"
    s = "m-" + s
    base, i = s, 2
    while s in seen:
        s, i = f"{base}-{i}", i + 1
    seen.add(s)
    return s


def _json_block(data: dict) -> str:
    from ..cli._common import _clean, _default

    text = json.dumps(_clean(json.loads(json.dumps(data, default=_default))))
    text = text.replace("</", "<\\/")
    return f'<script type="application/json" id="filterdb-data">{text}</script>'


def build_report(db, out_path, where: str | None = None, title: str | None = None,
                 columns=DRIFT_COLUMNS, ridge_columns=RIDGE_COLUMNS, models: bool = True,
                 thresholds=None, engine="local", scheduler=None, workers: int = 2,
                 keep_figures: bool = False, quiet: bool = False) -> ReportResult:
    """Write the report of database ``db`` (path or open database) restricted to ``where``
    (SQL over the layer and model columns) to ``out_path``.

    ``columns``: the grouping columns of the drift section (``"depth"`` = 10 depth bins);
    ``ridge_columns``: those shown as ridge plots; ``models``: add a section per model.
    Progress goes to stderr unless ``quiet``.
    """
    from ..store import Database, open_database

    log = _Log(quiet)
    owned = not isinstance(db, Database)
    d = open_database(db) if owned else db
    try:
        res = _build(d, Path(out_path), where, title, tuple(columns), tuple(ridge_columns),
                     models, thresholds, dict(engine=engine, scheduler=scheduler,
                                              workers=workers), keep_figures, log)
    finally:
        if owned:
            d.close()
    res.seconds = time.perf_counter() - log.t0
    log(f"wrote {res.path} ({res.path.stat().st_size / 1e6:.1f} MB)")
    return res


def _build(db, out, where, title, columns, ridge_columns, with_models, thresholds, eng,
           keep, log) -> ReportResult:
    res = ReportResult(out)
    figs = res.figures if keep else None

    salt = hashlib.sha256(json.dumps([FIGURE_CACHE_VERSION, where, repr(thresholds),
                                      list(columns), list(ridge_columns)]).encode()).hexdigest()

    def figure(sec, make, fid, caption, dpi=FIGURE_DPI):
        """Embed ``make()``; its PNG is cached in the database (valid for this data version,
        selection and settings), so an unchanged database's report only re-reads it."""
        key = f"report:figure:{salt[:24]}:{fid}:{dpi}"
        png = None if keep else _cache_get(db, key)
        if not isinstance(png, (bytes, bytearray)):
            fig = make()
            png = figure_png(fig, dpi)
            _cache_put(db, key, png)
            if figs is not None:
                figs[fid] = fig
        sec.add_figure(png, fid, caption=caption, dpi=dpi)

    def skip(sec, sentence):
        sec.add_text(sentence)
        res.skipped.append(sentence)

    models = db.models()
    layers = db.layers(where)
    if where:
        models = models[models["model_id"].isin(layers["model_id"].unique())]
    if not len(layers):
        raise FilterDBError(f"{db.path}: the selection {where!r} holds no layer" if where
                            else f"{db.path}: the database holds no model")
    n3 = int(layers["filter_count"].fillna(0).sum())
    rep = Report(title or f"filterdb report: {db.path.name}",
                 subtitle=f"`{db.path}`" + (f", selection `{where}`" if where else ""))

    # -- summary ------------------------------------------------------------------------------
    log(f"summary: {len(models)} models, {len(layers)} layers, {n3:,} 3x3 filters")
    sec = rep.section("summary", "Summary")
    sec.add_kv({"models": len(models), "conv layers": len(layers), "3x3 filters": n3,
                "database": str(db.path), "selection": where or "everything",
                "data version": db.data_version})
    res.data["summary"] = {"models": int(len(models)), "layers": int(len(layers)),
                           "filters_3x3": n3}
    for col in ("task", "visual_category", "format"):
        nm = models[col].fillna("(none)").value_counts().rename("models")
        nf = layers.assign(_k=layers[col].fillna("(none)")).groupby("_k")["filter_count"] \
            .sum().astype(np.int64).rename("filters_3x3")
        t = pd.concat([nm, nf], axis=1).fillna(0).astype(np.int64)
        t = t.rename_axis(col).sort_values(["filters_3x3", "models"], ascending=False)
        t = t.reset_index()
        sec.add_heading(f"By {COLUMN_TITLES.get(col, col)}")
        sec.add_table(t, f"by-{col}".replace("_", "-"))
        res.data[f"by_{col}"] = t.to_dict(orient="list")
    sec.add_heading("Models")
    mt = models[[c for c in MODEL_COLUMNS if c in models]].reset_index(drop=True)
    sec.add_table(mt, "models")

    # -- PCA, distributions, drift ------------------------------------------------------------
    if n3 >= 9:
        _analysis_sections(rep, db, where, columns, ridge_columns, eng, res, figure, skip, log)
    else:
        for sid, stitle in (("pca", "PCA"), ("distributions", "Distributions"),
                            ("drift", "Drift")):
            skip(rep.section(sid, stitle), f"The selection holds {n3} 3x3 filters: too few "
                 "for a PCA (at least 9 are needed).")

    # -- health ---------------------------------------------------------------------------------
    log("health: per-layer metrics (stored in the database after the first run)")
    from ..health import database_health, population_bands
    from ..health.assess import HealthThresholds, legend, not_assessed_line, summarise
    from ..health.database import compare_to_population, summarise_groups

    hdf = database_health(db, where, thresholds, **eng)
    bands = population_bands(hdf)
    ht = thresholds or HealthThresholds()
    sec = rep.section("health", "Health of every model", intro=(
        "Degeneration of each conv layer (method: sparsity S, variance entropy H against "
        "the H of i.i.d. random layers of the same size, the paper's threshold TH(n), "
        "orthogonality). A layer is degenerated when random-like or both low in diversity "
        "and sparse. Layers of every kernel larger than 1x1 are assessed, as `filterdb "
        "check` does (kernels other than 3x3 from the metrics stored at ingest). Legend: "
        + " · ".join(legend(ht)) + "."))
    overall = summarise(hdf, ht)
    line = not_assessed_line(overall)
    if line:
        sec.add_text(line[0].upper() + line[1:] + " (not in the layer table).")
    by_model = summarise_groups(hdf, "model", thresholds)
    info = models.set_index("model")
    mh = pd.DataFrame({
        "model": by_model["model"],
        "task": [info["task"].get(m) if m in info.index else None for m in by_model["model"]],
        "layers": by_model["n_layers"], "assessed": by_model["n_assessed"],
        "degenerated": by_model["n_degenerated"], "random_like": by_model["n_random"],
        "sparse_low_diversity": by_model["n_low_diversity_sparse"],
        "random_paper": by_model["n_random_paper"],
        "share_degenerated": by_model["share_degenerated"], "verdict": by_model["verdict"]})
    sec.add_heading("Models")
    sec.add_table(mh, "health-models", highlight=mh["degenerated"].to_numpy() > 0,
                  caption="Models with at least one degenerated layer are highlighted. "
                          "random_paper: layers random-like by the paper's rule. "
                          + legend(ht)[-1] + ".")
    res.data["health_models"] = mh.to_dict(orient="list")
    empty = sorted(set(models["model"]) - set(hdf["model"]))
    if empty:
        sec.add_text(f"{len(empty)} model(s) without 2-D conv layers (not in the tables): "
                     + ", ".join(f"`{m}`" for m in empty) + ".")
    a = hdf["assessed"].to_numpy(bool)
    if a.any():
        figure(sec, lambda: P.health_scatter(hdf[a]), "health-scatter",
               "H / TH against sparsity, one point per assessed layer, coloured by flag.")
        figure(sec, lambda: P.health_by_depth(hdf[a]), "health-depth",
               "Layer metrics over normalised conv depth; black: median per depth bin.")
    else:
        skip(sec, "No assessed layer in the selection: no health figures.")
    sec.add_heading("Layers")
    cols = ["model", "name", "kernel", "conv_depth_norm", "n", "sparsity", "variance_entropy",
            "variance_entropy_norm", "random_mean", "p_random", "random_paper",
            "orthogonality", "random", "low_diversity", "sparse", "degenerated", "reason"]
    shown = hdf[a]
    sec.add_table(shown[cols].reset_index(drop=True), "health-layers",
                  highlight=shown["degenerated"].to_numpy(bool),
                  caption="Every assessed layer of the selection (the others: the line above); "
                          "degenerated layers highlighted. " + " · ".join(legend(ht)) + ".")

    # -- one section per model ------------------------------------------------------------------
    if with_models:
        seen: set = set()
        res.data["model_tables"] = {}
        names = list(dict.fromkeys(hdf["model"]))
        log(f"models: a section for each of {len(names)} models")
        lay = layers.set_index("layer_id")
        for i, m in enumerate(names, 1):
            key = _slug(m, seen)
            mdf = hdf[hdf["model"] == m].reset_index(drop=True)
            row = info.loc[m] if m in info.index else None
            meta = "" if row is None else ", ".join(
                f"{COLUMN_TITLES.get(c, c)}: {row[c]}" for c in
                ("task", "visual_category", "training_dataset", "architecture", "format")
                if row.get(c) not in (None, "") and row.get(c) == row.get(c))
            msec = rep.section(key, f"Model {m}", intro=meta or None)
            summary = summarise(mdf, thresholds)
            pop = hdf[hdf["model"] != m]
            pct = compare_to_population(mdf, pop) if pop["assessed"].any() else None
            first = _first_layer(db, lay, mdf)
            if first is None:
                res.skipped.append(f"{m}: no 3x3 filters")
            table = add_model_blocks(
                msec, key, mdf, summary, bands if pct is not None else None, pct, first, figs,
                "Its assessed layers (points; degenerated: red crosses) on the percentile "
                "bands of all assessed layers of the selection per depth bin.",
                "No 3x3 filters in this model: nothing to show (the database stores 3x3 "
                "filters only).", add_figure=lambda s_, mk, fid, cap: figure(
                    s_, mk, fid, cap, dpi=MODEL_FIGURE_DPI))
            res.data["model_tables"][m] = {"section": key, "verdict": summary["verdict"],
                                           "layers": table.to_dict(orient="list")}
            if i % 10 == 0 or i == len(names):
                log(f"models: {i}/{len(names)}")

    rep.sections[0].add_text(_json_block(res.data))
    log("writing the page")
    rep.write(out)
    return res


def _cache_get(db, key):
    try:
        return db.cache_get(key)
    except (sqlite3.Error, FilterDBError):
        return None


def _cache_put(db, key, value) -> None:
    try:
        db.cache_put(key, value)
    except (sqlite3.Error, OSError):
        pass  # a read-only database: no cache, same page


def _first_layer(db, lay: pd.DataFrame, mdf: pd.DataFrame):
    """``(weight, name, note)`` of the model's first 3x3 layer read from the database, or
    None when it has no 3x3 filters."""
    sub = lay.loc[mdf["layer_id"].to_numpy()]
    sub = sub[(sub["kh"] == 3) & (sub["kw"] == 3) & (sub["filter_count"].fillna(0) > 0)]
    if not len(sub):
        return None
    lid = first_filter_layer(sub)
    r = sub.loc[lid]
    f = db.layer_filters(int(lid))
    c_out = int(r["c_out"])
    w = f.reshape(c_out, len(f) // c_out, 3, 3)
    allk = lay.loc[mdf["layer_id"].to_numpy()]
    first_any = int(allk["conv_depth"].min())
    where = ("the first conv stage" if int(r["conv_depth"]) == first_any
             else f"conv depth {int(r['conv_depth'])}: the first stage with 3x3 filters")
    note = (f"Filters of `{r['name']}` ({where}), each scaled to its own absolute peak; one "
            "block of input-channel filters per output channel.")
    return w, str(r["name"]), note


# -- the analysis sections (filterdb.analysis) ------------------------------------------------

def _analysis_sections(rep, db, where, columns, ridge_columns, eng, res, figure, skip, log):
    from .. import analysis as A

    eng = dict(eng, progress=True)
    log("PCA of the scaled 3x3 filters (cached in the database)")
    p = A.pca(db, where=where, **eng)
    comps = np.asarray(p.components)
    evr = np.asarray(p.explained_variance_ratio)
    mean = np.asarray(p.mean)
    sec = rep.section("pca", "PCA", intro=(
        f"Principal components of the {int(p.n):,} 3x3 filters of the selection, each scaled "
        "by its absolute peak (sign fixed so that the largest-magnitude entry is positive)."))
    figure(sec, lambda: P.eigen_images(comps, evr), "eigen-images",
           "The eigen-images (components as 3x3) with their explained variance ratio.")
    figure(sec, lambda: P.cumulative_evr(evr), "evr",
           "Explained variance ratio per component and cumulative.")
    sec.add_heading("Mean scaled filter")
    sec.add_table(pd.DataFrame(mean.reshape(3, 3), columns=["col 0", "col 1", "col 2"]),
                  "pca-mean", sortable=False, float_format="{:.4f}")
    res.data["pca"] = {"n": int(p.n), "components": comps, "explained_variance_ratio": evr,
                       "mean": mean}

    dsec = rep.section("distributions", "Distributions", intro=(
        "Coefficients of the filters on the global PCA: KDE curves per group and component "
        "(ridge plots; Silverman bandwidth), and the density of the first two coefficients."))
    drift_sec = rep.section("drift", "Drift", intro=(
        "Drift D between the coefficient distributions of groups: the symmetric KL "
        "divergence per component, weighted by the explained variance ratio. Heat maps are "
        "sorted by mean drift (depth bins kept in order); n = 3x3 filters per group."))

    log(f"drift by {', '.join(columns)} (one pass for all columns, cached)")
    summ = A.drift_summary(db, columns, where=where, **eng)
    box = {}
    res.data["drift"] = {}
    multi = set()
    for col in columns:
        title = COLUMN_TITLES.get(col, col)
        r = summ.results.get(col)
        if r is None or len(r.groups) < 2:
            only = "" if r is None else f" ({r.groups[0]})"
            skip(drift_sec, f"By {title}: the selection holds "
                 f"{'no labelled group' if r is None else 'a single group' + only}, so there "
                 "is no drift to show.")
            continue
        multi.add(col)
        M = r.matrix.to_numpy()
        fid = f"drift-{col}".replace("_", "-")
        figure(drift_sec, lambda: P.drift_heatmap(M, r.groups, r.sizes.to_numpy(), order="keep",
                                          title=f"Drift by {title}"), fid,
               f"Pairwise drift between the {len(r.groups)} {title} groups"
               + (" (bins of normalised conv depth)." if col == "depth" else
                  ", sorted by mean drift."))
        box[title] = r.upper_triangle()
        res.data["drift"][col] = {"labels": r.groups, "sizes": r.sizes.to_numpy(),
                                  "matrix": M}
    if box:
        figure(drift_sec, lambda: P.drift_boxplot(box), "drift-box",
               "Pairwise drifts (upper triangle of each matrix) per grouping column.")

    _noise_section(rep, db, where, eng, res, figure, skip, log)

    first = True
    for col in ridge_columns:
        title = COLUMN_TITLES.get(col, col)
        if col in columns and col not in multi:
            skip(dsec, f"By {title}: a single group, no ridge plot.")
            continue
        log(f"distributions by {title}")
        dist = A.distributions(db, by=col, where=where, hist2d_bins=256 if first else 0, **eng)
        if len(dist.groups) < 2 and col not in columns:
            skip(dsec, f"By {title}: a single group, no ridge plot.")
            continue
        figure(dsec, lambda: P.ridge_plot(dist.grid, dist.kde, dist.groups, dist.sizes.to_numpy(),
                                  title=f"Coefficients by {title}"),
               f"ridge-{col}".replace("_", "-"),
               f"KDE of each PCA coefficient per {title} group.")
        if first and dist.hist2d is not None:
            h2, rng2 = dist.hist2d, dist.range
            first = False
    if first:
        log("c0-c1 density")
        dist = A.distributions(db, by=None, where=where, hist2d_bins=256, **eng)
        h2, rng2 = dist.hist2d, dist.range
    figure(dsec, lambda: P.density_c0_c1(h2, *rng2), "c0-c1",
           "Filters in the plane of the first two coefficients (log density, 256 x 256 bins "
           "over the shared range).")


NOISE_COLUMNS = ("visual_category", "task", "trained")


def _noise_section(rep, db, where, eng, res, figure, skip, log, n_permutations=500):
    """Drift beside its noise floor: per column, the between-group drift of every pair with
    the within-group model-to-model drift and a permutation p-value (:mod:`filterdb.noise`).
    ``trained`` is the free column our trained zoo sets (trained vs untrained twins)."""
    from .. import noise as N

    sec = rep.section("noise", "Drift against the noise floor", intro=(
        "Is a drift between two groups more than the spread between models of one group? "
        "Grey: the drift between models of the same group (median and quartiles); points: "
        "the drift of each pair of groups, filled when a permutation test (group labels "
        f"shuffled over the models of the pair, {n_permutations} relabellings) gives "
        "p <= 0.05; orange ticks: the median drift under that shuffling. Single models with "
        "few filters leave many histogram bins empty, which inflates model-to-model drift: "
        "the orange tick, at the pair's own sample size, is the floor to compare with."))
    res.data["noise"] = {}
    shown = 0
    for col in NOISE_COLUMNS:
        title = COLUMN_TITLES.get(col, col)
        try:
            nf = N.noise_floor(db, col, where=where, n_permutations=n_permutations,
                               engine=eng.get("engine", "local"),
                               scheduler=eng.get("scheduler"))
        except FilterDBError as e:
            if col != "trained":
                skip(sec, f"By {title}: no noise floor ({e}).")
            continue
        if len(nf.drift.groups) < 2:
            if col != "trained":
                skip(sec, f"By {title}: a single group, no pairs to test.")
            continue
        log(f"noise floor by {title}")
        fid = f"noise-{col}".replace("_", "-")
        figure(sec, lambda: _noise_figure(nf, title), fid,
               f"Drift of each pair of {title} groups against the within-group floor.")
        pairs = nf.pairs[["group_a", "group_b", "drift", "null_median", "p_value"]]
        sec.add_table(pairs.reset_index(drop=True), f"{fid}-pairs",
                      highlight=pairs["p_value"].to_numpy() <= 0.05,
                      caption="Pairs with p <= 0.05 highlighted.")
        res.data["noise"][col] = {"pairs": pairs.to_dict(orient="list"),
                                  "n_permutations": nf.n_permutations}
        shown += 1
    if not shown:
        skip(sec, "No grouping column has two groups of models to compare.")


def _noise_figure(nf, title):
    return P.drift_vs_noise(nf, title=f"Drift by {title} against the noise floor")
