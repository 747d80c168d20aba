"""``filterdb pca`` and ``filterdb drift``: the drift analysis of a database."""
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

MAX_MATRIX_GROUPS = 30  # larger matrices: group sizes and mean drift only (full in --json)


DRIFT_CSV = ("print CSV. --by: one row per group (the group, its filters, its mean drift, "
             "then its drift to each group, one column per group: the matrix of --json); "
             "--model: one row for the selection (by and group empty), then one per group; "
             "--noise-floor: see --table")


def _engine_args(p, csv_help="print CSV: one row per component (explained_variance, evr, "
                 "cumulative, eigen-image w0..w8 row-major), the mean as component 'mean'",
                 tables=None) -> None:
    p.add_argument("--where", help="SQL expression over the layer columns, e.g. "
                   "\"task = 'Classification'\"")
    p.add_argument("--precision", metavar="{float32,float16}", default="float32",
                   help="float32 (default): the stored filters; float16: rounded to float16 "
                   "and scaled in float16 first, as the published notebook does")
    add_engine_options(p)
    add_output_options(p, csv_help, tables=tables)


def register(sub) -> None:
    p = sub.add_parser("pca", help="PCA of the scaled 3x3 filters of a database selection")
    p.add_argument("db", metavar="DB")
    _engine_args(p)
    p.set_defaults(func=cmd_pca)

    p = sub.add_parser("drift", help="drift matrix between groups (task, visual_category, "
                       "depth, model, ...), or of a model file against the database (or, "
                       "without one, the built-in reference population)")
    p.add_argument("db", metavar="DB", nargs="?", default=None,
                   help="filter database (optional with --model: the built-in reference)")
    p.add_argument("--db", dest="db_option", metavar="DB", default=None,
                   help="the database, as an option")
    p.add_argument("--by", metavar="COLUMN|depth_bin",
                   help="grouping column of the layer view, or 'depth_bin' (10 bins of "
                   "conv_depth_norm)")
    p.add_argument("--bins", type=int, default=70, help="histogram bins (default 70)")
    p.add_argument("--range", dest="range_", metavar="LO,HI",
                   help="fixed coefficient range, e.g. --range=-3,3 (default: the global "
                   "min and max of the selection)")
    p.add_argument("--weights", choices=("evr", "equal"), default="evr",
                   help="component weights: the explained variance ratio (default) or 1/9")
    p.add_argument("--model", metavar="FILE",
                   help="drift of this model file against the selection (and each --by group)")
    from ._noise import noise_args  # lazy: start-up time (filterdb --help stays fast)
    noise_args(p)
    _engine_args(p, DRIFT_CSV, tables={
        "pairs": "--noise-floor: one row per pair of groups (the pairs of --json)",
        "within": "--noise-floor: one row per group, its within-group drift"})
    p.set_defaults(func=cmd_drift)


def _opts(args) -> dict:
    return dict(where=args.where, **engine_kwargs(args),
                progress=True if show_progress(args) else None,
                recompute=args.recompute, precision=args.precision)


def parse_range(text):
    import numpy as np  # lazy: start-up time (filterdb --help stays fast)
    if text is None:
        return None
    parts = str(text).split(",")
    try:
        lo, hi = (float(v) for v in parts)
    except ValueError:
        raise FilterDBError(f"--range {text!r}: expected LO,HI, e.g. --range=-3,3") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise FilterDBError(f"--range {text!r}: need finite LO < HI")
    return lo, hi


def pca_rows(p) -> list[dict]:
    """``pca --csv``: one row per component, then the mean (component ``mean``)."""
    import numpy as np  # lazy: start-up time (filterdb --help stays fast)

    cum = np.cumsum(p.explained_variance_ratio)
    rows = [{"component": k, "explained_variance": float(ev), "evr": float(r),
             "cumulative": float(cu), **{f"w{j}": float(x) for j, x in enumerate(c)}}
            for k, (c, ev, r, cu) in enumerate(zip(np.asarray(p.components),
                                                   p.explained_variance, p.explained_variance_ratio,
                                                   cum))]
    rows.append({"component": "mean", **{f"w{j}": float(x) for j, x in
                                         enumerate(np.asarray(p.mean))}})
    return rows


def drift_rows(r) -> list[dict]:
    """``drift --by --csv``: one row per group: the group, its filters, its mean drift and
    its drift to every group (one column per group, named by the group)."""
    M = r.matrix.to_numpy()
    return [{r.by: g, "filters": int(r.sizes.iloc[i]), "mean_drift": float(r.mean_drift.iloc[i]),
             **{str(h): float(M[i, j]) for j, h in enumerate(r.groups)}}
            for i, g in enumerate(r.groups)]


def model_drift_rows(r) -> list[dict]:
    """``drift --model --csv``: the selection (by and group empty), then each group."""
    rows = [{"model": r.model, "by": None, "group": None, "filters": None,
             "n_filters": r.n_filters, "n_outside": r.n_outside, "drift": float(r.drift)}]
    rows += [{"model": r.model, "by": r.by, "group": g, "filters": int(r.sizes[g]),
              "n_filters": r.n_filters, "n_outside": r.n_outside, "drift": float(d)}
             for g, d in r.groups.items()]
    return rows


def _row(v) -> str:
    return "  ".join(f"{x:+.4f}" for x in v)


