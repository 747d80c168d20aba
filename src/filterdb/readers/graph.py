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
