"""``filterdb check MODEL_FILE [--db DB]``: layer health of one model, optionally against a
database's population; ``filterdb health DB``: layer health of a whole database
(method.md, section 5)."""
from __future__ import annotations

import math
import sys

from .._table import format_table, shorten
from ..errors import FilterDBError
from ._common import print_json

CLI_BASELINE_INITS = ("kaiming_uniform", "kaiming_normal")


def register(sub) -> None:
    p = sub.add_parser("check", help="layer health of a model file: sparsity, entropy, "
                                     "orthogonality, degeneration flags")
    p.add_argument("file", metavar="MODEL_FILE",
                   help="model file, model folder, or a folder of models (each checked)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--html", metavar="OUT", default=None,
                   help="also write a one-model HTML page (with --db: against its population)")
    p.add_argument("--baseline", action="store_true",
                   help="also measure random initialisations of the same layer shapes")
    p.add_argument("--inits", default=",".join(CLI_BASELINE_INITS),
                   help="initialisations for --baseline, comma-separated "
                        "(kaiming_uniform, kaiming_normal, xavier_uniform, normal)")
    p.add_argument("--seed", type=int, default=0, help="seed of --baseline (default 0)")
    add_threshold_args(p)
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
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_engine_args(p)
    add_threshold_args(p)
    p.set_defaults(func=cmd_health)


def add_threshold_args(p) -> None:
    p.add_argument("--eps", type=float, default=0.01,
                   help="sparsity epsilon: t = eps * max|W| (default 0.01)")
    p.add_argument("--random-margin", type=float, default=0.02,
                   help="random when H >= TH(n) - margin (default 0.02)")
    p.add_argument("--low-diversity-h", type=float, default=0.5,
                   help="low diversity when H < this, for 3x3 (default 0.5)")
    p.add_argument("--sparse-s", type=float, default=0.14,
                   help="sparse when S >= this (default 0.14)")
    p.add_argument("--poor-share", type=float, default=0.2,
                   help="verdict 'poor start' above this share of degenerated layers (default 0.2)")


def add_engine_args(p) -> None:
    p.add_argument("--engine", choices=("local", "dask"), default="local",
                   help="run the metrics pass on local threads (default) or on Dask")
    p.add_argument("--scheduler", metavar="ADDR", default=None,
                   help="Dask scheduler address (default: a local cluster)")
    p.add_argument("--recompute", action="store_true",
                   help="recompute the stored layer metrics of the database")
    p.add_argument("--no-orthogonality", dest="orthogonality", action="store_false",
                   help="skip orthogonality (the costly metric; the flags do not use it)")


def thresholds_from_args(args):
    from ..health import HealthThresholds

    for name in ("eps", "random_margin", "low_diversity_h", "sparse_s", "poor_share"):
        v = getattr(args, name)
        if not math.isfinite(v) or v < 0:
            raise FilterDBError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {v}")
    return HealthThresholds(sparsity_eps=args.eps, random_margin=args.random_margin,
                            low_diversity_H=args.low_diversity_h, sparse_S=args.sparse_s,
                            poor_share=args.poor_share)


def layers_json(df) -> list[dict]:
    """The ``layers`` list of ``check --json``, from a :func:`model_health` table."""
    from ..health.check import flag_names

    out = []
    for _, r in df.iterrows():
        out.append({
            "name": r["name"], "op": r["op"], "kernel": r["kernel"],
            "conv_depth": int(r["conv_depth"]), "conv_depth_norm": float(r["conv_depth_norm"]),
            "n": int(r["n"]), "sparsity": float(r["sparsity"]),
            "variance_entropy": float(r["variance_entropy"]), "threshold": float(r["threshold"]),
            "variance_entropy_norm": float(r["variance_entropy_norm"]),
            "variance_entropy_clean": float(r["variance_entropy_clean"]),
            "orthogonality": float(r["orthogonality"]),
            "assessed": bool(r["assessed"]), "flags": flag_names(r),
        })
    return out


def render(model, df, summary, base=None) -> str:
    """The human-readable report."""
    from ..health.check import flag_names

    headers = ["layer", "kernel", "depth", "n", "S", "H", "H/TH", "orth", "flags"]
    extra = []
    if base is not None:
        extra = list(dict.fromkeys(base["init"]))
        headers[7:7] = [f"H/TH {i}" for i in extra]
        by_layer = {}
        for _, b in base.iterrows():
            by_layer.setdefault((b["name"], b["init"]), float(b["variance_entropy_norm"]))
    rows = []
    for _, r in df.iterrows():
        row = [shorten(r["name"]), r["kernel"], round(float(r["conv_depth_norm"]), 3), int(r["n"]),
               r["sparsity"], r["variance_entropy"], r["variance_entropy_norm"]]
        for i in extra:
            row.append(by_layer.get((r["name"], i)))
        row += [r["orthogonality"], ",".join(flag_names(r)) or "-"]
        rows.append(row)
    out = [f"{model.path}  ({model.format}, {len(model.layers)} conv layers)", ""]
    if rows:
        out += [format_table(rows, headers), ""]
    s = summary
    share = s["share_degenerated"]
    out.append(f"  degenerated: {s['n_degenerated']} of {s['n_assessed']} assessed layers"
               + (f" ({share:.1%})" if share == share else ""))
    if s["worst_layers"]:
        out.append("  worst layers: " + "; ".join(
            f"{shorten(w['name'])} ({','.join(w['flags']) or 'H/TH ' + _fmt(w['variance_entropy_norm'])})"
            for w in s["worst_layers"]))
    out.append(f"  verdict: {s['verdict']}")
    for w in model.warnings:
        out.append(f"  warning: {w}")
    return "\n".join(out)


