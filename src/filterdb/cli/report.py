"""``filterdb report DB -o report.html [--where SQL]``: one self-contained HTML report."""
from __future__ import annotations

import sys

from ._common import (
    add_engine_options,
    add_json_option,
    add_output_file_option,
    engine_kwargs,
)


def register(sub) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report of a database: "
                                      "PCA, distributions, drift, health of every model")
    p.add_argument("db", metavar="DB", help="filter database")
    add_output_file_option(p, "HTML", default="report.html")
    p.add_argument("--where", help="SQL expression over the layer and model columns")
    p.add_argument("--title", help="page title")
    p.add_argument("--no-models", action="store_true", help="leave out each model's detail")
    p.add_argument("--model-figures", type=int, default=20, metavar="N",
                   help="draw the figures of the N most degenerated models (default 20; "
                        "the others get their tables), so the page stays small")
    p.add_argument("--figures", metavar="DIR",
                   help="also save every figure there as SVG")
    add_json_option(p, "print what was written (path, size, seconds, findings) as JSON")
    add_engine_options(p, cache=False)
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from ..report.database_report import (
        build_report,  # lazy: start-up time (filterdb --help stays fast)
    )

    res = build_report(args.db, args.output, where=args.where, title=args.title,
                       models=not args.no_models, **engine_kwargs(args),
                       quiet=args.quiet, figures_dir=args.figures,
                       model_figures=args.model_figures)
    if args.json:
        from ._common import print_json  # lazy: start-up time (filterdb --help stays fast)

        print_json({"path": str(res.path), "bytes": res.path.stat().st_size,
                    "seconds": res.seconds, "skipped": res.skipped,
                    "findings": res.data.get("findings", []), "figures_dir": args.figures})
        return 0
    print(f"wrote {res.path} in {res.seconds:.1f} s"
          + (f" ({len(res.skipped)} item(s) skipped, see the page)" if res.skipped else ""),
          file=sys.stderr)
    return 0
