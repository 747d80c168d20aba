"""The health of one model as report blocks: its per-layer table (flags highlighted), its
layers on the population's percentile bands, its first-layer filters and the verdict.

Used by ``filterdb check MODEL --html`` (:func:`write_check_html`, from a model file) and by
the database report (one section per model, from the database's stored metrics).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import plots as P
from ..health import compare_to_population, database_health, population_bands
from ..health.assess import FLAGS, HealthThresholds, legend, not_assessed_line
from ..kernels import metrics as M
from ..store import open_database
from .html import Report

# The per-layer table (assessed layers): keys of ``filterdb check --json``'s layers; the
# metrics and their labels are the registry's (filterdb.kernels.metrics), the random-layer
# columns after H / TH.
_HEAD, _TAIL = M.split_names(M.names())
TABLE_COLUMNS = (("name", "op", "kernel", "conv_depth", "conv_depth_norm", "n") + _HEAD
                 + ("random_mean", "random_sd", "p_random", "random_paper") + _TAIL
                 + ("flags", "reason"))
PERCENTILE_COLUMNS = {s.name: f"{s.label} percentile" for s in M.specs(headline=True)
                      if s.percentile}
# the compact table of each model's detail in the database report
_HEAD, _TAIL = M.split_names(M.names(table=True))
COMPACT_COLUMNS = (("name", "kernel", "conv_depth_norm", "n") + _HEAD + ("p_random",) + _TAIL
                   + ("flags", "reason"))


def flags_text(df: pd.DataFrame) -> list[str]:
    """The raised flags of each row, comma-separated (``""`` when none)."""
    present = [f for f in FLAGS if f in df]
    return [",".join(f for f in present if bool(r[f])) for _, r in df[present].iterrows()]


def layer_table(df: pd.DataFrame, percentiles=None, columns=TABLE_COLUMNS) -> pd.DataFrame:
    """The per-layer table shown in the report: :data:`TABLE_COLUMNS` from a
    :func:`~filterdb.health.model_health` or :func:`~filterdb.health.database_health` table,
    plus each metric's percentile among comparable population layers when given (a list of
    :func:`~filterdb.health.population.compare_to_population` results)."""
    out = pd.DataFrame({c: df[c].to_numpy() for c in columns if c in df})
    out["flags"] = flags_text(df)
    out = out[[c for c in columns if c in out]]
    if percentiles is not None:
        for m, label in PERCENTILE_COLUMNS.items():
            out[label] = [np.nan if p is None else p.get(m, np.nan) for p in percentiles]
    return out.reset_index(drop=True)


def first_filter_layer(layers: pd.DataFrame):
    """Index label of the first layer (lowest conv depth, then order) whose kernel is larger
    than 1x1 and that holds filters; None when there is none. ``layers`` needs ``kh``,
    ``kw``, ``conv_depth`` and ``n_filters`` (or ``n``)."""
    n = layers["n_filters"] if "n_filters" in layers else layers["n"]
    ok = (layers["kh"] * layers["kw"] > 1) & (n > 0)
    if not ok.any():
        return None
    cand = layers[ok]
    return cand.sort_values("conv_depth", kind="stable").index[0]


def add_model_blocks(sec, key: str, df: pd.DataFrame, summary: dict, bands=None,
                     percentiles=None, first_layer=None, figures: dict | None = None,
                     bands_note: str | None = None,
                     no_filters_note: str = "No layer with a kernel larger than 1x1: no "
                                            "filters to show.",
                     add_figure=None, columns=TABLE_COLUMNS,
                     legend_shown: bool = True) -> pd.DataFrame:
    """Add a model's verdict, health figures, first-layer filters and per-layer table to
    ``sec``; figure and table ids are prefixed with ``key``. ``first_layer``: ``(weight,
    name, note)`` or None; ``bands``: :func:`~filterdb.health.population_bands` or None.
    ``add_figure(section, make, id, caption)`` embeds ``make()`` (default: render it now;
    the database report passes one that caches the PNG). ``legend_shown=False``: no legend
    here (the database report gives it once, above every model). Returns the table shown."""
    if add_figure is None:
        def add_figure(s, make, fid, caption):
            fig = make()
            s.add_figure(fig, fid, caption=caption)
            if figures is not None:
                figures[fid] = fig
    share = summary["share_degenerated"]
    t = summary.get("thresholds") or {}
    sec.add_kv({"verdict": summary["verdict"], "conv layers": summary["n_layers"],
                "assessed layers": summary["n_assessed"],
                "degenerated layers": summary["n_degenerated"],
                "share degenerated": "–" if share != share else f"{share:.1%}",
                "randomness rule": t.get("rule", "calibrated"),
                "random-like by the paper's rule": summary.get("n_random_paper", 0)})
    line = not_assessed_line(summary)
    if line:
        sec.add_text(line[0].upper() + line[1:] + " (not in the table).")
    if summary["worst_layers"]:  # (the reasons are in the table when the legend is elsewhere)
        sec.add_text("Worst layers: " + "; ".join(
            f"`{w['name']}`: {w['label']}" + (f" ({w['reason']})" if w["reason"] and legend_shown
                                              else "")
            for w in summary["worst_layers"]))
    if legend_shown:
        sec.add_text("Legend: " + " · ".join(legend(_thresholds(t))) + ".")
    assessed = df["assessed"].to_numpy(bool) if len(df) else np.zeros(0, bool)
    if bands is not None and assessed.any() and bands["p50"].notna().any():
        add_figure(sec, lambda: P.model_health_vs_population(
            df[assessed], bands, metrics=list(PERCENTILE_COLUMNS),
            title="Its layers against the population"), f"{key}-population", bands_note or (
            "Each assessed layer (black point; degenerated: vermilion cross) on the "
            "percentile bands of the population's layers per depth bin."))
    elif bands is None:
        sec.add_text(bands_note or "No population given: the model is not compared.")
    else:
        sec.add_text("No assessed 3x3 layer: nothing to compare with the population.")
    if first_layer is not None:
        weight, name, note = first_layer
        add_figure(sec, lambda: P.first_layer_filters(weight, name=name), f"{key}-filters",
                   note)
    else:
        sec.add_text(no_filters_note)
    shown = df[assessed].reset_index(drop=True) if len(df) else df
    pct = None if percentiles is None else [p for p, a in zip(percentiles, assessed) if a]
    table = layer_table(shown, pct, columns)
    if len(table):
        sec.add_table(table, f"{key}-layers", highlight=shown["degenerated"].to_numpy(bool),
                      value_digits=None if legend_shown else 8,
                      caption="The assessed layers; degenerated layers are highlighted, the "
                              "reason says why a layer is flagged. Click a header to sort."
                              + (" " + " · ".join(legend(_thresholds(t))) + "." if legend_shown
                                 else " The legend is given once, above the models."))
    elif len(df):
        sec.add_text("No layer of the model can be assessed.")
    else:
        sec.add_text("The model has no 2-D conv layer.")
    return table


def _thresholds(t: dict):
    fields = HealthThresholds.__dataclass_fields__  # the summary's dict: the ones in use
    return HealthThresholds(**{k: v for k, v in (t or {}).items() if k in fields})


def write_check_html(path, model, df: pd.DataFrame, summary: dict, db=None, thresholds=None,
                     engine: str = "local", scheduler=None, recompute: bool = False,
                     workers: int = 2):
    """The one-model page of ``filterdb check MODEL --html``. With ``db`` (a path) the
    model's layers are placed on the population bands of the database (its own file, if
    present there, left out) and each gets its percentiles. Returns ``(path, figures)``."""
    bands = percentiles = None
    note = None
    if db is not None:
        with open_database(db) as d:
            pop = database_health(d, thresholds=thresholds, engine=engine, scheduler=scheduler,
                                  workers=workers, recompute=recompute)
            same = d.models(f"sha256 = '{model.sha256}'")["model"].tolist()
        if same:
            pop = pop[~pop["model"].isin(same)]
        bands = population_bands(pop)
        percentiles = compare_to_population(df, pop)
        n_pop = int(pop["assessed"].sum())
        note = (f"The model's assessed layers (black points; degenerated: vermilion crosses) on the "
                f"percentile bands of {n_pop:,} assessed layers of `{db}` per depth bin"
                + (f" (left out: {', '.join(same)})" if same else "") + ".")
    else:
        note = "Run with `--db DB` to compare the model with a database's layers."
    rep = Report(f"Layer health: {_basename(model.path)}",
                 subtitle=f"`{model.path}` ({model.format}, {len(model.layers)} conv layers)")
    sec = rep.section("health", "Layer health", intro=(
        "Sparsity S, variance entropy H, the paper's randomness threshold TH(n), H / TH, the "
        "distribution of H of i.i.d. random layers of the same size (mean ± sd, and p: the "
        "share of them with H at most the layer's), the clean entropy (non-sparse filters "
        "only) and orthogonality per conv layer. A layer is degenerated when random-like "
        "or both low in diversity and sparse; the legend below gives the thresholds and "
        "the rule."))
    figures: dict = {}
    first = None
    if model.layers:
        shapes = pd.DataFrame({"kh": [l.weight.shape[2] for l in model.layers],
                               "kw": [l.weight.shape[3] for l in model.layers],
                               "conv_depth": [l.conv_depth for l in model.layers],
                               "n": [l.n_filters for l in model.layers]})
        i = first_filter_layer(shapes)
        if i is not None:
            l = model.layers[i]
            first = (l.weight, l.name, _first_note(l.name, l.conv_depth, l.weight.shape))
    add_model_blocks(sec, "model", df, summary, bands, percentiles, first, figures, note)
    for w in model.warnings:
        sec.add_text(f"Reader warning: {w}")
    return rep.write(path), figures


def _first_note(name, conv_depth, shape) -> str:
    kh, kw = shape[2], shape[3]
    where = "the first conv stage" if int(conv_depth) == 0 else f"conv depth {int(conv_depth)}"
    return (f"Filters of `{name}` ({where}; {kh}x{kw}), each scaled to its own absolute peak; "
            "one block of input-channel filters per output channel.")


def _basename(path) -> str:
    import os

    return os.path.basename(str(path))
