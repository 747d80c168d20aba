"""``filterdb report DB``: one self-contained HTML page about a database (or a selection).

Sections: the findings (sentences with numbers, first on the page), summary, PCA,
coefficient distributions, drift per grouping column, drift against its noise floor, the
health of every model, then each model's detail (collapsed; its figures for the
``model_figures`` most degenerated models only, so the page stays small at the published
647 models). The analyses come from :mod:`filterdb.analysis`
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

from .. import analysis as A
from .. import plots as P
from ..analysis import analyze
from ..errors import FilterDBError
from ..health import database_health, population_bands
from ..health.assess import HealthThresholds, legend, not_assessed_line
from ..health.population import compare_to_population
from ..health.summary import summarise, summarise_groups, worst_first, worst_label
from ..kernels import metrics as M
from ..kernels.drift import depth_bin, depth_bin_labels
from ..kernels.stats import holm
from ..store import Database, open_database
from ..utils import _clean, json_default
from .html import FIGURE_DPI, Report, figure_png, figure_svg
from .model_report import COMPACT_COLUMNS, add_model_blocks, first_filter_layer
from .svg import health_scatter_svg

DRIFT_COLUMNS = ("task", "visual_category", "training_dataset", "architecture", "depth_bin")
RIDGE_COLUMNS = ("task", "visual_category", "depth_bin")
COLUMN_TITLES = {"task": "task", "visual_category": "visual category",
                 "training_dataset": "training data set", "architecture": "architecture",
                 "depth_bin": "depth bin", "model": "model", "format": "format"}
FIGURE_CACHE_VERSION = 3  # 2: the notebook's floor on the density; 3: the findings-first page
MODEL_FIGURE_DPI = 72  # the per-model figures: small files
MODEL_FIGURES = 20  # models whose detail gets figures (the most degenerated first)
WORST_LAYERS = 500  # rows of the page's table of assessed layers (the worst first)
ANNOTATE_MAX = 12  # heat maps print their values up to this many groups (hover beyond)
SMALL_GROUP_RATIO = 100  # a group this many times smaller than the largest is flagged
UNIT = "nats"  # D: KL divergences in natural log
# docs/method.md sections 3-4: the published population's figures (a plausibility
# check, read off the paper's figure where marked "about")
PAPER_EVR = (0.398, 0.183, 0.117, 0.099, 0.066, 0.055, 0.030, 0.028, 0.024)
PAPER_MEDIAN_DRIFT = {"task": 0.11, "visual_category": 0.42, "depth_bin": 0.02}
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
    text = json.dumps(_clean(json.loads(json.dumps(data, default=json_default))))
    text = text.replace("</", "<\\/")
    return f'<script type="application/json" id="filterdb-data">{text}</script>'


def build_report(db, out_path, where: str | None = None, title: str | None = None,
                 columns=DRIFT_COLUMNS, ridge_columns=RIDGE_COLUMNS, models: bool = True,
                 thresholds=None, engine="local", scheduler=None, workers: int = 2,
                 keep_figures: bool = False, quiet: bool = False, figures_dir=None,
                 model_figures: int = MODEL_FIGURES) -> ReportResult:
    """Write the report of database ``db`` (path or open database) restricted to ``where``
    (SQL over the layer and model columns) to ``out_path``.

    ``columns``: the grouping columns of the drift section (``"depth_bin"`` = 10 depth bins);
    ``ridge_columns``: those shown as ridge plots; ``models``: add each model's detail;
    ``model_figures``: how many of them (the most degenerated first) get figures;
    ``figures_dir``: also save every figure there as SVG. Progress goes to stderr unless
    ``quiet``.
    """
    log = _Log(quiet)
    owned = not isinstance(db, Database)
    d = open_database(db) if owned else db
    try:
        res = _build(d, Path(out_path), where, title, tuple(columns), tuple(ridge_columns),
                     models, thresholds, dict(engine=engine, scheduler=scheduler,
                                              workers=workers), keep_figures, log,
                     Path(figures_dir) if figures_dir else None, int(model_figures))
    finally:
        if owned:
            d.close()
    res.seconds = time.perf_counter() - log.t0
    log(f"wrote {res.path} ({res.path.stat().st_size / 1e6:.1f} MB)")
    return res


def _build(db, out, where, title, columns, ridge_columns, with_models, thresholds, eng,
           keep, log, figures_dir=None, model_figures=MODEL_FIGURES) -> ReportResult:
    res = ReportResult(out)
    figs = res.figures if keep else None
    if figures_dir is not None:
        figures_dir.mkdir(parents=True, exist_ok=True)

    salt = hashlib.sha256(json.dumps([FIGURE_CACHE_VERSION, where, repr(thresholds),
                                      list(columns), list(ridge_columns)]).encode()).hexdigest()

    def figure(sec, make, fid, caption, dpi=FIGURE_DPI):
        """Embed ``make()``; its PNG is cached in the database (valid for this data version,
        selection and settings), so an unchanged database's report only re-reads it."""
        key = f"report:figure:{salt[:24]}:{fid}:{dpi}"
        png = None if keep or figures_dir else _cache_get(db, key)
        if not isinstance(png, (bytes, bytearray)):
            fig = make()
            png = figure_png(fig, dpi)
            _cache_put(db, key, png)
            if figs is not None:
                figs[fid] = fig
            if figures_dir is not None:
                (figures_dir / f"{fid}.svg").write_bytes(figure_svg(fig))
            import matplotlib.pyplot as plt  # lazy: start-up time (matplotlib for figures only)

            if figs is None:
                plt.close(fig)
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
    findings = rep.section("findings", "Findings")

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
    if n3 >= 9:  # every pass of the sections below at once (issue 21); they read the caches

        log("analyze: PCA + health + range, histograms of every column (2 passes, cached)")
        analyze(db, where, columns=tuple(dict.fromkeys(columns + ridge_columns + ("model",))),
                thresholds=thresholds, **eng)
        _analysis_sections(rep, db, where, columns, ridge_columns, eng, res, figure, skip, log,
                           layers)
    else:
        for sid, stitle in (("pca", "PCA"), ("distributions", "Distributions"),
                            ("drift", "Drift")):
            skip(rep.section(sid, stitle), f"The selection holds {n3} 3x3 filters: too few "
                 "for a PCA (at least 9 are needed).")

    # -- health ---------------------------------------------------------------------------------
    log("health: per-layer metrics (stored in the database after the first run)")

    hdf = database_health(db, where, thresholds, **eng)
    bands = population_bands(hdf)
    ht = thresholds or HealthThresholds()
    t = _thresholds(ht)
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
        paper = (t.get("rule") or t.get("random_rule")) in (None, "paper")
        svg = health_scatter_svg(
            hdf[a], low_diversity_H=t["low_diversity_H"], sparse_S=t["sparse_S"],
            random_rule=(f"random-like (H ≥ TH(n) − {t['random_margin']:g})" if paper else
                         "random-like (its H in the range of random layers of its n)"))
        sec.add_svg(svg, "health-scatter", caption=(
            "Variance entropy H against sparsity S, one point per assessed layer (hover a "
            "point for its model, layer and metrics). Dashed: the thresholds in use; shaded: "
            "low diversity and sparse, which is degenerated. Random-like layers (vermilion) "
            "depend on their own n, so their rule is not a line here."))
        if figures_dir is not None:
            (figures_dir / "health-scatter.svg").write_text(svg, encoding="utf-8")
        figure(sec, lambda: P.health_by_depth(hdf[a], sparse_S=t["sparse_S"]), "health-depth",
               "Layer metrics over normalised conv depth; black: median per depth bin; "
               f"dashed: H / TH = 1 and the sparse threshold S = {t['sparse_S']:g}.")
    else:
        skip(sec, "No assessed layer in the selection: no health figures.")
    head, tail = M.split_names(M.names(table=True))  # the registry's table metrics
    cols = [c for c in ("model", "name", "kernel", "conv_depth_norm", "n") + head
            + ("random_mean", "p_random", "random_paper") + tail
            + ("random", "low_diversity", "sparse", "degenerated", "reason") if c in hdf]
    shown, n_assessed = _worst_layers(hdf[a], WORST_LAYERS)
    sec.add_heading("Assessed layers, worst first" if len(shown) < n_assessed
                    else "Assessed layers")
    sec.add_table(shown[cols + ["worst at"]].reset_index(drop=True), "health-layers",
                  highlight=shown["degenerated"].to_numpy(bool),
                  caption=(f"The {len(shown):,} worst of {n_assessed:,} assessed layers "
                           "(each model's detail below has all of its layers)"
                           if len(shown) < n_assessed else "Every assessed layer")
                  + " (the others: the line above), worst first as in each model's summary: "
                    "degenerated, then flagged, then the rest, each by its p against random "
                    "layers; degenerated layers highlighted. "
                  + " · ".join(legend(ht)) + ".")
    _findings(findings, db, models, layers, hdf, mh, res, t)

    # -- each model's detail (collapsed) ------------------------------------------------------
    if with_models:
        seen: set = set()
        res.data["model_tables"] = {}
        names = list(dict.fromkeys(hdf["model"]))
        rank = mh.assign(_s=mh["share_degenerated"].fillna(-1)).sort_values(
            ["_s", "degenerated"], ascending=False, kind="stable")["model"].tolist()
        with_figs = set(rank[:max(0, model_figures)])
        log(f"models: the detail of each of {len(names)} models "
            f"(figures for {min(len(names), len(with_figs))})")
        msec = rep.section("models", "Each model", intro=(
            "One collapsed block per model (click to open): its verdict, worst layers and "
            "per-layer table" + (f"; figures for the {len(with_figs)} most degenerated "
                                 "models" if len(names) > len(with_figs) else "; its figures")
            + ". Legend of the tables: " + " · ".join(legend(ht)) + "."))
        lay = layers.set_index("layer_id")
        for i, m in enumerate(names, 1):
            key = _slug(m, seen)
            mdf = hdf[hdf["model"] == m].reset_index(drop=True)
            row = info.loc[m] if m in info.index else None
            meta = "" if row is None else ", ".join(
                f"{COLUMN_TITLES.get(c, c)}: {row[c]}" for c in
                ("task", "visual_category", "training_dataset", "architecture", "format")
                if row.get(c) not in (None, "") and row.get(c) == row.get(c))
            summary = summarise(mdf, thresholds)
            det = msec.details(key, f"Model {m}", summary=f"{summary['verdict']}"
                               + (f" · {meta}" if meta else ""))
            drawn = m in with_figs
            pop = hdf[hdf["model"] != m]
            pct = compare_to_population(mdf, pop) if pop["assessed"].any() else None
            first = _first_layer(db, lay, mdf) if drawn else None
            if drawn and first is None:
                res.skipped.append(f"{m}: no 3x3 filters")
            if drawn:
                table = add_model_blocks(
                    det, key, mdf, summary, bands if pct is not None else None, pct, first,
                    figs, "Its assessed layers (black points; degenerated: vermilion crosses) "
                    "on the percentile bands of all assessed layers of the selection per "
                    "depth bin.",
                    "No 3x3 filters in this model: nothing to show (the database stores 3x3 "
                    "filters only).", add_figure=lambda s_, mk, fid, cap: figure(
                        s_, mk, fid, cap, dpi=MODEL_FIGURE_DPI), columns=COMPACT_COLUMNS,
                    legend_shown=False)
            else:
                table = add_model_blocks(det, key, mdf, summary, None, pct, None, None,
                                         "Figures are drawn for the most degenerated models "
                                         "only; this one's table follows.", "",
                                         add_figure=lambda *a_: None, columns=COMPACT_COLUMNS,
                    legend_shown=False)
            res.data["model_tables"][m] = {"section": key, "verdict": summary["verdict"],
                                           "layers": table.to_dict(orient="list")}
            if i % 50 == 0 or i == len(names):
                log(f"models: {i}/{len(names)}")

    page_data = dict(res.data)
    if len(page_data.get("model_tables", {})) > MODEL_FIGURES:  # the tables are on the page
        page_data["model_tables"] = {m: {k: v for k, v in d.items() if k != "layers"}
                                     for m, d in page_data["model_tables"].items()}
    rep.sections[1].add_text(_json_block(page_data))
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

