"""``filterdb import-h5|export-h5``: the published CNN Filter DB file (``dataset.h5``).

See :mod:`filterdb.store.published` for the layout, the column mapping and the guarantees.
"""
from __future__ import annotations

from ._common import add_json_option, add_output_file_option, output_path, print_json


def register(sub) -> None:
    p = sub.add_parser("import-h5", help="import a published-layout dataset.h5 into a database "
                                         "(created if missing)")
    p.add_argument("db", metavar="DB")
    p.add_argument("h5", metavar="dataset.h5")
    p.add_argument("--chunk-rows", type=int, default=1 << 20, metavar="N",
                   help="filters read per chunk (default 1,048,576 = 36 MB)")
    p.add_argument("--replace", action="store_true",
                   help="replace models already present (same model id)")
    add_json_option(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export-h5", help="export a database (or a selection) as a "
                                         "published-layout dataset.h5")
    p.add_argument("db", metavar="DB")
    p.add_argument("out", metavar="OUT.h5", nargs="?", help="output file (or -o OUT.h5)")
    add_output_file_option(p, "OUT.h5")
    p.add_argument("--where", help="SQL expression over the layer columns, e.g. "
                                   "\"task = 'Segmentation'\"")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="filters dtype (default float32)")
    p.add_argument("--shape", choices=("flat", "3x3"), default="flat",
                   help="filters as N x 9 (flat, default) or N x 3 x 3 (the v1.0.0 file: "
                        "--shape 3x3 --dtype float64)")
    p.add_argument("--chunk-rows", type=int, default=1 << 20, metavar="N",
                   help="filters written per chunk")
    add_json_option(p)
    p.set_defaults(func=cmd_export)


def cmd_import(args) -> int:
    import os

    from ..errors import ReadError  # lazy: start-up time (filterdb --help stays fast)
    from ..store import open_database  # lazy: start-up time (filterdb --help stays fast)
    from ..store.published import import_h5  # lazy: start-up time (filterdb --help stays fast)

    if not os.path.isfile(args.h5):
        raise ReadError(args.h5, "no such file")
    new = not os.path.exists(args.db)
    try:
        with open_database(args.db, mode="w", create=True) as db:
            results = import_h5(db, args.h5, chunk_rows=args.chunk_rows, replace=args.replace)
    except BaseException:
        if new:  # a failed import leaves no database behind
            import shutil

            shutil.rmtree(args.db, ignore_errors=True)
        raise
    added = [r for r in results if r.status != "exists"]
    if args.json:
        print_json([r.to_dict() for r in results])
    else:
        print(f"{args.h5}: {len(added)} models added or replaced "
              f"({sum(r.n_layers for r in added):,} layers, "
              f"{sum(r.n_filters for r in added):,} filters), "
              f"{len(results) - len(added)} already present")
    return 0


def cmd_export(args) -> int:
    from ..errors import FilterDBError  # lazy: start-up time (filterdb --help stays fast)
    from ..store import open_database  # lazy: start-up time (filterdb --help stays fast)
    from ..store.published import export_h5  # lazy: start-up time (filterdb --help stays fast)

    out = output_path(args, "out")
    if not out:
        raise FilterDBError("export-h5 needs an output file: -o OUT.h5")
    with open_database(args.db) as db:
        info = export_h5(db, out, where=args.where, dtype=args.dtype, shape=args.shape,
                         chunk_rows=args.chunk_rows)
    if args.json:
        print_json(info)
    else:
        print(f"wrote {info['path']}: {info['models']:,} models, {info['layers']:,} layers, "
              f"{info['filters']:,} filters")
    return 0
