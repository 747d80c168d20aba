"""``filterdb analyze``: everything the report needs, in the fewest passes (issue 21)."""
from __future__ import annotations

from .._table import format_table
from ..errors import FilterDBError
from ._common import (
    add_engine_options,
    add_output_options,
    emit,
    engine_kwargs,
    show_progress,
)


def register(sub) -> None:
    p = sub.add_parser("analyze", help="PCA, range, drift by every grouping column, c0-c1 "
                       "density and layer health in 2 passes (3 if the range proof fails), "
                       "cached for pca, drift, health and report")
    p.add_argument("db", metavar="DB", help="filter database")
    p.add_argument("--where", help="SQL expression over the layer and model columns")
    p.add_argument("--range", dest="range_", metavar="LO,HI",
                   help="fixed coefficient range, e.g. --range=-3,3: passes 2 and 3 are one")
    p.add_argument("--bins", type=int, default=70, help="histogram bins (default 70)")
    p.add_argument("--columns", default=None, metavar="A,B,...",
                   help="grouping columns (default: task, visual_category, training_dataset, "
                   "architecture, depth_bin, model)")
    p.add_argument("--no-orthogonality", dest="orthogonality", action="store_false",
                   help="skip orthogonality (the costly metric; the flags do not use it)")
    p.add_argument("--orthogonality-precision", choices=("float32", "float64"),
                   default="float32", help="float32 products accumulated in float64 (default; "
                   "measured within 1.2e-8 of the definition) or the exact float64 path")
    p.add_argument("--precision", metavar="{float32,float16}", default="float32",
                   help="float32 (default) or the notebook's float16 (see drift)")
    p.add_argument("--eps", type=float, default=0.01,
                   help="sparsity epsilon: t = eps * max|W| (default 0.01)")
    add_engine_options(p)
    add_output_options(p, "print CSV: one row per grouping column (groups, mean drift)",
                       json_help="print one JSON object")
    p.set_defaults(func=cmd_analyze)


def cmd_analyze(args) -> int:
    import math

    from .. import analysis  # lazy: start-up time (filterdb --help stays fast)
    from ..health import HealthThresholds  # lazy: start-up time (filterdb --help stays fast)
    from .analysis import parse_range  # lazy: start-up time (filterdb --help stays fast)

    eng = engine_kwargs(args)
    if not math.isfinite(args.eps) or args.eps < 0:
        raise FilterDBError(f"--eps must be a finite number >= 0, got {args.eps}")
    if args.bins < 1:
        raise FilterDBError(f"--bins must be at least 1, got {args.bins}")
    cols = analysis.COLUMNS if args.columns is None else \
        tuple(c.strip() for c in args.columns.split(",") if c.strip())
    r = analysis.analyze(args.db, args.where, columns=cols, bins=args.bins,
                         range=parse_range(args.range_), orthogonality=args.orthogonality,
                         orthogonality_precision=args.orthogonality_precision,
                         thresholds=HealthThresholds(sparsity_eps=args.eps),
                         engine=eng["engine"], scheduler=eng["scheduler"],
                         workers=eng["workers"],
                         progress=True if show_progress(args) else None,
                         recompute=args.recompute,
                         precision=args.precision)
    rows = [{"column": c, "groups": len(d.groups),
             "mean_drift": float(d.upper_triangle().mean()) if len(d.groups) > 1 else None}
            for c, d in r.summary.results.items()]
    if emit(args, r.to_dict, rows):
        return 0
    print(f"{r.pca.n:,} filters; range [{r.range[0]:.4g}, {r.range[1]:.4g}]; "
          f"{len(r.passes)} pass(es) in {r.seconds:.1f} s"
          + ("" if r.passes else " (all cached)"))
    for p in r.passes:
        print(f"  {p.name}: {p.seconds:.1f} s"
              + (f", orthogonality of {p.n_orth:,} layers" if p.n_orth else ""))
    print(format_table([[r_["column"], r_["groups"], r_["mean_drift"]] for r_ in rows],
                       ["column", "groups", "mean drift"]))
    h = r.health
    if len(h):
        print(f"health: {int(h['assessed'].sum()):,} layers assessed, "
              f"{int(h['degenerated'].sum()):,} degenerated")
    return 0
