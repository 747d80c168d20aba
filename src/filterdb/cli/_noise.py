"""``filterdb drift --noise-floor``: between-group drift beside the within-group floor and
permutation p-values (filterdb.analysis.noise)."""
from __future__ import annotations

from .._table import format_table
from ..errors import FilterDBError
from ..kernels.stats import holm
from ._common import emit


def noise_args(p) -> None:
    g = p.add_argument_group("noise floor (with --by)")
    g.add_argument("--noise-floor", action="store_true",
                   help="also the within-group model-to-model drift and a permutation "
                   "p-value per pair of groups")
    g.add_argument("--permutations", type=int, default=1000, metavar="N",
                   help="random relabellings per pair (default 1000; pairs with at most N "
                   "distinct relabellings are enumerated exactly)")
    g.add_argument("--within", metavar="COLS",
                   help="comma-separated columns two models of a group must share to be "
                   "compared (replicates), e.g. architecture,x_width,x_depth,x_trained "
                   "(default: every pair of models of a group)")
    g.add_argument("--seed", type=int, default=0, help="permutation seed (default 0)")


def _f(v) -> float | None:
    import numpy as np  # lazy: start-up time (filterdb --help stays fast)
    return None if v is None or not np.isfinite(v) else float(v)


def noise_rows(r, table: str) -> list[dict]:
    """``drift --noise-floor --csv``: ``pairs`` (one row per pair of groups, the ``pairs``
    of --json) or ``within`` (one row per group: the ``within`` of --json, the group first)."""
    d = r.to_dict()
    if table == "within":
        return [{r.by: g, **w} for g, w in d["within"].items()]
    return d["pairs"]


def cmd_noise_floor(args, opts, rng) -> int:
    from ..analysis import noise_floor, provenance_text  # lazy: start-up time

    if args.model:
        raise FilterDBError("--noise-floor compares the groups of --by; it does not take "
                            "--model")
    if not args.by:
        raise FilterDBError("--noise-floor needs --by COLUMN")
    r = noise_floor(args.db, args.by, bins=args.bins, range=rng, weights=args.weights,
                    within=args.within, n_permutations=args.permutations, seed=args.seed,
                    **opts)
    # Holm's correction over the pairs tested together (every pair of groups of --by)
    r.pairs = r.pairs.assign(p_holm=holm(r.pairs["p_value"].to_numpy(float)))
    if emit(args, r.to_dict, lambda table: noise_rows(r, table)):
        return 0
    d = r.drift
    within = f" within {', '.join(r.within_columns)}" if r.within_columns else ""
    print(f"drift by {r.by}: {len(r.groups)} groups, {int(d.sizes.sum()):,} filters")
    print(f"computed with: {provenance_text(d.provenance)}")
    rows = [[w.group, w.models, w.pairs, _f(w.median), _f(w.q25), _f(w.q75)]
            for w in r.within.itertuples()]
    print(f"within-group model-to-model drift{within}:")
    print(format_table(rows, [r.by, "models", "pairs", "median", "q25", "q75"]))
    rows = [[f"{t.group_a} | {t.group_b}", float(t.drift), _f(t.floor_a), _f(t.floor_b),
             float(t.null_median), float(t.p_value), float(t.p_holm),
             f"{t.n}{' exact' if t.exact else ''}"]
            for t in r.pairs.sort_values("drift", ascending=False).itertuples()]
    if rows:
        print(f"pairs (drift D in nats; p: permutation test, {r.n_permutations} relabellings, "
              f"seed {r.seed}; p Holm: corrected for the {len(rows)} pairs):")
        print(format_table(rows, ["pair", "drift", "floor a", "floor b", "null median",
                                  "p", "p Holm", "relabellings"]))
    s = r.summary
    print(f"median between-group drift {s['between_median']:.4f}; median within-group "
          f"drift {s['within_median']:.4f} (ratio {s['ratio']:.3g}); median permutation "
          f"null {s['null_median']:.4f}; {s['significant_0.05']}/{s['pairs']} pairs with "
          f"p <= 0.05, {int((r.pairs['p_holm'] <= 0.05).sum())} after Holm's correction")
    return 0
