"""Slow segment writes for the crash and snapshot tests, from the test side (the store has
no test hook): each write of ``SegmentWriter.WRITE_CHUNK_ROWS`` rows is followed by a pause.

In-process: ``slow_appends(monkeypatch, 0.05)``. In a child process:
``python tests/_slow_write.py 0.05 add DB FILE`` runs the ``filterdb`` command line.
"""
from __future__ import annotations

import sys
import time

import numpy as np


def _patched(orig, delay: float):
    def append(self, rows):
        rows = np.ascontiguousarray(rows, dtype="<f4").reshape(-1, 9)
        first = self.position
        for c in range(0, rows.shape[0], self.WRITE_CHUNK_ROWS):
            orig(self, rows[c:c + self.WRITE_CHUNK_ROWS])
            time.sleep(delay)
        return first

    return append


def slow_appends(monkeypatch, delay: float) -> None:
    from filterdb.store.segments import SegmentWriter

    monkeypatch.setattr(SegmentWriter, "append", _patched(SegmentWriter.append, delay))


if __name__ == "__main__":
    from filterdb.cli import main
    from filterdb.store.segments import SegmentWriter

    SegmentWriter.append = _patched(SegmentWriter.append, float(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
