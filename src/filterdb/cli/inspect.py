"""``filterdb inspect PATH...``: the 2-D convolution layers of model files; folders are read
recursively. One file: its full report; several (or a folder): one line per model, the full
reports with ``--layers``; ``--json`` a list, ``--csv`` a table. A bad file fails alone."""
from __future__ import annotations

from .._table import format_table, shorten
from ._common import add_output_options, print_json


def register(sub) -> None:
    p = sub.add_parser("inspect", help="list the 2-D convolution layers of model files")
    p.add_argument("files", nargs="+", metavar="PATH",
                   help="model file(s) or folder(s) (read recursively)")
    add_output_options(p, "print CSV: one row per model (per layer with --layers), the batch "
                       "form of --json (a list of models)",
                       json_help="print JSON (one object, or a list)")
    p.add_argument("--layers", action="store_true",
                   help="several models: also each model's layer table")
    p.set_defaults(func=cmd_inspect)


def render(model) -> str:
    """The human-readable report of one model."""
    rows = [(shorten(l.name), l.op, "x".join(map(str, l.shape)), l.groups, l.conv_depth,
             round(l.conv_depth_norm, 4), l.n_filters_3x3) for l in model.layers]
    out = [f"{model.path}",
           f"  format {model.format}   producer {model.producer or '?'} {model.producer_version or ''}"
           f"   opset {model.opset if model.opset is not None else '-'}   depth from {model.depth_source}",
           f"  sha256 {model.sha256}", ""]
    if rows:
        out.append(format_table(rows, ["layer", "op", "shape", "groups", "conv_depth",
                                       "conv_depth_norm", "3x3 filters"]))
        out.append("")
    kc = ", ".join(f"{k}: {v:,}" for k, v in model.kernel_counts.items()) or "none"
    out.append(f"  {len(model.layers)} conv layers, {model.n_conv_depths} conv depths; "
               f"filters by kernel: {kc}")
    out.append(f"  total_filters (all but 1x1) {model.total_filters:,}; "
               f"3x3 share {model.share_3x3:.4f}")
    if model.skipped:
        out.append(f"  skipped {len(model.skipped)}:")
        out += [f"    {s.name} ({s.op}): {s.reason}" for s in model.skipped]
    for w in model.warnings:
        out.append(f"  warning: {w}")
    return "\n".join(out)


def cmd_inspect(args) -> int:
    """One file: its report (its error is the CLI's one-line error); else the batch form
    (:mod:`filterdb.cli._batch`), exit 2 when any model failed."""
    from . import _batch  # lazy: start-up time: on first use

    if not _batch.is_batch(args.files, args.csv):
        from ..readers import read_model  # lazy: start-up time: on first use

        model = read_model(args.files[0])
        if args.json:
            print_json(model.to_dict())
        else:
            print(render(model))
        return 0
    from ..api import InspectResult  # lazy: start-up time: on first use

    results = _batch.run(args.files, InspectResult)
    cols = ["name", "format", "layers", "conv_depths", "filters_3x3", "depth_source"]
    return _batch.report(results, args, cols, ["model", "format", "conv layers", "conv depths",
                                               "3x3 filters", "depth from"],
                         lambda r: render(r.model))
