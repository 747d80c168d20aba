"""Plans: the selected layer ranges of a source cut into tasks (see :mod:`filterdb.engine`).

A task reads a few contiguous windows into a buffer of about ``target_rows`` rows and
carries run-length layer ids. Unselected rows read through (gaps up to ``gap_rows``) and
alignment padding get layer id -1. With ``whole_layers`` no layer is split between tasks:
consecutive layers share a task while their rows stay within ``target_rows``, and a bigger
layer is a task alone (for kernels that need all of a layer's filters at once, such as the
layer metrics of docs/method.md, section 5).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FilterDBError

DEFAULT_TARGET_ROWS = 1 << 20
ALIGN_ROWS = 16  # 16 rows x 36 bytes = 576 bytes = 9 x 64: keeps each read 64-byte aligned
GAP_ROWS = 4096  # read through unselected gaps up to this size instead of a new read
_UNBOUNDED = 1 << 62


@dataclass(frozen=True)
class Task:
    """One unit of work: windows to read into the buffer and the layer of each run."""

    reads: np.ndarray  # (k, 3) int64: source start, count, buffer offset
    runs: np.ndarray  # (r, 3) int64: buffer offset, count, layer id
    span: int  # buffer rows used
    n_rows: int  # selected rows


@dataclass(frozen=True)
class Plan:
    tasks: tuple[Task, ...]
    n_rows: int  # selected rows in all
    max_span: int  # buffer rows a worker thread needs

    def __len__(self):
        return len(self.tasks)


def layer_groups(counts, target_rows: int) -> np.ndarray:
    """Group boundaries ``b`` (group ``g`` = layers ``b[g]:b[g+1]``): consecutive layers
    while their rows stay within ``target_rows``; a bigger layer is a group alone."""
    counts = np.asarray(counts, np.int64)
    bounds = [0]
    fill = 0
    for i, c in enumerate(counts.tolist()):
        if fill and fill + c > target_rows:
            bounds.append(i)
            fill = 0
        fill += c
    bounds.append(len(counts))
    return np.asarray(bounds if len(counts) else [0], np.int64)


def make_plan(starts, counts, layer_ids, target_rows: int = DEFAULT_TARGET_ROWS,
              gap_rows: int = GAP_ROWS, align_rows: int = ALIGN_ROWS,
              whole_layers: bool = False) -> Plan:
    """Tasks over the selected ranges (sorted by start, non-overlapping) of a source;
    with ``whole_layers`` each task holds whole layers (module docstring)."""
    starts = np.asarray(starts, dtype=np.int64).ravel()
    counts = np.asarray(counts, dtype=np.int64).ravel()
    layer_ids = np.asarray(layer_ids, dtype=np.int64).ravel()
    if not (len(starts) == len(counts) == len(layer_ids)):
        raise FilterDBError("starts, counts and layer_ids must have the same length")
    if (counts < 0).any() or (starts < 0).any() or (layer_ids < 0).any():
        raise FilterDBError("negative start, count or layer id in the selection")
    keep = counts > 0
    starts, counts, layer_ids = starts[keep], counts[keep], layer_ids[keep]
    if len(starts) == 0:
        raise FilterDBError("empty selection: no filters to analyse")
    if (starts[1:] < starts[:-1] + counts[:-1]).any():
        raise FilterDBError("selected ranges must be sorted by start and must not overlap")
    tasks: list[Task] = []
    if whole_layers:  # each group one task: its target is never reached
        b = layer_groups(counts, max(int(target_rows), 1))
        for g0, g1 in zip(b[:-1].tolist(), b[1:].tolist()):
            _cut(starts[g0:g1], counts[g0:g1], layer_ids[g0:g1], _UNBOUNDED, gap_rows,
                 align_rows, tasks)
    else:
        _cut(starts, counts, layer_ids, max(int(target_rows), align_rows), gap_rows,
             align_rows, tasks)
    return Plan(tuple(tasks), int(counts.sum()), max(t.span for t in tasks))


def reversed_plan(plan: Plan) -> Plan:
    """The same tasks in reverse order. A pass right after another one starts on the
    rows the page cache still holds from it (for reductions whose order does not matter:
    min / max, integer counts, per-layer values)."""
    return Plan(plan.tasks[::-1], plan.n_rows, plan.max_span)


def plan_ranges(plan: Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The selected ranges ``(starts, counts, layer_ids)`` a plan covers, in source order
    (its runs, located through its reads)."""
    out = []
    for t in plan.tasks:
        reads = t.reads
        for off, n, lid in t.runs.tolist():
            r = int(np.searchsorted(reads[:, 2], off, side="right")) - 1
            out.append((int(reads[r, 0]) + off - int(reads[r, 2]), n, lid))
    out.sort()
    a = np.asarray(out, np.int64).reshape(-1, 3)
    return a[:, 0], a[:, 1], a[:, 2]


