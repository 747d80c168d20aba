"""Graph depth: the longest path, in nodes, from a real graph input to each node."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence


def longest_path_depths(
    node_inputs: Sequence[Sequence[str]],
    node_outputs: Sequence[Sequence[str]],
    graph_inputs: set[str],
) -> list[int | None]:
    """Depth of every node: 1 + the deepest producer among its inputs that descend
    from a real graph input (graph inputs count 0). A node fed only by constants
    (initializers, weight-dequantisation chains) gets ``None``.

    Nodes may come in any order; cycles (which valid models do not have) raise ValueError.
    """
    n = len(node_inputs)
    producer: dict[str, int] = {}
    for i, outs in enumerate(node_outputs):
        for t in outs:
            if t:
                producer[t] = i
    consumers = defaultdict(list)
    indeg = [0] * n
    for i, ins in enumerate(node_inputs):
        preds = {producer[t] for t in ins if t in producer and producer[t] != i}
        indeg[i] = len(preds)
        for p in preds:
            consumers[p].append(i)
    depth: list[int | None] = [None] * n
    # Kahn's algorithm in topological order.
    ready = [i for i in range(n) if indeg[i] == 0]
    seen = 0
    while ready:
        i = ready.pop()
        seen += 1
        best = None
        for t in node_inputs[i]:
            if t in producer and producer[t] != i:
                d = depth[producer[t]]
            elif t in graph_inputs:
                d = 0
            else:
                d = None
            if d is not None and (best is None or d > best):
                best = d
        depth[i] = None if best is None else best + 1
        for c in consumers[i]:
            indeg[c] -= 1
            if indeg[c] == 0:
                ready.append(c)
    if seen != n:
        raise ValueError("graph has a cycle")
    return depth


# TensorFlow ops whose output has the channels of their (non-constant) data inputs:
# elementwise, bias, batch norm and pooling (NHWC or NCHW alike). Not ``Pad``: it may pad
# the channel axis (BlazeNet's residual shortcuts do, in the MediaPipe models of the zoo)
SAME_CHANNELS = frozenset({
    "Identity", "StopGradient", "Snapshot", "Cast", "BiasAdd", "BiasAddV1",
    "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "_FusedBatchNormEx",
    "Relu", "Relu6", "Elu", "Selu", "LeakyRelu", "Sigmoid", "Tanh", "Softplus", "Softsign",
    "Prelu", "Neg", "Abs", "Square", "Sqrt", "Rsqrt", "Exp", "Erf", "ClipByValue",
    "Add", "AddV2", "Sub", "Mul", "RealDiv", "Maximum", "Minimum", "SquaredDifference",
    "MaxPool", "AvgPool", "MaxPoolV2",
})


def input_channels(tensor: str, producer, known: dict, limit: int = 100_000) -> int | None:
    """The channel count of ``tensor`` in a TensorFlow graph, or None if not found.

    Walks back from ``tensor`` through ops of :data:`SAME_CHANNELS` until it meets a node
    of ``known`` (node name -> output channels: the convolutions read, whose kernels give
    them). ``producer(name)`` returns ``(op, data input names)`` of a node, or None. A
    branch ending anywhere else (a constant, a reshape, a concatenation, a padding, a graph input)
    is dropped and the next input tried. A GraphDef does not record a tensor's channels,
    so this is how a grouped ``Conv2D`` (kernel ``[kh, kw, c_in / groups, c_out]``) gets
    its ``groups``: :func:`conv2d_groups`.
    """
    stack, seen = [tensor], set()
    while stack and len(seen) < limit:
        x = stack.pop()
        if x in known:
            return int(known[x])
        if x in seen:
            continue
        seen.add(x)
        node = producer(x)
        if node is not None and node[0] in SAME_CHANNELS:
            stack.extend(reversed(list(node[1])))
    return None


def conv2d_groups(channels: int | None, kernel_in: int) -> int:
    """``groups`` of a TensorFlow ``Conv2D`` whose input has ``channels`` and whose kernel
    ``c_in / groups``: their quotient when it is a whole number above 1, else 1 (unknown
    or inconsistent channels keep the plain convolution)."""
    if not channels or kernel_in < 1 or channels <= kernel_in or channels % kernel_in:
        return 1
    return channels // kernel_in