def _analysis_sections(rep, db, where, columns, ridge_columns, eng, res, figure, skip, log,
                           layers):
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
    figure(sec, lambda: P.mean_filter(mean), "mean-filter",
           "The mean scaled filter (the PCA's centre) as a 3x3 image; the published data "
           "set's is about -0.04 in every position.")
    res.data["pca"] = {"n": int(p.n), "components": comps, "explained_variance_ratio": evr,
                       "mean": mean}

    dsec = rep.section("distributions", "Distributions", intro=(
        "Coefficients of the filters on the global PCA: KDE curves per group and component "
        "(ridge plots; Silverman bandwidth), and the density of the first two coefficients."))
    drift_sec = rep.section("drift", "Drift", intro=(
        f"Drift D between the coefficient distributions of groups (method.md, section 4): "
        f"the symmetric KL divergence per PCA component, in {UNIT}, weighted by the explained "
        "variance ratio; 0 for identical distributions, unbounded above. Heat maps are sorted "
        "by mean drift (depth bins kept in order) and share one colour scale, so their colours "
        "compare across groupings. D grows as a group gets small (its histograms have more "
        "empty bins), so compare groups of similar size, or use the noise floor below."))

    log(f"drift by {', '.join(columns)} (one pass for all columns, cached)")
    summ = A.drift_summary(db, columns, where=where, **eng)
    prov = summ.provenance
    drift_sec.add_text("Computed with: " + A.provenance_text(prov) + ".")
    drift_sec.add_kv(_provenance_items(prov))
    res.data["drift_provenance"] = prov
    box = {}
    res.data["drift"] = {}
    multi = set()
    tops = [np.nanmax(np.where(np.eye(len(r.groups), dtype=bool), np.nan, r.matrix.to_numpy()))
            for r in summ.results.values() if r is not None and len(r.groups) >= 2]
    vmax = float(max(tops)) if tops and np.isfinite(max(tops)) and max(tops) > 0 else None
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
        G = len(r.groups)
        drift_sec.add_heading(f"By {title}")
        figure(drift_sec, lambda: P.drift_heatmap(
            M, r.groups, r.sizes.to_numpy(), order="keep", title=f"Drift by {title}",
            annotate=G <= ANNOTATE_MAX, vmax=vmax, cbar_label=f"drift D ({UNIT})"), fid,
            f"Pairwise drift D ({UNIT}) between the {G} {title} groups"
            + (" (bins of normalised conv depth)" if col == "depth_bin" else
               ", sorted by mean drift") + "; n = 3x3 filters per group"
            + ("; values on hover in the table below" if G > ANNOTATE_MAX else "") + ".")
        sizes = _group_sizes(layers, col, r.groups)
        g = pd.DataFrame({title: r.groups, "models": sizes["models"],
                          "filters": r.sizes.to_numpy(np.int64),
                          f"mean drift ({UNIT})": r.mean_drift.reindex(r.groups).to_numpy()})
        det = drift_sec.details(f"{fid}-values", f"{title}: groups and values",
                                summary=f"{G} groups; hover a cell for its pair and value")
        det.add_heatmap(M, r.groups, f"{fid}-matrix", vmax=vmax, unit=UNIT,
                        annotate=G <= ANNOTATE_MAX,
                        row_notes=[f"{int(n):,} models" for n in sizes["models"]])
        det.add_table(g, f"{fid}-groups", caption=f"Models and 3x3 filters per {title} "
                      "group, and each group's mean drift to the others.")
        warn = _small_group_warning(r.groups, r.sizes.to_numpy(np.int64))
        if warn:
            drift_sec.add_text(warn)
        box[title] = r.upper_triangle()
        res.data["drift"][col] = {"labels": r.groups, "sizes": r.sizes.to_numpy(),
                                  "models": sizes["models"], "matrix": M, "unit": UNIT,
                                  "median": float(np.median(r.upper_triangle()))}
    if box:
        figure(drift_sec, lambda: P.drift_boxplot(box), "drift-box",
               f"Pairwise drifts D ({UNIT}; upper triangle of each matrix) per grouping "
               "column.")

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


