"""The report at the published shape: time and size for 647 models and 21,436 layers.

Builds (once) a synthetic database of the published shape (:mod:`filterdb.synth`; the filter
count only changes the analysis passes, not the page), then writes the report twice: the
first run computes and caches the analyses, the second draws the page from the cache (the
goal: at most 240 s and 25 MB on 2 cores). Prints both times, the page's size and how much of
it is figures.

Usage: python benchmarks/report.py DB [--filters 2000000] [--model-figures N]
"""
from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db", metavar="DB")
    ap.add_argument("--filters", type=int, default=2_000_000)
    ap.add_argument("--model-figures", type=int, default=None,
                    help="models whose detail gets figures (default: the report's)")
    ap.add_argument("--out", default=None, help="the page (default DB/../report.html)")
    a = ap.parse_args()

    from filterdb.report.database_report import build_report
    from filterdb.synth import build_synthetic

    r = build_synthetic(a.db, a.filters)
    if r["added"]:
        print(f"built {a.db}: {r['models']} models, {r['layers']:,} layers, "
              f"{r['filters']:,} filters in {r['seconds']:.0f} s")
    out = a.out or os.path.join(os.path.dirname(os.path.abspath(a.db)), "report.html")
    times = []
    for label in ("first (analyses computed and cached)", "second (from the cache)"):
        t = time.perf_counter()
        opts = {} if a.model_figures is None else {"model_figures": a.model_figures}
        build_report(a.db, out, quiet=True, **opts)
        times.append(time.perf_counter() - t)
        size = os.path.getsize(out)
        print(f"{label}: {times[-1]:.1f} s, {size / 1e6:.1f} MB")
    text = Path(out).read_text(encoding="utf-8")
    figs = sum(len(m) for m in re.findall(r'src="data:image/[^"]+"', text))
    svgs = sum(len(m) for m in re.findall(r"<svg.*?</svg>", text, re.S))
    print(f"{out}: {len(text) / 1e6:.1f} MB, of which PNG figures {figs / 1e6:.1f} MB and "
          f"inline SVG {svgs / 1e6:.1f} MB; {text.count('<details')} collapsed blocks")


if __name__ == "__main__":
    main()
