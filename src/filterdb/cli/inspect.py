"""``filterdb inspect FILE``: the 2-D convolution layers of one model file."""
from __future__ import annotations

from .._table import format_table, shorten
from ._common import print_json


def register(sub) -> None:
    p = sub.add_parser("inspect", help="list the 2-D convolution layers of a model file")
    p.add_argument("files", nargs="+", metavar="FILE", help="model file(s)")
    p.add_argument("--json", action="store_true", help="print JSON (one object, or a list)")
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
    """Every file is read and reported, a bad one as its one-line error (on stderr; in JSON
    as ``{"path", "error"}``); the exit code is 2 when any file failed."""
    import sys

    from ..errors import FilterDBError
    from ..readers import read_model

    if len(args.files) == 1:  # one file: its error is the CLI's one-line error
        results = [read_model(args.files[0])]
    else:
        results = []
        for f in args.files:
            try:
                results.append(read_model(f))
            except FilterDBError as e:
                results.append(e)
    failed = [r for r in results if isinstance(r, FilterDBError)]
    if args.json:
        objs = [{"path": getattr(r, "path", None), "error": str(r)}
                if isinstance(r, FilterDBError) else r.to_dict() for r in results]
        print_json(objs[0] if len(objs) == 1 else objs)
    else:
        print("\n\n".join(render(r) for r in results if not isinstance(r, FilterDBError)))
    for e in failed:
        print(f"filterdb: error: {e}", file=sys.stderr)
    if failed and len(results) > 1:
        print(f"filterdb: {len(failed)} of {len(results)} files failed", file=sys.stderr)
    return 2 if failed else 0