def _noise_section(rep, db, where, eng, res, figure, skip, log, n_permutations=None):
    """Drift beside its noise floor: per column, the between-group drift of every pair with
    the within-group model-to-model drift and a permutation p-value
    (:mod:`filterdb.analysis.noise`).
    ``trained`` is the free column our trained zoo sets (trained vs untrained twins)."""
    import dataclasses
    import inspect

    if n_permutations is None:  # the same count as `filterdb drift --noise-floor`
        n_permutations = inspect.signature(A.noise_floor).parameters["n_permutations"].default
    sec = rep.section("noise", "Drift against the noise floor", intro=(
        "Is a drift between two groups more than the spread between models of one group? "
        "Grey: the drift between models of the same group (median and quartiles); points: "
        "the drift of each pair of groups, filled when a permutation test (group labels "
        f"shuffled over the models of the pair, {n_permutations:,} relabellings) gives "
        "p <= 0.05 after Holm's correction for the pairs of that column; orange ticks: the "
        "median drift under that shuffling. Single models with few filters leave many "
        "histogram bins empty, which inflates model-to-model drift: the orange tick, at the "
        "pair's own sample size, is the floor to compare with. The tables give both the "
        "raw p and Holm's."))
    res.data["noise"] = {}
    shown = 0
    for col in NOISE_COLUMNS:
        title = COLUMN_TITLES.get(col, col)
        try:
            nf = A.noise_floor(db, col, where=where, n_permutations=n_permutations,
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
        adjusted = dataclasses.replace(nf, pairs=nf.pairs.assign(  # filled points: Holm's p
            p_value=holm(nf.pairs["p_value"].to_numpy(float))))
        figure(sec, lambda: _noise_figure(adjusted, title), fid,
               f"Drift of each pair of {title} groups against the within-group floor.")
        pairs = nf.pairs[["group_a", "group_b", "drift", "null_median", "p_value"]].copy()
        pairs["p_holm"] = holm(pairs["p_value"].to_numpy(float))
        sec.add_table(pairs.reset_index(drop=True), f"{fid}-pairs",
                      highlight=pairs["p_holm"].to_numpy() <= 0.05,
                      caption=f"Drift D in {UNIT}; pairs with Holm-corrected p <= 0.05 "
                              "highlighted.")
        res.data["noise"][col] = {"pairs": pairs.to_dict(orient="list"),
                                  "n_permutations": nf.n_permutations, "unit": UNIT,
                                  "provenance": nf.drift.provenance}
        shown += 1
    if not shown:
        skip(sec, "No grouping column has two groups of models to compare.")


def _provenance_items(prov: dict) -> dict:
    """The provenance of the drift section as ``key: value`` facts for people."""
    lo, hi = prov["range"]
    items = {"empty bins": f"float32 eps ({prov['floor_eps']:.3g}) on the density "
                           f"({prov['floor']} floor): {prov['floor_rule']}",
             "precision": prov["precision"], "bins": prov["bins"],
             "range": f"[{lo:.6g}, {hi:.6g}] ({prov['range_source']})",
             "weights": prov["weights"] + " (" + ", ".join(f"{v:.3f}" for v in
                                                          prov["weight_values"]) + ")"}
    if "depth_bins" in prov:
        items["depth bins"] = prov["depth_bins"]
    return items


def _noise_figure(nf, title):
    return P.drift_vs_noise(nf, title=f"Drift by {title} against the noise floor")


# -- findings and helpers ---------------------------------------------------------------------

def _thresholds(thresholds) -> dict:
    """The thresholds in use as a dict (the method's defaults where not given)."""
    t = thresholds or HealthThresholds()
    d = t.to_dict() if hasattr(t, "to_dict") else dict(vars(t))
    return {**HealthThresholds().to_dict(), **d}


def _rule_text(t: dict) -> str:
    """The degeneration rule in words, with the thresholds in use."""
    rule = t.get("rule") or t.get("random_rule")
    if rule in (None, "paper"):
        rnd = f"random-like (H ≥ TH(n) − {t['random_margin']:g})"
    else:
        rnd = ("random-like (its H inside the range of H of i.i.d. random layers of the same n "
               f"and kernel: p >= {t['alpha']:g})")
    return (f"A layer is degenerated when {rnd}, or both low in diversity (H < "
            f"{t['low_diversity_H']:g}) and sparse (S ≥ {t['sparse_S']:g}).")


def _group_sizes(layers: pd.DataFrame, col: str, groups) -> dict:
    """Models per drift group (layers owning 3x3 filters), in ``groups`` order."""
    lay = layers[layers["filter_count"].fillna(0) > 0]
    if col == "depth_bin":
        key = pd.Series([depth_bin_labels()[i] for i in
                         depth_bin(lay["conv_depth_norm"].to_numpy(np.float64))],
                        index=lay.index)
    else:
        v = lay[col]
        key = v.map(lambda x: str(int(x)) if isinstance(x, float) and x == x and x.is_integer()
                    else str(x))
    n = lay.assign(_k=key).groupby("_k")["model_id"].nunique()
    return {"models": [int(n.get(str(g), 0)) for g in groups]}


def _small_group_warning(groups, sizes) -> str | None:
    """A sentence naming the groups far smaller than the largest, whose drift their size
    inflates (empty histogram bins), or None."""
    sizes = np.asarray(sizes, np.int64)
    if not len(sizes) or sizes.max() <= 0:
        return None
    small = [(g, int(n)) for g, n in zip(groups, sizes) if n * SMALL_GROUP_RATIO < sizes.max()]
    if not small:
        return None
    names = ", ".join(f"{g} ({n:,} filters)" for g, n in small[:8])
    more = f" and {len(small) - 8} more" if len(small) > 8 else ""
    return (f"**Small groups:** {names}{more} hold under 1/{SMALL_GROUP_RATIO} of the largest "
            f"group's {int(sizes.max()):,} filters. Much of their drift comes from their size "
            "(empty histogram bins), not from different filters; see the noise floor.")


def _worst_layers(df: pd.DataFrame, n: int) -> tuple[pd.DataFrame, int]:
    """The ``n`` worst of the assessed layers ``df``, in the assessment's order
    (:func:`~filterdb.health.summary.worst_first`), each labelled with what it is worst at;
    and how many there are."""
    shown = df.iloc[worst_first(df)[:n]]
    return shown.assign(**{"worst at": [worst_label(r) for r in
                                        shown.to_dict(orient="records")]}), len(df)


def _findings(sec, db, models, layers, hdf, mh, res, t) -> None:
    """The findings: the population, verdicts, the most degenerated models, drifts against
    their noise floor and the PCA against the paper, in sentences with numbers."""
    items = []
    n3 = int(layers["filter_count"].fillna(0).sum())
    fmts = models["format"].fillna("?").value_counts()
    items.append(f"**Population:** {len(models):,} models in {len(fmts)} format(s) ("
                 + ", ".join(f"{k} {v}" for k, v in fmts.items()) + f"), {len(layers):,} conv "
                 f"layers, {n3:,} 3x3 filters.")
    kinds = mh["verdict"].value_counts()  # the verdict classes of summarise_groups
    items.append("**Verdicts:** " + ", ".join(f"{v} {k}" for k, v in kinds.items())
                 + f" (of {len(mh):,} models with conv layers). " + _rule_text(t))
    worst = mh[mh["degenerated"] > 0].assign(_s=lambda d: d["share_degenerated"].fillna(0)) \
        .sort_values(["_s", "degenerated"], ascending=False, kind="stable").head(10)
    if len(worst):
        parts = []
        for r in worst.itertuples():
            why = []
            if getattr(r, "random_like", 0):
                why.append(f"{int(r.random_like)} random-like")
            if getattr(r, "sparse_low_diversity", 0):
                why.append(f"{int(r.sparse_low_diversity)} low-diversity and sparse")
            parts.append(f"`{r.model}` {int(r.degenerated)} of {int(r.assessed)} "
                         f"({r.share_degenerated:.0%}" + (f": {', '.join(why)}" if why else "")
                         + ")")
        items.append(f"**Most degenerated** ({len(worst)} of {int((mh['degenerated'] > 0).sum())}"
                     " models with a degenerated layer): " + "; ".join(parts) + ".")
    else:
        items.append("**No degenerated layer** in the selection.")
    drift = res.data.get("drift", {})
    med = [f"{COLUMN_TITLES.get(c, c)} {d['median']:.3g}"
           + (f" (paper about {PAPER_MEDIAN_DRIFT[c]:g})" if c in PAPER_MEDIAN_DRIFT else "")
           for c, d in drift.items()]
    if med:
        items.append(f"**Median pairwise drift D** ({UNIT}): " + "; ".join(med) + ".")
    noise = res.data.get("noise", {})
    clear, within = [], []
    for c, d in noise.items():
        p = d["pairs"]
        for a, b, ph, dv in zip(p["group_a"], p["group_b"], p["p_holm"], p["drift"]):
            (clear if ph <= 0.05 else within).append((COLUMN_TITLES.get(c, c), a, b, dv))
    if clear or within:
        top = sorted(clear, key=lambda x: -x[3])[:5]
        items.append(f"**Against the noise floor:** {len(clear)} of {len(clear) + len(within)} "
                     "pairs of groups drift apart beyond the spread between models of a group "
                     "(permutation test, Holm-corrected p <= 0.05)"
                     + (": " + "; ".join(f"{c} {a} vs {b} (D {v:.3g})" for c, a, b, v in top)
                        if top else "") + (f"; {len(within)} do not" if within else "") + ".")
    pca = res.data.get("pca")
    if pca is not None:
        evr = np.asarray(pca["explained_variance_ratio"])
        items.append("**PCA:** the first three components explain "
                     + ", ".join(f"{v:.3f}" for v in evr[:3])
                     + " of the variance (paper: " + ", ".join(f"{v:.3f}" for v in PAPER_EVR[:3])
                     + f"); together {evr[:3].sum():.1%} against {sum(PAPER_EVR[:3]):.1%}.")
    res.data["findings"] = items
    sec.add_text("\n".join(f"- {i}" for i in items))