def cmd_pca(args) -> int:
    import numpy as np  # lazy: start-up time (filterdb --help stays fast)

    from .. import analysis  # lazy: start-up time (filterdb --help stays fast)

    p = analysis.pca(args.db, **_opts(args))
    if emit(args, dict(p.to_dict(), precision=args.precision), lambda: pca_rows(p)):
        return 0
    rows = []
    cum = np.cumsum(p.explained_variance_ratio)
    for k, (c, r, cu) in enumerate(zip(p.components, p.explained_variance_ratio, cum)):
        img = np.asarray(c).reshape(3, 3)
        rows.append([k, float(r), float(cu), _row(img[0])])
        rows += [[None, None, None, _row(img[1])], [None, None, None, _row(img[2])]]
    print(f"{p.n:,} filters (precision {args.precision}); mean (3x3): " + " | ".join(
        _row(m) for m in np.asarray(p.mean).reshape(3, 3)))
    print(format_table(rows, ["component", "EVR", "cumulative", "eigen-image (3x3)"]))
    return 0


def cmd_drift(args) -> int:
    import numpy as np  # lazy: start-up time (filterdb --help stays fast)

    from .. import analysis  # lazy: start-up time (filterdb --help stays fast)

    if args.db_option is not None:
        if args.db is not None and args.db != args.db_option:
            raise FilterDBError("give the database once (DB or --db DB)")
        args.db = args.db_option
    if args.db is None:
        if not args.model:
            raise FilterDBError("drift needs a database DB (only --model FILE can go without "
                                "one, against the built-in reference)")
        return _drift_builtin(args)
    opts = _opts(args)
    rng = parse_range(args.range_)
    if getattr(args, "noise_floor", False):
        from ._noise import cmd_noise_floor  # lazy: start-up time (filterdb --help stays fast)
        return cmd_noise_floor(args, opts, rng)
    if args.model:
        r = analysis.drift_to_model(args.db, args.model, by=args.by, bins=args.bins, range=rng,
                                    weights=args.weights, **opts)
        if emit(args, r.to_dict(), lambda *_: model_drift_rows(r)):
            return 0
        print(f"{r.model}: {r.n_filters:,} 3x3 filters; drift against the selection "
              f"{r.drift:.4f}")
        print(f"computed with: {analysis.provenance_text(r.provenance)}")
        if r.n_outside:
            print(f"note: {r.n_outside:,} filters have coefficients outside the range "
                  "(not binned)")
        if r.by:
            rows = [[g, int(r.sizes[g]), float(d)] for g, d in r.groups.items()]
            print(format_table(rows, [r.by, "filters", "drift"]))
        return 0
    if not args.by:
        raise FilterDBError("drift needs --by COLUMN (or 'depth_bin'), or --model FILE")
    r = analysis.drift(args.db, args.by, bins=args.bins, range=rng, weights=args.weights,
                       **opts)
    if emit(args, r.to_dict(), lambda *_: drift_rows(r)):
        return 0
    M = r.matrix.to_numpy()
    mean = r.mean_drift.to_numpy()
    G = len(M)
    print(f"drift by {r.by}: {G} groups, {int(r.sizes.sum()):,} filters")
    print(f"computed with: {analysis.provenance_text(r.provenance)}")
    head = ["#", r.by, "filters", "mean"]
    if G <= MAX_MATRIX_GROUPS:
        rows = [[i, g, int(r.sizes.iloc[i]), float(mean[i]), *map(float, M[i])]
                for i, g in enumerate(r.groups)]
        print(format_table(rows, head + [str(i) for i in range(G)]))
    else:
        rows = [[i, g, int(r.sizes.iloc[i]), float(mean[i])] for i, g in enumerate(r.groups)]
        print(format_table(rows, head))
        print(f"({G} groups: the full matrix with --json)")
    if G > 1:
        up = r.upper_triangle()
        print(f"pairwise drift: median {np.median(up):.4f}, min {up.min():.4f}, "
              f"max {up.max():.4f}")
    return 0


def _drift_builtin(args) -> int:
    """``drift --model FILE`` without a database: against the built-in reference."""
    from ..zoo.reference import drift_to_model  # lazy: start-up time (filterdb --help stays fast)

    if args.range_ is not None or args.bins != 70 or args.where:
        raise FilterDBError("--range, --bins and --where need a database: the built-in "
                            "reference has fixed bins and range")
    r = drift_to_model(args.model, by=args.by, weights=args.weights)
    ref = r.extra["reference"]
    if emit(args, {**r.to_dict(), "reference": ref}, lambda *_: model_drift_rows(r)):
        return 0
    print(f"{r.model}: {r.n_filters:,} 3x3 filters; drift against the built-in reference "
          f"{ref['name']} ({ref['n_models']} models, {ref['n_filters_3x3']:,} filters) "
          f"{r.drift:.4f} (weights {r.weights_name}, {r.bins} bins over "
          f"[{r.range[0]:.4g}, {r.range[1]:.4g}])")
    if r.n_outside:
        print(f"note: {r.n_outside:,} filters have coefficients outside the range (not binned)")
    if r.by:
        print(format_table([[g, int(r.sizes[g]), float(d)] for g, d in r.groups.items()],
                           [r.by, "filters", "drift"]))
    return 0