def _fmt(v) -> str:
    return "nan" if v != v else f"{v:.3f}"


def cmd_check(args) -> int:
    """``check``: one model file or folder model; a folder of models: each in turn (with
    ``--json`` one list)."""
    import argparse
    import contextlib
    import io
    import json

    from ..readers.folders import expand

    paths = []
    for f, err in expand([args.file]):
        if err:
            raise FilterDBError(err)
        paths.append(f)
    if len(paths) == 1:
        return _check_one(args, paths[0])
    if args.html:
        raise FilterDBError(f"{args.file} holds {len(paths)} models; --html takes one model")
    rc, objs = 0, []
    for i, path in enumerate(paths):
        one = argparse.Namespace(**{**vars(args), "file": path})
        if args.json:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                rc = max(rc, _check_one(one, path))
            objs.append(json.loads(buf.getvalue()))
        else:
            if i:
                print()
            rc = max(rc, _check_one(one, path))
    if args.json:
        print_json(objs)
    return rc


def _check_one(args, path) -> int:
    from ..health import model_health, random_baseline
    from ..readers import read_model

    t = thresholds_from_args(args)
    model = read_model(path)
    df, summary = model_health(model, t)
    if args.html:
        from ..report.model_report import write_check_html

        out, _ = write_check_html(args.html, model, df, summary, db=args.db, thresholds=t,
                                  engine=args.engine, scheduler=args.scheduler,
                                  recompute=args.recompute)
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
        base = random_baseline(model, inits=inits, seed=args.seed, thresholds=t)
    if args.json:
        obj = {"path": model.path, "format": model.format, "layers": layers_json(df),
               "summary": summary}
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
                 "flags": [f for f in ("random", "low_diversity", "sparse", "degenerated") if r[f]]}
                for _, r in base.iterrows()]
        print_json(obj)
    else:
        print(render(model, df, summary, base))
        if pct is not None:
            print(render_percentiles(df, pct, pop_info))
    return 0


def builtin_percentiles(model, df):
    """Percentiles against the built-in reference population (``check`` without ``--db``;
    filterdb.zoo.reference)."""
    from ..zoo.reference import percentiles

    pct, info = percentiles(df, model.sha256)
    info["db"] = f"the built-in reference {info['name']} ({info['n_models']} zoo models)"
    return pct, info


def population_percentiles(args, model, df, t):
    """Percentiles of the model's layers among the database's (``check --db``). Layers of
    a database model with the same file (sha256) are left out of the population."""
    from ..health import database_health
    from ..health.database import compare_to_population
    from ..store import open_database

    with open_database(args.db) as db:
        pop = database_health(db, thresholds=t, engine=args.engine, scheduler=args.scheduler,
                              recompute=args.recompute)
        same = db.models(f"sha256 = '{model.sha256}'")["model"].tolist()
    if same:
        pop = pop[~pop["model"].isin(same)]
    pct = compare_to_population(df, pop)
    info = {"db": str(args.db), "n_layers": int(pop["assessed"].sum()),
            "excluded_models": same, "percentile": "share of comparable layers with a "
            "smaller value (%)"}
    return pct, info


NOTABLE = 95.0  # percentiles at or above this (or at or below 100 - this) are worth saying
WORDS = {"sparsity": ("more sparse", "less sparse"),
         "variance_entropy": ("higher entropy", "lower entropy"),
         "variance_entropy_norm": ("higher H/TH", "lower H/TH"),
         "variance_entropy_clean": ("higher clean entropy", "lower clean entropy"),
         "orthogonality": ("more orthogonal", "less orthogonal")}


def notable(p: dict, high: float = NOTABLE) -> list[str]:
    """Phrases for a layer's extreme percentiles, e.g. "more sparse than 97 % of
    comparable layers"."""
    out = []
    for m, (up, down) in WORDS.items():
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
    from ..health import database_health, health_summary
    from ._common import progress

    t = thresholds_from_args(args)
    bar = progress(total=None, desc="health", unit="filters")
    try:
        df = database_health(args.db, where=args.where, thresholds=t, engine=args.engine,
                             scheduler=args.scheduler, recompute=args.recompute,
                             orthogonality=args.orthogonality,
                             progress=bar.update)
    finally:
        bar.close()
    summ = health_summary(df, t)
    if args.json:
        print_json({"layers": _records(df), **{k: _records(v) for k, v in summ.items()},
                    "thresholds": t.to_dict()})
        return 0
    a = df[df["assessed"]]
    out = [f"{args.db}: {len(df)} layers, {len(a)} assessed, {int(a['degenerated'].sum())} "
           f"degenerated ({len(df) - len(a)} not assessed: other kernels, < 3 filters or "
           "non-finite weights)", ""]
    for key, title in (("by_model", "model"), ("by_task", "task"),
                       ("by_visual_category", "visual_category"), ("by_depth_bin", "depth_bin")):
        g = summ[key]
        headers = [title, "layers", "assessed", "degenerated", "share", "S", "H/TH", "orth"]
        cols = [title, "n_layers", "n_assessed", "n_degenerated", "share_degenerated",
                "sparsity", "variance_entropy_norm", "orthogonality"]
        if key == "by_model":
            headers.append("verdict")
            cols.append("verdict")
        out += [f"by {title}:", format_table(g[cols].values.tolist(), headers), ""]
    print("\n".join(out).rstrip())
    return 0


def _records(df) -> list[dict]:
    return df.astype(object).where(df.notna(), None).to_dict(orient="records")
