"""The paper's analysis on a population database, as in docs/population.md:

    filterdb zoo ingest pop.filterdb --distinct
    python -m filterdb.zoo.study pop.filterdb [--where SQL] [--json]

prints the PCA (EVR and eigen-images, method.md sec. 3), the median pairwise drift by task,
visual category and depth bin (sec. 4) with the last depth bin against the others, and the
share of degenerated layers by task and visual category (sec. 5). Every number comes from
the public API (``filterdb.analysis``, ``filterdb.health``), so ``filterdb pca``, ``filterdb
drift --by`` and ``filterdb health`` give the same values.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .. import analysis as A
from .._table import format_table
from ..health import database_health
from ..health.summary import summarise_groups
from ..store import open_database

# published figures (method.md sec. 3 and 4): EVR of the 1.46 billion filters, and the
# orders of magnitude read off the paper's drift figure for its 647 models
PAPER_EVR = (0.398, 0.183, 0.117, 0.099, 0.066, 0.055, 0.030, 0.028, 0.024)
PAPER_MEDIAN_DRIFT = {"task": 0.11, "visual_category": 0.42, "depth_bin": 0.02}


def study(db, where: str | None = None) -> dict:
    p = A.pca(db, where=where)
    out = {"n_filters": int(p.n), "evr": np.asarray(p.explained_variance_ratio).tolist(),
           "mean": np.asarray(p.mean).tolist(),
           "components": np.asarray(p.components).tolist(), "paper_evr": list(PAPER_EVR)}
    summ = A.drift_summary(db, ["task", "visual_category", "depth_bin"], where=where)
    drift = {}
    for col, r in summ.results.items():
        M = r.matrix.to_numpy()
        iu = np.triu_indices(len(M), 1)
        d = {"groups": list(r.groups), "sizes": [int(s) for s in r.sizes],
             "mean_drift": [float(v) for v in r.mean_drift],
             "median": float(np.median(M[iu])) if len(M) > 1 else float("nan"),
             "paper_median": PAPER_MEDIAN_DRIFT[col]}
        if col == "depth_bin" and len(M) > 2:
            rest = M[:-1, :-1][np.triu_indices(len(M) - 1, 1)]
            d["last_bin_vs_others"] = [float(v) for v in M[-1, :-1]]
            d["median_among_others"] = float(np.median(rest))
            d["median_per_bin_vs_others"] = [
                float(np.median(np.delete(M[i], i))) for i in range(len(M))]
        drift[col] = d
    out["drift"] = drift
    hdf = database_health(db, where)
    health = {}
    for col in ("task", "visual_category"):
        g = summarise_groups(hdf, col)
        health[col] = [{col: r[col], "n_assessed": int(r["n_assessed"]),
                        "n_degenerated": int(r["n_degenerated"]),
                        "share_degenerated": float(r["share_degenerated"])}
                       for _, r in g.iterrows()]
    a = hdf["assessed"].to_numpy(bool)
    out["health"] = {"by": health, "n_layers": int(len(hdf)), "n_assessed": int(a.sum()),
                     "n_degenerated": int((hdf["degenerated"].to_numpy(bool) & a).sum())}
    return out


def render(s: dict) -> str:
    lines = [f"PCA of {s['n_filters']:,} scaled 3x3 filters"]
    rows = [[f"c{i}", f"{e:.3f}", f"{pe:.3f}",
             " | ".join(" ".join(f"{v:+.2f}" for v in np.reshape(c, (3, 3))[k])
                        for k in range(3))]
            for i, (e, pe, c) in enumerate(zip(s["evr"], s["paper_evr"], s["components"]))]
    lines.append(format_table(rows, ["component", "EVR", "paper EVR", "eigen-image rows"]))
    lines.append(f"mean scaled filter: {np.round(s['mean'], 3).tolist()}")
    for col, d in s["drift"].items():
        lines.append(f"\ndrift by {col}: {len(d['groups'])} groups, median pairwise "
                     f"{d['median']:.3f} (paper about {d['paper_median']})")
        lines.append(format_table([[g, f"{n:,}", f"{m:.3f}"] for g, n, m in
                                   zip(d["groups"], d["sizes"], d["mean_drift"])],
                                  [col, "filters", "mean drift"]))
        if "last_bin_vs_others" in d:
            lines.append("last bin (0.9, 1.0] against the others: "
                         + ", ".join(f"{v:.3f}" for v in d["last_bin_vs_others"])
                         + f"; median among the other bins {d['median_among_others']:.3f}")
    h = s["health"]
    lines.append(f"\nhealth: {h['n_layers']} layers, {h['n_assessed']} assessed, "
                 f"{h['n_degenerated']} degenerated")
    for col, rows in h["by"].items():
        lines.append(format_table([[r[col], r["n_assessed"], r["n_degenerated"],
                                    f"{r['share_degenerated']:.3f}"] for r in rows],
                                  [col, "assessed", "degenerated", "share"]))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m filterdb.zoo.study", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("db", metavar="DB")
    ap.add_argument("--where", help="SQL expression over the layer columns")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    with open_database(args.db) as db:
        s = study(db, args.where)
    print(json.dumps(s, indent=1) if args.json else render(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