SAMPLE_ROWS = 1 << 22  # rows of a sample plan (4 M filters, 151 MB)
SAMPLE_WINDOWS = 1024


def sample_plan(starts, counts, layer_ids, rows: int | None = None,
                windows: int = SAMPLE_WINDOWS) -> Plan:
    """A plan over about ``rows`` (default :data:`SAMPLE_ROWS`) of the selected rows:
    ``windows`` windows evenly spaced over them (all of them if they are fewer). For a
    provisional PCA fixed before a pass (:mod:`filterdb.kernels.extremes`)."""
    rows = SAMPLE_ROWS if rows is None else int(rows)
    starts = np.asarray(starts, np.int64).ravel()
    counts = np.asarray(counts, np.int64).ravel()
    layer_ids = np.asarray(layer_ids, np.int64).ravel()
    keep = counts > 0
    starts, counts, layer_ids = starts[keep], counts[keep], layer_ids[keep]
    total = int(counts.sum())
    if total > rows:
        w = max(ALIGN_ROWS, rows // max(int(windows), 1))
        n_win = max(1, rows // w)
        pos = (np.arange(n_win, dtype=np.float64) * (total / n_win)).astype(np.int64)
        cum = np.concatenate([[0], np.cumsum(counts)])
        li = np.searchsorted(cum, pos, side="right") - 1
        off = pos - cum[li]
        starts, counts, layer_ids = starts[li] + off, np.minimum(w, counts[li] - off), \
            layer_ids[li]
    return make_plan(starts, counts, layer_ids)


def _cut(starts, counts, layer_ids, target: int, gap_rows: int, align_rows: int,
         tasks: list) -> None:
    """Append the tasks of buffers of about ``target`` rows over the ranges to ``tasks``."""
    reads: list[list[int]] = []
    runs: list[list[int]] = []
    pos = sel = 0
    end = -1  # source row after the last read of the current task

    def close():
        nonlocal reads, runs, pos, sel, end
        if runs:
            tasks.append(Task(np.array(reads, np.int64).reshape(-1, 3),
                              np.array(runs, np.int64).reshape(-1, 3), pos, sel))
        reads, runs, pos, sel, end = [], [], 0, 0, -1

    for s, c, lid in zip(starts.tolist(), counts.tolist(), layer_ids.tolist()):
        while c > 0:
            if reads and 0 <= s - end <= gap_rows:  # extend the last read through the gap
                off = pos + (s - end)
                if off >= target:
                    close()
                    continue
                take = min(c, target - off)
                reads[-1][1] += (s - end) + take
            else:
                off = -(-pos // align_rows) * align_rows
                if off >= target:
                    close()
                    continue
                take = min(c, target - off)
                reads.append([s, take, off])
            runs.append([off, take, lid])
            pos = off + take
            sel += take
            end = s + take
            s += take
            c -= take
            if pos >= target:
                close()
    close()


__all__ = ["Task", "Plan", "make_plan", "sample_plan", "reversed_plan", "plan_ranges",
           "SAMPLE_ROWS",
           "layer_groups", "DEFAULT_TARGET_ROWS", "ALIGN_ROWS", "GAP_ROWS"]
