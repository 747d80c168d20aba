"""``filterdb check MODEL_FILE``: layer health of one model (method.md, section 5)."""
from __future__ import annotations

import math

from .._table import format_table
from ..errors import FilterDBError
from ._common import print_json

CLI_BASELINE_INITS = ("kaiming_uniform", "kaiming_normal")


def register(sub) -> None:
    p = sub.add_parser("check", help="layer health of a model file: sparsity, entropy, "
                                     "orthogonality, degeneration flags")
    p.add_argument("file", metavar="MODEL_FILE", help="model file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--baseline", action="store_true",
                   help="also measure random initialisations of the same layer shapes")
    p.add_argument("--inits", default=",".join(CLI_BASELINE_INITS),
                   help="initialisations for --baseline, comma-separated "
                        "(kaiming_uniform, kaiming_normal, xavier_uniform, normal)")
    p.add_argument("--seed", type=int, default=0, help="seed of --baseline (default 0)")
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
    # --- population percentiles: added with the database (not available yet) ---
    p.add_argument("--db", metavar="DB", default=None,
                   help="compare with the layers of a filter database (not available yet)")
    p.set_defaults(func=cmd_check)


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
        row = [r["name"], r["kernel"], round(float(r["conv_depth_norm"]), 3), int(r["n"]),
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
            f"{w['name']} ({','.join(w['flags']) or 'H/TH ' + _fmt(w['variance_entropy_norm'])})"
            for w in s["worst_layers"]))
    out.append(f"  verdict: {s['verdict']}")
    for w in model.warnings:
        out.append(f"  warning: {w}")
    return "\n".join(out)


def _fmt(v) -> str:
    return "nan" if v != v else f"{v:.3f}"


def cmd_check(args) -> int:
    from ..health import model_health, random_baseline
    from ..readers import read_model

    if args.db is not None:
        # Population percentiles against a database: added together with filterdb.store.
        raise FilterDBError("--db is not available yet")
    t = thresholds_from_args(args)
    model = read_model(args.file)
    df, summary = model_health(model, t)
    base = None
    if args.baseline:
        inits = tuple(i.strip() for i in args.inits.split(",") if i.strip())
        if not inits:
            raise FilterDBError("--inits is empty")
        base = random_baseline(model, inits=inits, seed=args.seed, thresholds=t)
    if args.json:
        obj = {"path": model.path, "format": model.format, "layers": layers_json(df),
               "summary": summary}
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
    return 0
