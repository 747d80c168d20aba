"""``verify``: the catalog against the segment files."""
from __future__ import annotations

import os
import zlib

import numpy as np

from ..errors import FilterDBError
from .catalog import integrity_problems
from .segments import ROW_BYTES, SegmentReader, aligned_empty, segment_name


def segment_sizes(filters_dir) -> dict[int, int]:
    out = {}
    for name in os.listdir(filters_dir):
        if name.startswith("seg-") and name.endswith(".f32"):
            try:
                out[int(name[4:-4])] = os.path.getsize(os.path.join(filters_dir, name))
            except ValueError:
                continue
    return out


def check_segments(sizes: dict[int, int], committed: int, segment_rows: int) -> list[str]:
    """Every committed row must be on disk (bytes past ``committed`` are allowed)."""
    problems = []
    n_seg = -(-committed // segment_rows)
    for k in range(n_seg):
        need = min(segment_rows, committed - k * segment_rows) * ROW_BYTES
        have = sizes.get(k)
        if have is None:
            problems.append(f"segment {segment_name(k)} is missing ({need // ROW_BYTES} "
                            "committed rows)")
        elif have < need:
            problems.append(f"segment {segment_name(k)} is truncated: {have // ROW_BYTES} rows "
                            f"on disk, {need // ROW_BYTES} committed")
    return problems


def check_ranges(starts, counts, free_starts, free_counts, committed: int) -> list[str]:
    """Layer ranges inside [0, committed), not overlapping each other nor a free range;
    unreferenced ids must be recorded as free."""
    problems = []
    s = np.concatenate([np.asarray(starts, np.int64), np.asarray(free_starts, np.int64)])
    c = np.concatenate([np.asarray(counts, np.int64), np.asarray(free_counts, np.int64)])
    kind = np.array(["layer"] * len(starts) + ["free range"] * len(free_starts))
    bad = (s < 0) | (c < 0) | (s + c > committed)
    for i in np.flatnonzero(bad)[:20]:
        problems.append(f"{kind[i]} [{s[i]}, {s[i] + c[i]}) is outside the {committed} "
                        "committed filters")
    order = np.argsort(s, kind="stable")
    s, c, kind = s[order], c[order], kind[order]
    ends = s + c
    overlap = np.flatnonzero(s[1:] < ends[:-1])
    for i in overlap[:20]:
        problems.append(f"{kind[i]} [{s[i]}, {ends[i]}) overlaps {kind[i + 1]} "
                        f"[{s[i + 1]}, {ends[i + 1]})")
    covered = int(c[~bad[order]].sum()) if len(c) else 0
    if not problems and covered != committed:
        problems.append(f"{committed - covered} committed filter ids are neither in a layer nor "
                        "recorded as free")
    return problems


def verify(db, checksums: bool = True, chunk_rows: int = 1 << 20) -> list[str]:
    """The problems found (an empty list when the database is consistent)."""
    import sqlite3

    problems = integrity_problems(db._con)
    if problems:  # the rest reads the catalog: its answers cannot be trusted
        return problems
    try:
        return _verify(db, checksums, chunk_rows)
    except sqlite3.DatabaseError as e:
        return [f"catalog: {e}"]


def _verify(db, checksums: bool, chunk_rows: int) -> list[str]:
    con = db._con
    problems = []
    committed, sr = db.n_filters, db.segment_rows
    sizes = segment_sizes(db._filters_dir)
    seg_problems = check_segments(sizes, committed, sr)
    problems += seg_problems

    layers = con.execute("SELECT layer_id, model_id, name, kh, kw, n_filters, filter_start, "
                         "filter_count, checksum FROM layers ORDER BY filter_start").fetchall()
    starts, counts = [], []
    for lid, _mid, name, kh, kw, n, st, cnt, _crc in layers:
        want = n if (kh, kw) == (3, 3) else 0
        if cnt != want:
            problems.append(f"layer {lid} ({name}): filter_count {cnt}, expected {want}")
        if cnt and st is None:
            problems.append(f"layer {lid} ({name}): {cnt} filters but no filter_start")
        if cnt and st is not None:
            starts.append(st)
            counts.append(cnt)
    free = con.execute("SELECT start, count FROM free_ranges").fetchall()
    problems += check_ranges(starts, counts, [f[0] for f in free], [f[1] for f in free],
                             committed)

    for _mid, model, nl, nf, got_l, got_f in con.execute(
            "SELECT m.model_id, m.model, m.n_layers, m.filters_3x3, COUNT(l.layer_id), "
            "COALESCE(SUM(l.filter_count), 0) FROM models m LEFT JOIN layers l "
            "ON l.model_id = m.model_id GROUP BY m.model_id").fetchall():
        if nl != got_l or nf != got_f:
            problems.append(f"model {model}: catalog says {nl} layers / {nf} filters, "
                            f"layers table holds {got_l} / {got_f}")
    orphans = con.execute("SELECT COUNT(*) FROM layers WHERE model_id NOT IN "
                          "(SELECT model_id FROM models)").fetchone()[0]
    if orphans:
        problems.append(f"{orphans} layers belong to no model")

    if checksums and not seg_problems:
        problems += _check_checksums(db, [l for l in layers if l[7]], chunk_rows)
    return problems


def _digests(con) -> dict:
    if "digest" not in {r[1] for r in con.execute("PRAGMA table_info(layers)")}:
        return {}
    return dict(con.execute("SELECT layer_id, digest FROM layers WHERE digest IS NOT NULL"))


def _check_checksums(db, layers, chunk_rows: int) -> list[str]:
    """Each layer's crc32 and digest (:mod:`.digest`) against its filters on disk."""
    from .digest import digest_hex, piece_sums  # lazy: start-up time (digest loads numba)

    digests = _digests(db._con)
    problems = []
    reader = SegmentReader(db._filters_dir, db.segment_rows)
    buf = aligned_empty(min(chunk_rows, max((l[7] for l in layers), default=1)))
    try:
        for lid, mid, name, _kh, _kw, _n, st, cnt, crc in layers:
            if st is None or st < 0 or st + cnt > db.n_filters:
                continue
            h = da = dbs = 0
            for p in range(0, cnt, buf.shape[0]):
                m = min(buf.shape[0], cnt - p)
                try:
                    a = reader.read_into(st + p, m, buf)
                except FilterDBError as e:
                    problems.append(f"layer {lid} ({name}): {e}")
                    break
                h = zlib.crc32(memoryview(a.view(np.uint8).reshape(-1)), h)
                pa, pb = piece_sums(a, p)
                da, dbs = da + pa, dbs + pb
            else:
                want = digests.get(lid)
                if (crc is not None and h != crc) or (want and digest_hex(da, dbs) != want):
                    model = db._con.execute("SELECT model FROM models WHERE model_id = ?",
                                            (mid,)).fetchone()
                    problems.append(f"layer {lid} ({name}) of model {model[0] if model else mid}: "
                                    f"checksum mismatch (filters {st}..{st + cnt - 1} changed "
                                    "on disk)")
    finally:
        reader.close()
    return problems
