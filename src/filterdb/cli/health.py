"""``filterdb check MODEL_FILE [--db DB]``: layer health of one model, optionally against a
database's population; ``filterdb health DB``: layer health of a whole database
(method.md, section 5)."""
from __future__ import annotations

import math
import sys

from .._table import format_table, shorten
from ..errors import FilterDBError
from ._common import (
    add_engine_options,
    add_output_file_option,
    add_output_options,
    emit,
    engine_kwargs,
    print_json,
    show_progress,
)

CLI_BASELINE_INITS = ("kaiming_uniform", "kaiming_normal")
# ``check --fail-on LEVEL``: exit code when the verdict is at LEVEL or worse (2 is errors)
FAIL_EXIT = 3
FAIL_LEVELS = {"caution": ("caution", "poor start"), "poor": ("poor start",)}


def register(sub) -> None:
    p = sub.add_parser("check", help="layer health of model files: sparsity, entropy, "
                                     "orthogonality, degeneration flags")
    p.add_argument("files", nargs="+", metavar="PATH",
                   help="model file(s) or folder(s) (read recursively); several: one line "
                        "per model")
    add_output_options(p, "print CSV: one row per model (per layer with --layers), the batch "
                       "form of --json (a list: the models' summaries, or their layers)",
                       json_help="print one JSON object (a list for several models)")
    p.add_argument("--layers", action="store_true",
                   help="several models: also each model's per-layer table")
    p.add_argument("--html", nargs="?", const=True, default=None, metavar="OUT",
                   help="also write a one-model HTML page (with --db: against its population) "
                        "to -o FILE (default MODEL.html); '--html OUT' is the old spelling")
    add_output_file_option(p, "HTML", help="the HTML page of --html (implies --html)")
    p.add_argument("--baseline", action="store_true",
                   help="also measure random initialisations of the same layer shapes")
    p.add_argument("--inits", default=",".join(CLI_BASELINE_INITS),
                   help="initialisations for --baseline, comma-separated "
                        "(kaiming_uniform, kaiming_normal, xavier_uniform, normal)")
    p.add_argument("--seed", type=int, default=0, help="seed of --baseline (default 0)")
    add_threshold_args(p)
    p.add_argument("--fail-on", choices=tuple(FAIL_LEVELS), default=None,
                   help=f"exit {FAIL_EXIT} when the verdict is 'poor start' (poor) or "
                        "'caution' or worse (caution), for CI gates; exit 2 stays errors")
    p.add_argument("--no-reference", dest="reference", action="store_false",
                   help="without --db: no percentiles against the built-in reference")
    p.add_argument("--db", metavar="DB", default=None,
                   help="also give each metric's percentile among the database's layers of "
                        "similar depth and size")
    add_engine_args(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("health", help="layer health of every layer of a filter database: "
                                      "summaries by model, task, visual category and depth")
    p.add_argument("db", metavar="DB", help="filter database")
    p.add_argument("--where", help="SQL expression over the layer and model columns")
    add_output_options(p, "print CSV: the rows of one table of --json, chosen by --table",
                       tables={"layers": "one row per layer", "by_model": "one row per model",
                               "by_task": "one row per task",
                               "by_visual_category": "one row per visual category",
                               "by_depth_bin": "one row per conv_depth_norm bin"})
    add_engine_args(p)
    add_threshold_args(p)
    p.set_defaults(func=cmd_health)


def add_threshold_args(p) -> None:
    p.add_argument("--rule", choices=("calibrated", "paper"), default="calibrated",
                   help="randomness rule: calibrated (default: random-like when p >= alpha, "
                        "p the share of simulated i.i.d. random layers of the same n and "
                        "kernel with H at most the layer's) or paper (H >= TH(n) - margin)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="calibrated rule: random-like when p >= alpha (default 0.05)")
    p.add_argument("--eps", type=float, default=0.01,
                   help="sparsity epsilon: t = eps * max|W| (default 0.01)")
    p.add_argument("--random-margin", type=float, default=0.02,
                   help="paper rule: random when H >= TH(n) - margin (default 0.02)")
    p.add_argument("--low-diversity-h", type=float, default=0.5,
                   help="low diversity when H < this, for 3x3 (default 0.5)")
    p.add_argument("--sparse-s", type=float, default=0.14,
                   help="sparse when S >= this (default 0.14)")
    p.add_argument("--poor-share", type=float, default=0.2,
                   help="verdict 'poor start' above this share of degenerated layers (default 0.2)")


def add_engine_args(p) -> None:
    add_engine_options(p, what="the metrics pass")
    p.add_argument("--no-orthogonality", dest="orthogonality", action="store_false",
                   help="skip orthogonality (the costly metric; the flags do not use it)")
    p.add_argument("--orthogonality-precision", choices=("float32", "float64"),
                   default="float32", help="database pass: float32 products accumulated in "
                   "float64 (default; measured within 1.2e-8 of the definition) or the exact "
                   "float64 path")


def thresholds_from_args(args):
    from ..health import HealthThresholds  # lazy: start-up time (filterdb --help stays fast)

    for name in ("eps", "random_margin", "low_diversity_h", "sparse_s", "poor_share", "alpha"):
        v = getattr(args, name)
        if not math.isfinite(v) or v < 0:
            raise FilterDBError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {v}")
    if not 0 < args.alpha < 1:
        raise FilterDBError(f"--alpha must lie strictly between 0 and 1, got {args.alpha}")
    return HealthThresholds(sparsity_eps=args.eps, random_margin=args.random_margin,
                            low_diversity_H=args.low_diversity_h, sparse_S=args.sparse_s,
                            poor_share=args.poor_share, rule=args.rule, alpha=args.alpha)


def _f(v):
    v = float(v)
    return v if math.isfinite(v) else None


def layers_json(df) -> list[dict]:
    """The ``layers`` list of ``check --json``, from a :func:`model_health` table (the
    metrics: every spec of the registry, :mod:`filterdb.kernels.metrics`)."""
    from ..health.assess import flag_names  # lazy: start-up time
    from ..kernels.metrics import names  # lazy: start-up time

    out = []
    for _, r in df.iterrows():
        out.append({
            "name": r["name"], "op": r["op"], "kernel": r["kernel"],
            "conv_depth": int(r["conv_depth"]), "conv_depth_norm": float(r["conv_depth_norm"]),
            "n": int(r["n"]), **{m: float(r[m]) for m in names()},
            "random_mean": float(r["random_mean"]), "random_sd": float(r["random_sd"]),
            "p_random": float(r["p_random"]), "random_method": r["random_method"],
            "random_paper": bool(r["random_paper"]),
            "assessed": bool(r["assessed"]), "not_assessed": r["not_assessed"],
            "flags": flag_names(r), "reason": r["reason"],
        })
    return out


def _cell(v):
    """A metric's table cell: blank when not applicable (NaN, e.g. the 3x3-only metrics of
    other kernels, or orthogonality switched off)."""
    v = float(v)
    return v if math.isfinite(v) else None


def _random_h(r) -> str:
    m, sd = float(r["random_mean"]), float(r["random_sd"])
    if not math.isfinite(m):
        return ""
    return f"{m:.3f}+-{sd:.2g}" if math.isfinite(sd) else f"{m:.3f}"


def render(model, df, summary, base=None, thresholds=None) -> str:
    """The human-readable report: the assessed layers' table, the non-assessed layers in
    one line, the reasons of the flagged layers, the worst layers, the verdict sentence
    and the legend."""
    from ..health.assess import flag_names  # lazy: start-up time
    from ..kernels.metrics import labels, split_names  # lazy: start-up time

    lab = labels(table=True)  # the registry's table metrics, random-layer columns after H/TH
    head, tail = split_names(lab)
    headers = (["layer", "kernel", "depth", "n"] + [lab[m] for m in head]
               + ["H random", "p", "paper"] + [lab[m] for m in tail] + ["flags"])
    extra = []
    if base is not None:
        extra = list(dict.fromkeys(base["init"]))
        at = 7 + len(head)
        headers[at:at] = [f"H/TH {i}" for i in extra]
        by_layer = {}
        for _, b in base.iterrows():
            by_layer.setdefault((b["name"], b["init"]), float(b["variance_entropy_norm"]))
    a = df[df["assessed"].to_numpy(bool)] if len(df) else df
    rows = []
    for _, r in a.iterrows():
        row = [shorten(r["name"]), r["kernel"], round(float(r["conv_depth_norm"]), 3),
               int(r["n"])] + [_cell(r[m]) for m in head] + [
               _random_h(r), f"{float(r['p_random']):.3f}",
               "random" if r["random_paper"] else "-"]
        for i in extra:
            row.append(by_layer.get((r["name"], i)))
        row += [_cell(r[m]) for m in tail] + [",".join(flag_names(r)) or "-"]
        rows.append(row)
    out = [f"{model.path}  ({model.format}, {len(model.layers)} conv layers)", ""]
    out += render_summary(summary, rows, headers, thresholds, df)
    for w in model.warnings:
        out.append(f"  warning: {w}")
    return "\n".join(out)


def render_summary(summary, rows, headers, thresholds=None, df=None) -> list[str]:
    """Table, non-assessed line, reasons, worst layers, verdict and legend (``check``)."""
    from ..health.assess import (  # lazy: start-up time (filterdb --help stays fast)
        extrapolated_line,
        legend,
        not_assessed_line,
    )

    s = summary
    out = []
    if rows:
        out += [format_table(rows, headers), ""]
    for line in (not_assessed_line(s), "" if df is None else extrapolated_line(df)):
        if line:
            out.append("  " + line)
    share = s["share_degenerated"]
    out.append(f"  degenerated: {s['n_degenerated']} of {s['n_assessed']} assessed layers"
               + (f" ({share:.1%})" if share == share else "")
               + f"; random-like by the paper's rule: {s.get('n_random_paper', 0)}")
    if s["worst_layers"]:
        out.append("  worst layers:")
        for w in s["worst_layers"]:
            out.append(f"    {shorten(w['name'])}: {w['label']}"
                       + (f" - {w['reason']}" if w["reason"] else ""))
    out.append(f"  verdict: {s['verdict']}")
    out.append("")
    out += ["  legend: " + legend(thresholds)[0]] + ["          " + x
                                                     for x in legend(thresholds)[1:]]
    return out


def _fmt(v) -> str:
    return "nan" if v != v else f"{v:.3f}"


def cmd_check(args) -> int:
    """One model file: :func:`check_one`; several inputs, folders or ``--csv``:
    :func:`check_many`."""
    from . import _batch  # lazy: start-up time: on first use

    if not _batch.is_batch(args.files, args.csv):
        args.file = args.files[0]
        return check_one(args)
    return check_many(args)


def check_many(args) -> int:
    """One line per model (``--layers``: each model's report first), ``--json`` a list,
    ``--csv``; a bad file fails alone (exit 2 at the end)."""
    from ..api import check_model  # lazy: start-up time: on first use
    from . import _batch  # lazy: start-up time: on first use

    for opt in ("html", "output", "db"):
        if getattr(args, opt):
            raise FilterDBError(f"--{opt} takes one model file, not several or a folder")
    if args.baseline:
        raise FilterDBError("--baseline takes one model file, not several or a folder")
    t = thresholds_from_args(args)
    orth = getattr(args, "orthogonality", True)
    results = _batch.run(args.files, lambda m: check_model(m, t, orth))
    cols = ["name", "layers", "assessed", "degenerated", "verdict"]
    return _batch.report(results, args, cols,
                         ["model", "conv layers", "assessed", "degenerated", "verdict"],
                         lambda r: render(r.model, r.layers, r.summary))


def html_output(args) -> str | None:
    """The page of ``check --html [-o FILE]``; ``--html OUT`` (the old spelling) still works,
    with a warning."""
    import os

    if args.html not in (None, True):
        print("filterdb: warning: '--html OUT' is deprecated: use '--html -o OUT'",
              file=sys.stderr)
        if args.output and args.output != args.html:
            raise FilterDBError(f"two output files given (--html {args.html} and -o "
                                f"{args.output}): give one")
        return args.html
    if args.output:
        return args.output
    if args.html:
        return os.path.splitext(os.path.basename(args.file))[0] + ".html"
    return None


def check_one(args) -> int:
    from ..health import (  # lazy: start-up time (filterdb --help stays fast)
        model_health,
        random_baseline,
    )
    from ..readers import read_model  # lazy: start-up time (filterdb --help stays fast)

    t = thresholds_from_args(args)
    model = read_model(args.file)
    df, summary = model_health(model, t, orthogonality=args.orthogonality)
    html = html_output(args)
    if html:
        from ..report.model_report import (
            write_check_html,  # lazy: start-up time (filterdb --help stays fast)
        )

        out, _ = write_check_html(html, model, df, summary, db=args.db, thresholds=t,
                                  **engine_kwargs(args), recompute=args.recompute)
        print(f"wrote {out}", file=sys.stderr)
    pct = pop_info = None
    if args.db is not None:
        pct, pop_info = population_percentiles(args, model, df, t)
        summary["reference"] = {"name": str(args.db), "source": "database",
                                "n_layers": pop_info["n_layers"]}
    elif getattr(args, "reference", True):
        pct, pop_info = builtin_percentiles(model, df)
        summary["reference"] = {k: pop_info[k] for k in
                                ("name", "source", "n_models", "n_layers", "n_filters_3x3")}
    base = None
    if args.baseline:
        inits = tuple(i.strip() for i in args.inits.split(",") if i.strip())
        if not inits:
            raise FilterDBError("--inits is empty")
        base = random_baseline(model, inits=inits, seed=args.seed, thresholds=t,
                               orthogonality=args.orthogonality)
    if args.json:
        obj = {"path": model.path, "format": model.format, "layers": layers_json(df),
               "summary": summary, "warnings": list(model.warnings)}
        if pct is not None:
            for row, p in zip(obj["layers"], pct):
                row["percentiles"] = p
            obj["population"] = pop_info
        if base is not None:
            obj["baseline"] = [
                {"name": r["name"], "init": r["init"], "n": int(r["n"]),
                 "sparsity": float(r["sparsity"]), "variance_entropy": float(r["variance_entropy"]),
                 "variance_entropy_norm": float(r["variance_entropy_norm"]),
                 "orthogonality": float(r["orthogonality"]),
                 "p_random": _f(r["p_random"]),
                 "flags": [f for f in ("random", "low_diversity", "sparse", "degenerated") if r[f]]}
                for _, r in base.iterrows()]
        print_json(obj)
    else:
        print(render(model, df, summary, base, t))
        if pct is not None:
            print(render_percentiles(df, pct, pop_info))
    return exit_code(summary, args.fail_on)


def exit_code(summary, fail_on) -> int:
    """0, or :data:`FAIL_EXIT` when ``--fail-on`` is given and the verdict is at that level
    or worse ("not assessed" never fails: there is nothing to judge)."""
    if fail_on and summary["verdict_class"] in FAIL_LEVELS[fail_on]:
        return FAIL_EXIT
    return 0


def builtin_percentiles(model, df):
    """Percentiles against the built-in reference population (``check`` without ``--db``;
    filterdb.zoo.reference)."""
    from ..zoo.reference import percentiles  # lazy: start-up time (filterdb --help stays fast)

    pct, info = percentiles(df, model.sha256)
    info["db"] = f"the built-in reference {info['name']} ({info['n_models']} zoo models)"
    return pct, info


def population_percentiles(args, model, df, t):
    """Percentiles of the model's layers among the database's (``check --db``). Layers of
    a database model with the same file (sha256) are left out of the population."""
    from ..health import database_health  # lazy: start-up time
    from ..health.population import compare_to_population  # lazy: start-up time
    from ..store import open_database  # lazy: start-up time

    with open_database(args.db) as db:
        pop = database_health(db, thresholds=t, **engine_kwargs(args),
                              recompute=args.recompute, orthogonality=args.orthogonality,
                              orthogonality_precision=args.orthogonality_precision)
        same = db.models(f"sha256 = '{model.sha256}'")["model"].tolist()
    if same:
        pop = pop[~pop["model"].isin(same)]
    pct = compare_to_population(df, pop)
    info = {"db": str(args.db), "n_layers": int(pop["assessed"].sum()),
            "excluded_models": same, "percentile": "share of comparable layers with a "
            "smaller value (%)"}
    return pct, info


NOTABLE = 95.0  # percentiles at or above this (or at or below 100 - this) are worth saying
def notable(p: dict, high: float = NOTABLE) -> list[str]:
    """Phrases for a layer's extreme percentiles, e.g. "more sparse than 97 % of
    comparable layers"."""
    from ..kernels.metrics import specs  # lazy: start-up time: on first use

    out = []
    for m, (up, down) in ((s.name, s.words) for s in specs(percentile=True)):
        v, w = p.get(m), p.get("above", {}).get(m)
        if v is None or v != v:
            continue
        if v >= high:
            out.append(f"{up} than {v:.0f} % of comparable layers")
        elif w is not None and w >= high:
            out.append(f"{down} than {w:.0f} % of comparable layers")
    return out


def render_percentiles(df, pct, info) -> str:
    out = ["", f"  against {info['db']} ({info['n_layers']} assessed layers"
           + (f"; left out: {', '.join(info['excluded_models'])}" if info["excluded_models"]
              else "") + "):"]
    said = 0
    widened = 0
    for (_, r), p in zip(df.iterrows(), pct):
        if p is None:
            continue
        widened += p["comparable"] == "depth"
        phr = notable(p)
        if phr:
            said += 1
            how = "" if p["comparable"] == "depth and size" else ", same depth bin only"
            out.append(f"    {r['name']}: " + "; ".join(phr)
                       + f" (n_comparable {p['n_comparable']}{how})")
    if not said:
        out.append("    no metric outside the 5-95 % range of comparable layers")
    if widened:
        out.append(f"    {widened} layer(s) compared with their depth bin only (fewer than "
                   "10 layers of similar depth and size)")
    return "\n".join(out)


def cmd_health(args) -> int:
    from ..health import (  # lazy: start-up time (filterdb --help stays fast)
        database_health,
        health_summary,
    )
    from ._common import progress  # lazy: start-up time (filterdb --help stays fast)

    t = thresholds_from_args(args)
    eng = engine_kwargs(args)
    bar = progress(total=None, desc="health", unit="filters",
                   disable=None if show_progress(args) else True)
    try:
        df = database_health(args.db, where=args.where, thresholds=t, **eng,
                             recompute=args.recompute,
                             orthogonality=args.orthogonality,
                             orthogonality_precision=args.orthogonality_precision,
                             progress=bar.update)
    finally:
        bar.close()
    summ = health_summary(df, t)
    from ..health import (  # lazy: start-up time (filterdb --help stays fast)
        model_summaries,
        summarise,
    )
    from ..health.assess import (  # lazy: start-up time (filterdb --help stays fast)
        legend,
        not_assessed_line,
    )

    # the models' summaries (worst layers, depth bins) only for --json: 4 ms per model
    if emit(args, lambda: {"layers": _records(df), **{k: _records(v) for k, v in summ.items()},
                           "models": {m: {k: v for k, v in ms.items() if k != "thresholds"}
                                      for m, ms in model_summaries(df, t).items()},
                           "thresholds": t.to_dict(), "legend": legend(t)},
            lambda table: _records(df if table == "layers" else summ[table])):
        return 0
    total = summarise(df, t)
    out = [f"{args.db}: {len(df)} layers, {total['n_assessed']} assessed, "
           f"{total['n_degenerated']} degenerated ({total['n_random']} random-like, "
           f"{total['n_low_diversity_sparse']} both sparse and low-diversity)"]
    line = not_assessed_line(total)
    if line:
        out.append(line)
    out.append("")
    rule = (f"p >= {t.alpha:g}, rule calibrated" if t.rule == "calibrated"
            else f"H >= TH(n) - {t.random_margin:g}, rule paper")
    from ..health.summary import GROUP_METRICS  # lazy: start-up time
    from ..kernels.metrics import spec  # lazy: start-up time

    means = {m: spec(m).label for m in GROUP_METRICS}  # the registry's headline metrics
    under = (f"  degenerated = random-like ({rule}) or sparse and low-diversity; share = "
             "degenerated / assessed; paper: random-like by H >= TH(n) - "
             f"{t.random_margin:g}; {', '.join(means.values())}: means over assessed layers")
    for key, title in (("by_model", "model"), ("by_task", "task"),
                       ("by_visual_category", "visual_category"), ("by_depth_bin", "depth_bin")):
        g = summ[key]
        headers = [title, "layers", "assessed", "degenerated", "random", "low+sparse", "share",
                   "paper", *means.values()]
        cols = [title, "n_layers", "n_assessed", "n_degenerated", "n_random",
                "n_low_diversity_sparse", "share_degenerated", "n_random_paper", *means]
        if key == "by_model":
            headers.append("verdict")
            cols.append("verdict")
        out += [f"by {title}:", format_table(g[cols].values.tolist(), headers), under, ""]
    out += ["legend: " + legend(t)[0]] + ["        " + x for x in legend(t)[1:]]
    print("\n".join(out).rstrip())
    return 0


def _records(df) -> list[dict]:
    return df.astype(object).where(df.notna(), None).to_dict(orient="records")
