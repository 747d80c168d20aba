"""``filterdb inspect FILE``: the 2-D convolution layers of one model file."""
from __future__ import annotations

from .._table import format_table, shorten
from ..errors import FilterDBError
from ._common import print_json


def register(sub) -> None:
    p = sub.add_parser("inspect", help="list the 2-D convolution layers of a model file")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="model file(s) or folder(s) (folders are searched for models)")
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
    from ..readers import read_model
    from ..readers.folders import expand


    models = []
    for f, err in expand(args.files):  # folders: the models they hold
        if err:
            raise FilterDBError(err)
        models.append(read_model(f))
    if args.json:
        print_json(models[0].to_dict() if len(models) == 1 else [m.to_dict() for m in models])
    else:
        print("\n\n".join(render(m) for m in models))
    return 0
