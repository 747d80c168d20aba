"""The published CNN Filter DB file (``dataset.h5``, the data set of the paper:
Zenodo DOI 10.5281/zenodo.6371680, v1.0.0).

Import (:func:`import_h5`): the ``meta`` table (pandas/PyTables, one row per conv layer) is
read whole (it is small); its index levels become columns; rows are grouped by
``model_id`` (else by ``model``); ``filter_ids`` ``"start:end"`` (inclusive end) gives each
layer's rows of ``filters`` (``N x 9`` or ``N x 3 x 3``, float32 or float64; converted to
float32). Everything is checked before anything is written: ranges well formed, inside
``filters``, not overlapping. Then each model is streamed through
:class:`~filterdb.store.bulk.BulkWriter` in chunks (``h5py`` ``read_direct`` into reused,
aligned buffers) and committed on its own: a killed import keeps the models committed so
far and a re-run skips them (same ``sha256``) and completes.

Columns: the published names map to the catalog through :mod:`filterdb.store.vocab`
(values normalised: any Task containing "Segmentation" is "Segmentation", ``Datatype``
"formula" is "fractals", ...); ``(kh, kw) filters`` columns become ``kernel_counts``,
CamelCase integer columns (``Conv``, ``Relu``, ...) ``op_counts``. Any other column is
carried through as is: into the model's ``extra`` JSON when it is constant within every
model, else into the layer's ``extra`` JSON. Missing values (NaN) are not stored.

Identity: the file carries no hash per model. A model's ``sha256`` is
``sha256("published:" + file identity + ":" + model_id)`` where the file identity is the
sha256 of the ``filters`` shape and dtype and every ``(model, filter_ids)`` pair in file
order: stable for one file (re-runs skip what is present), different for another release.

Export (:func:`export_h5`) writes the same layout: ``filters`` streamed in chunks (default
``N x 9`` float32; ``shape='3x3', dtype='float64'`` is the v1.0.0 layout) and ``meta``
(pandas HDFStore, fixed format) with the published column names, the MultiIndex
``(model_id, conv_depth, conv_depth_norm)``, ``filter_ids`` renumbered from 0 and the
carried-through columns; only layers owning 3x3 filters are rows; ``model_id`` is
renumbered 0..K-1 in filter order. A free column is written under its own name unless that
name would read back as something else (a published or catalog column, a kernel or operator
count, an index level): then as ``x_NAME``, which imports as the free column ``NAME``. It
writes ``out.h5.tmp-PID`` and renames it at the end.

Lossless round trips: beside ``meta`` (which published notebooks read) the export writes
``filterdb_catalog``, a JSON document of the exported catalog rows: every model column (free
columns typed, under their own names) and every selected layer, non-3x3 ones included, with
its row in ``filters``. An import that finds it restores those models and layers exactly
(sha256, format, layer names and shapes, extras), taking the filters from ``filters``; a file
without it is imported from ``meta`` as above. A failed import leaves nothing behind: the
database it created is removed, and the models it added to an existing one are removed again.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import FilterDBError, ReadError
from ..readers._hdf5 import (
    BUILTIN_FILTERS,
    PYTABLES_FILTERS,
    check_hdf5,
    restricted_pytables_pickle,
)
from ..utils import aligned_empty, progress
from .bulk import BulkWriter, LayerSpec, ModelSpec
from .vocab import COLUMNS, DERIVED_COLUMNS, TEXT_COLUMNS, column_name, normalize_meta

# catalog column -> published column, in the published order
PUBLISHED_COLUMNS = {
    "model": "model", "name": "Name", "paper": "Paper",
    "pretraining_dataset": "Pretraining-Dataset", "training_dataset": "Training-Dataset",
    "visual_category": "Visual Category", "task": "Task", "accessible": "Accessible",
    "dataset_url": "Dataset URL", "producer": "producer", "op_set": "op_set", "depth": "depth",
    "total_filters": "total_filters", "filter_share_3x3": "3x3_filter_share",
}
# catalog text columns outside the published layout, exported under their own names
OTHER_TEXT = ("architecture", "url", "source", "producer_version")
INDEX = ("model_id", "conv_depth", "conv_depth_norm")
LAYER_COLUMNS = ("filter_ids", "conv_depth", "conv_depth_norm")
FORMAT = "published-h5"
CATALOG_KEY = "filterdb_catalog"  # the lossless catalog rows of an export (JSON, uint8)
CATALOG_VERSION = 1
# catalog columns a lossless import recomputes or sets itself
_NOT_CARRIED = ("model_id", "added_at", "n_layers", "filters_3x3")
_KERNEL_RE = re.compile(r"^\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*filters$")
_OP_RE = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_RANGE_RE = r"\s*(\d+)\s*:\s*(\d+)\s*"


def kernel_column(key: str) -> str:
    """``"3x3"`` -> ``"(3, 3) filters"``."""
    kh, kw = key.split("x")
    return f"({int(kh)}, {int(kw)}) filters"


def _py(v):
    """A plain Python value (None for missing)."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    import pandas as pd  # lazy: start-up time (pandas for published-format files only)

    if v is pd.NA or v is pd.NaT:
        return None
    return v


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return f"{type(e).__name__}: {s[0] if s else ''}".rstrip(": ")


# -- reading the file -------------------------------------------------------------------------
def open_filters(path):
    """``(h5py.File, dataset)`` of ``filters``, checked: ``(N, 9)`` or ``(N, 3, 3)``, float."""
    import h5py  # lazy: start-up time (published-format files only)

    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise ReadError(path, f"not a readable HDF5 file ({_first_line(e)})") from None
    try:
        # the whole file, the 'meta' table PyTables reads too: no external storage, external
        # links, virtual datasets or plugin filters
        try:
            check_hdf5(f, path, "HDF5 file", PYTABLES_FILTERS)
        except (OSError, ValueError, KeyError) as e:
            raise ReadError(path, f"corrupt HDF5 file ({_first_line(e)})") from None
        ds = f.get("filters")
        if not isinstance(ds, h5py.Dataset):
            raise ReadError(path, "no 'filters' dataset (expected N x 9 or N x 3 x 3 floats)")
        if ds.ndim not in (2, 3) or tuple(ds.shape[1:]) not in ((9,), (3, 3)):
            raise ReadError(path, f"'filters' has shape {ds.shape}, expected N x 9 or N x 3 x 3")
        if ds.dtype.kind != "f":
            raise ReadError(path, f"'filters' has dtype {ds.dtype}, expected float32 or float64")
        plist = ds.id.get_create_plist()
        for i in range(plist.get_nfilters()):  # h5py reads it: HDF5's own filters only
            code = plist.get_filter(i)[0]
            if code not in BUILTIN_FILTERS:
                raise ReadError(path, f"'filters' uses HDF5 filter {code}, which h5py would "
                                      "load as a plugin library; refused")
    except BaseException:
        f.close()
        raise
    return f, ds


def _identity(f):
    """``(device, inode)`` of the file an open ``h5py.File`` holds (None if unknown)."""
    try:
        st = os.fstat(int(f.id.get_vfd_handle()))
    except (OSError, ValueError, TypeError):
        return None
    return st.st_dev, st.st_ino


def read_meta_table(path, identity=None):
    """The ``meta`` DataFrame with its index levels as columns.

    PyTables may unpickle only plain data (:func:`~filterdb.readers._hdf5.
    restricted_pytables_pickle`). With ``identity`` (``(device, inode)`` of the file
    :func:`open_filters` checked), the file PyTables opened must be that file before anything
    is read from it: a path swapped in between is refused."""
    import pandas as pd  # lazy: start-up time (published-format files only)

    try:
        with warnings.catch_warnings(), restricted_pytables_pickle(path):
            warnings.simplefilter("ignore")
            with pd.HDFStore(path, mode="r") as st:
                if identity is not None:
                    o = os.fstat(st._handle.fileno())
                    if (o.st_dev, o.st_ino) != identity:
                        raise ReadError(path, "the file changed while it was being read")
                df = st.get("meta")
    except ReadError:
        raise
    except KeyError:
        raise ReadError(path, "no 'meta' table (a pandas DataFrame written with HDFStore)") \
            from None
    except Exception as e:
        raise ReadError(path, f"cannot read the 'meta' table ({_first_line(e)})") from None
    if not isinstance(df, pd.DataFrame):
        raise ReadError(path, f"'meta' is a {type(df).__name__}, not a DataFrame")
    names = list(df.index.names)
    if not (len(names) == 1 and names[0] is None):  # a plain unnamed index carries nothing
        drop = [n for n in names if n is not None and n in df.columns]
        if drop:
            df = df.reset_index(level=drop, drop=True)
        if df.index.nlevels > 1 or df.index.names[0] is not None:
            df = df.reset_index()
    return df.reset_index(drop=True)


@dataclass
class PublishedModel:
    model_id: object
    meta: dict
    starts: np.ndarray
    counts: np.ndarray
    conv_depth: list
    conv_depth_norm: list
    layer_extra: list = field(default_factory=list)
    sha256: str = ""

    @property
    def n_filters(self) -> int:
        return int(self.counts.sum())


def _role(col: str, df) -> str:
    """``layer`` | ``group`` | ``model`` | ``kernel`` | ``op`` | ``extra``."""
    if col in LAYER_COLUMNS:
        return "layer"
    if col == "model_id":
        return "group"
    if str(col).startswith("x_") and len(str(col)) > 2:
        return "free"  # an exported free column that would clash under its own name
    if _KERNEL_RE.match(str(col)):
        return "kernel"
    try:
        name = column_name(col)
        if name in COLUMNS:
            return "model"
    except FilterDBError:
        pass
    if _OP_RE.match(str(col)) and df[col].dtype.kind in "iuf":
        v = df[col].dropna().to_numpy()
        if np.all(v == np.round(v)) and np.all(v >= 0):
            return "op"
    return "extra"


def plan_import(df, n_rows: int, path, identity_prefix: str = "") -> list[PublishedModel]:
    """Group the meta rows into models, checking every range; raises ReadError."""
    if "filter_ids" not in df.columns:
        raise ReadError(path, "the 'meta' table has no 'filter_ids' column")
    key = "model_id" if "model_id" in df.columns else "model" if "model" in df.columns else None
    if key is None:
        raise ReadError(path, "the 'meta' table has neither a 'model_id' level nor a 'model' "
                              "column")
    ids = df["filter_ids"]
    parsed = ids.astype("string").str.extract(f"^{_RANGE_RE}$")
    bad = parsed[0].isna() | ids.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ReadError(path, f"meta row {i}: filter_ids {ids.iloc[i]!r} is not one "
                              f"contiguous range 'start:end' ({int(bad.sum())} such rows)")
    start = parsed[0].astype(np.int64).to_numpy()
    end = parsed[1].astype(np.int64).to_numpy()
    for cond, why in ((end < start, "ends before it starts"),
                      (end >= n_rows, f"is past the {n_rows} rows of 'filters'")):
        if cond.any():
            i = int(np.flatnonzero(cond)[0])
            raise ReadError(path, f"meta row {i}: filter_ids {ids.iloc[i]!r} {why}")
    order = np.argsort(start, kind="stable")
    s, e = start[order], end[order]
    ov = np.flatnonzero(s[1:] <= e[:-1])
    if len(ov):
        a, b = order[ov[0]], order[ov[0] + 1]
        raise ReadError(path, f"filter_ids overlap: meta row {a} ({ids.iloc[a]}, model "
                              f"{df[key].iloc[a]}) and row {b} ({ids.iloc[b]}, model "
                              f"{df[key].iloc[b]}); {len(ov)} overlapping pair(s)")

    roles = {c: _role(c, df) for c in df.columns}
    groups = df.groupby(key, sort=False, dropna=False).indices
    extra_cols = [c for c, r in roles.items() if r in ("extra", "free")]
    layer_level = set()
    for c in extra_cols:
        n = df.groupby(key, sort=False, dropna=False)[c].nunique(dropna=False)
        if (n > 1).any():
            layer_level.add(c)

    h = hashlib.sha256(identity_prefix.encode())
    mcol = df["model"].astype(str) if "model" in df.columns else df[key].astype(str)
    for i in order:
        h.update(f"{mcol.iloc[i]}\t{ids.iloc[i]}\n".encode())
    identity = h.hexdigest()

    cd = df["conv_depth"].to_numpy() if "conv_depth" in df.columns else np.zeros(len(df))
    cdn = df["conv_depth_norm"].to_numpy() if "conv_depth_norm" in df.columns \
        else np.zeros(len(df))
    values = {c: df[c].to_numpy() for c in df.columns}
    models = []
    for gid, idx in groups.items():
        idx = idx[np.argsort(start[idx], kind="stable")]
        meta, kernels, ops = {}, {}, {}
        for c, r in roles.items():
            v = _py(values[c][idx[0]])
            if r == "model" and v is not None:
                meta[c] = v
            elif r == "kernel" and v is not None:
                m = _KERNEL_RE.match(str(c))
                kernels[f"{m.group(1)}x{m.group(2)}"] = int(v)
            elif r == "op" and v is not None:
                ops[str(c)] = int(v)
            elif r == "extra" and c not in layer_level and v is not None:
                meta[f"x_{c}"] = v
            elif r == "free" and c not in layer_level and v is not None:
                meta[c] = v
        if kernels:
            meta["kernel_counts"] = kernels
        if ops:
            meta["op_counts"] = ops
        if not _py(meta.get("model")):
            meta["model"] = f"published-{_py(gid)}"
        lx = []
        for i in idx:
            d = {c[2:] if roles[c] == "free" else c: _py(values[c][i]) for c in layer_level}
            lx.append({k: v for k, v in d.items() if v is not None} or None)
        sha = hashlib.sha256(f"published:{identity}:{_py(gid)}".encode()).hexdigest()
        models.append(PublishedModel(
            model_id=_py(gid), meta=meta, starts=start[idx], counts=end[idx] - start[idx] + 1,
            conv_depth=[int(x) for x in cd[idx]], conv_depth_norm=[float(x) for x in cdn[idx]],
            layer_extra=lx, sha256=sha))
    models.sort(key=lambda m: int(m.starts[0]))
    for m in models:  # every value must pass the vocabulary before anything is written
        try:
            m.meta = normalize_meta(m.meta)
        except FilterDBError as e:
            raise ReadError(path, f"model {m.model_id}: {e}") from None
    return models


_LAYER_FIELDS = ("layer_index", "name", "op", "c_out", "c_in", "kh", "kw", "groups",
                 "n_filters", "graph_depth", "conv_depth", "conv_depth_norm")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class ImportPlan:
    """One model to import: its facts, metadata and layers (``rows``: each layer's first
    row in ``filters``, None for a layer without 3x3 filters)."""

    spec: ModelSpec
    meta: dict
    layers: list  # dicts of LayerSpec fields
    rows: list

    @property
    def n_filters(self) -> int:
        return sum(int(d["n_filters"]) for d, r in zip(self.layers, self.rows) if r is not None)


def catalog_document(layers, models, rows: dict) -> bytes:
    """The ``filterdb_catalog`` JSON of an export: the models (catalog columns, free
    columns typed under their own names) and their selected ``layers`` (layer_view rows),
    each with its first row in the exported ``filters`` (``rows``: layer_id -> row)."""
    doc = {"version": CATALOG_VERSION, "models": []}
    for mid, lay in layers.groupby("model_id", sort=False):
        rec = models.loc[mid]
        m = {c: _py(rec[c]) for c in models.columns
             if c not in _NOT_CARRIED and not str(c).startswith("x_")}
        for c in ("kernel_counts", "op_counts", "extra", "warnings"):
            v = m.get(c)
            m[c] = json.loads(v) if isinstance(v, str) else v
        m["layers"] = []
        for r in lay.sort_values("layer_index").itertuples(index=False):
            d = {c: _py(getattr(r, c)) for c in _LAYER_FIELDS}
            x = _py(r.layer_extra)
            d["extra"] = json.loads(x) if isinstance(x, str) else x
            d["row"] = rows.get(int(r.layer_id))
            m["layers"].append(d)
        doc["models"].append(m)
    return json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()


def read_catalog_document(f, path):
    """The ``filterdb_catalog`` document of an h5py file, or None when it has none."""
    import h5py  # lazy: start-up time (published-format files only)

    obj = f.get(CATALOG_KEY)
    if obj is None:
        return None
    if not isinstance(obj, h5py.Dataset) or obj.dtype != np.uint8 or obj.ndim != 1 \
            or obj.shape[0] > 1 << 30:
        raise ReadError(path, f"'{CATALOG_KEY}' is not a JSON byte array")
    try:
        doc = json.loads(obj[...].tobytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ReadError(path, f"'{CATALOG_KEY}' is not readable JSON ({_first_line(e)})") \
            from None
    if not isinstance(doc, dict) or doc.get("version") != CATALOG_VERSION \
            or not isinstance(doc.get("models"), list):
        raise ReadError(path, f"'{CATALOG_KEY}' is not a version {CATALOG_VERSION} catalog")
    return doc


def _int_or_none(v, what, path):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ReadError(path, f"'{CATALOG_KEY}': {what} is {v!r}, not an integer")
    return v


def plan_catalog(doc: dict, n_rows: int, path) -> list[ImportPlan]:
    """Models and layers of a ``filterdb_catalog`` document, checked (types, every range
    inside ``filters``, no two overlapping) before anything is written; raises ReadError."""
    plans, spans = [], []
    for i, m in enumerate(doc["models"]):
        if not isinstance(m, dict) or not isinstance(m.get("model"), str) or not m["model"] \
                or not isinstance(m.get("layers"), list):
            raise ReadError(path, f"'{CATALOG_KEY}': model {i} has no id or no layer list")
        name = m["model"]
        meta = {c: m[c] for c in TEXT_COLUMNS + DERIVED_COLUMNS if m.get(c) is not None}
        extra = m.get("extra") or {}
        if not isinstance(extra, dict):
            raise ReadError(path, f"'{CATALOG_KEY}': model {name!r}: extra is not an object")
        meta.update({f"x_{k}": v for k, v in extra.items() if v is not None})
        try:
            meta = normalize_meta(meta)
        except FilterDBError as e:
            raise ReadError(path, f"'{CATALOG_KEY}': model {name!r}: {e}") from None
        sha = m.get("sha256")
        if not isinstance(sha, str) or not _HEX64.match(sha):
            sha = hashlib.sha256(f"published-catalog:{name}:{len(plans)}".encode()).hexdigest()
        warn = m.get("warnings") or []
        spec = ModelSpec(sha256=sha, format=m.get("format"), path=m.get("path"), name=name,
                         depth_source=m.get("depth_source"), producer=m.get("producer"),
                         producer_version=m.get("producer_version"),
                         opset=_int_or_none(m.get("op_set"), "op_set", path),
                         op_counts=dict(m.get("op_counts") or {}),
                         warnings=[str(w) for w in warn] if isinstance(warn, list) else [])
        layers, rows = [], []
        for j, d in enumerate(m["layers"]):
            what = f"model {name!r} layer {j}"
            if not isinstance(d, dict):
                raise ReadError(path, f"'{CATALOG_KEY}': {what} is not an object")
            n = _int_or_none(d.get("n_filters"), f"{what} n_filters", path)
            kh = _int_or_none(d.get("kh"), f"{what} kh", path)
            kw = _int_or_none(d.get("kw"), f"{what} kw", path)
            row = _int_or_none(d.get("row"), f"{what} row", path)
            if n is None or n < 0:
                raise ReadError(path, f"'{CATALOG_KEY}': {what} has no filter count")
            if (kh, kw) == (3, 3) and n > 0:
                if row is None or row < 0 or row + n > n_rows:
                    raise ReadError(path, f"'{CATALOG_KEY}': {what}: rows {row}..+{n} are not "
                                          f"inside the {n_rows} rows of 'filters'")
                spans.append((row, row + n, what))
            else:
                row = None
            x = d.get("extra")
            if x is not None and not isinstance(x, dict):
                raise ReadError(path, f"'{CATALOG_KEY}': {what}: extra is not an object")
            ld = {c: d.get(c) for c in _LAYER_FIELDS if c != "layer_index"}
            for c in ("c_out", "c_in", "groups", "graph_depth", "conv_depth"):
                ld[c] = _int_or_none(ld[c], f"{what} {c}", path)
            ld["conv_depth"] = ld["conv_depth"] or 0
            ld["conv_depth_norm"] = float(ld["conv_depth_norm"] or 0.0)
            ld["extra"] = x
            layers.append(ld)
            rows.append(row)
        plans.append(ImportPlan(spec, meta, layers, rows))
    spans.sort()
    for (_a0, a1, wa), (b0, _b1, wb) in zip(spans, spans[1:]):
        if b0 < a1:
            raise ReadError(path, f"'{CATALOG_KEY}': {wa} and {wb} overlap in 'filters'")
    return plans


def _published_plans(models: list[PublishedModel], path) -> list[ImportPlan]:
    """The :class:`ImportPlan` of models read from the ``meta`` table."""
    out = []
    for m in models:
        spec = ModelSpec(sha256=m.sha256, format=FORMAT, path=path, name=m.meta["model"],
                         depth_source="graph")
        layers = [dict(n_filters=int(c), kh=3, kw=3, op="Conv", conv_depth=m.conv_depth[i],
                       conv_depth_norm=m.conv_depth_norm[i], extra=m.layer_extra[i])
                  for i, c in enumerate(m.counts.tolist())]
        out.append(ImportPlan(spec, m.meta, layers, [int(s) for s in m.starts.tolist()]))
    return out


def _range_chunks(ds, start: int, count: int, raw: np.ndarray, out: np.ndarray):
    """Rows ``start .. start+count-1`` of ``ds`` as float32 ``(m, 9)`` views of ``out``."""
    rows = out.shape[0]
    same = raw is None
    pos, end = int(start), int(start) + int(count)
    while pos < end:
        m = min(rows, end - pos)
        if same:
            ds.read_direct(out.reshape((rows,) + ds.shape[1:]), np.s_[pos:pos + m], np.s_[0:m])
        else:
            ds.read_direct(raw, np.s_[pos:pos + m], np.s_[0:m])
            np.copyto(out[:m], raw[:m].reshape(m, 9), casting="same_kind")
        yield out[:m]
        pos += m


def import_h5(db, path, chunk_rows: int = 1 << 20, replace: bool = False,
              show_progress: bool | None = None):
    """Import a published-layout file into a database opened with ``mode='w'``.

    Returns ``[AddResult]`` (one per model, in file order)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ReadError(path, "no such file")
    chunk_rows = max(1, int(chunk_rows))
    f, ds = open_filters(path)
    results = []
    try:
        n_rows = int(ds.shape[0])
        check_storage(f, ds, path)
        doc = read_catalog_document(f, path)
        if doc is not None:
            plans = plan_catalog(doc, n_rows, path)
        else:
            df = read_meta_table(path, _identity(f))
            plans = _published_plans(
                plan_import(df, n_rows, path, f"{tuple(ds.shape)}|{ds.dtype.str}|"), path)
        if not replace:  # model ids already taken by other files: refuse before writing
            con = db._con
            for p in plans:
                name = p.meta.get("model", p.spec.name)
                r = con.execute("SELECT sha256 FROM models WHERE model = ?", (name,)).fetchone()
                if r and r[0] != p.spec.sha256:
                    raise FilterDBError(f"{path}: model id {name!r} is already in "
                                        f"{db.path} (another source); use --replace")
        rows = min(chunk_rows, max((int(d["n_filters"]) for p in plans
                                    for d, r in zip(p.layers, p.rows) if r is not None),
                                   default=1))
        out = aligned_empty((rows, 9), np.float32)
        raw = None if ds.dtype == np.dtype("<f4") else aligned_empty((rows,) + ds.shape[1:],
                                                                  ds.dtype)
        total = sum(p.n_filters for p in plans)
        bar = progress(total=total, desc="importing", unit="filter", disable=show_progress
                       if show_progress is None else not show_progress)
        try:
            with BulkWriter(db) as bw:
                for p in plans:
                    def layers(p=p):
                        for d, r in zip(p.layers, p.rows):
                            chunks = None if r is None else _range_chunks(
                                ds, r, int(d["n_filters"]), raw, out)
                            yield LayerSpec(**d, chunks=chunks)
                            if r is not None:
                                bar.update(int(d["n_filters"]))

                    try:
                        results.append(bw.add(p.spec, layers(), p.meta, replace=replace))
                    except OSError as e:
                        raise ReadError(path, f"reading 'filters' failed ({_first_line(e)})") \
                            from None
                    if results[-1].status == "exists":
                        bar.update(p.n_filters)
        finally:
            bar.close()
    except BaseException:
        _undo(db, results)
        raise
    finally:
        f.close()
    return results


def _undo(db, results) -> None:
    """Remove the models a failed import added (committed before it failed)."""
    for r in results:
        if r.status == "added":
            try:
                db.remove_model(r.model)
            except Exception:  # pragma: no cover - the original error matters more
                pass


def check_storage(f, ds, path) -> None:
    """Refuse a truncated file before anything is written: every stored byte of
    ``filters`` (contiguous, or each allocated chunk) lies inside the file."""
    size = os.fstat(f.id.get_vfd_handle()).st_size if hasattr(f.id, "get_vfd_handle") \
        else os.path.getsize(path)
    dcpl = ds.id.get_create_plist()
    import h5py  # lazy: start-up time (published-format files only)

    layout = dcpl.get_layout()
    if layout == h5py.h5d.CONTIGUOUS:
        off = ds.id.get_offset()
        need = ds.id.get_storage_size()
        if off is not None and off + need > size:
            raise ReadError(path, f"truncated: 'filters' needs bytes up to {off + need:,}, the "
                                  f"file has {size:,}")
    elif layout == h5py.h5d.CHUNKED:
        for i in range(ds.id.get_num_chunks()):
            c = ds.id.get_chunk_info(i)
            if c.byte_offset + c.size > size:
                raise ReadError(path, f"truncated: chunk {i} of 'filters' ends at byte "
                                      f"{c.byte_offset + c.size:,}, the file has {size:,}")


# -- export -----------------------------------------------------------------------------------
def _json(v) -> dict:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return {}
    return json.loads(v) if isinstance(v, str) else dict(v)


def _column(values, integral: bool = False):
    """A column from Python values, None = missing: int64 when integral and complete."""
    import pandas as pd  # lazy: start-up time (published-format files only)

    if integral:
        if all(v is not None for v in values):
            return pd.array(values, dtype="int64").to_numpy()
        return np.array([np.nan if v is None else float(v) for v in values])
    s = pd.Series(values, dtype=object)
    vals = [v for v in values if v is not None]
    if vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return pd.to_numeric(s).to_numpy()
    if vals and all(isinstance(v, bool) for v in vals) and len(vals) == len(values):
        return np.array(values, dtype=bool)
    return s.where(s.notna(), np.nan).to_numpy(dtype=object)


def free_column_name(key: str, taken, values=()) -> str:
    """The ``meta`` column of the free column ``key``: ``key`` itself when an import reads it
    back as that free column, else ``x_key`` (a name the vocabulary never takes)."""
    k = str(key)
    clash = k in taken or k in INDEX or k in LAYER_COLUMNS or k.startswith("x_") \
        or bool(_KERNEL_RE.match(k))
    if not clash:
        try:
            column_name(k)
            clash = True  # a catalog column (Task, architecture, ...)
        except FilterDBError:
            pass
    if not clash and _OP_RE.match(k):
        vals = [v for v in values if v is not None]
        clash = bool(vals) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                   for v in vals)  # read back as an operator count
    name = f"x_{k}" if clash else k
    if name in taken:
        raise FilterDBError(f"free column {k!r}: its export name {name!r} is taken")
    return name


def build_meta(layers, models):
    """The published ``meta`` DataFrame of the selected layers (owning filters, in filter
    order) and their models (a ``models`` frame indexed by catalog ``model_id``)."""
    import pandas as pd  # lazy: start-up time (published-format files only)

    mids = list(dict.fromkeys(layers["model_id"].tolist()))
    new_id = {m: i for i, m in enumerate(mids)}
    mrec = {m: models.loc[m] for m in mids}
    kernels, ops, mextra = {m: {} for m in mids}, {m: {} for m in mids}, {m: {} for m in mids}
    for m in mids:
        kernels[m] = _json(mrec[m]["kernel_counts"])
        ops[m] = _json(mrec[m]["op_counts"])
        mextra[m] = _json(mrec[m]["extra"])
    lextra = [_json(v) for v in (layers["layer_extra"] if "layer_extra" in layers
                                 else [None] * len(layers))]
    lm = layers["model_id"].tolist()

    cols: dict = {}
    for c, pub in PUBLISHED_COLUMNS.items():
        vals = [_py(mrec[m][c]) for m in lm]
        cols[pub] = _column(vals, integral=c in ("op_set", "depth", "total_filters"))
        if c == "filter_share_3x3":
            cols[pub] = np.array([np.nan if v is None else float(v) for v in vals])
    for c in OTHER_TEXT:
        vals = [_py(mrec[m][c]) for m in lm]
        if any(v is not None for v in vals):
            cols[c] = _column(vals)
    kkeys = sorted({k for d in kernels.values() for k in d},
                   key=lambda k: tuple(int(x) for x in k.split("x")))
    for k in kkeys:
        cols[kernel_column(k)] = _column([kernels[m].get(k) for m in lm], integral=True)
    for o in sorted({k for d in ops.values() for k in d}):
        cols.setdefault(o, _column([ops[m].get(o) for m in lm], integral=True))
    for x in dict.fromkeys(k for m in mids for k in mextra[m]):
        vals = [mextra[m].get(x) for m in lm]
        cols[free_column_name(x, cols, vals)] = _column(vals)
    for x in dict.fromkeys(k for d in lextra for k in d):
        vals = [d.get(x) for d in lextra]
        cols[free_column_name(x, cols, vals)] = _column(vals)
    counts = layers["filter_count"].to_numpy(np.int64)
    ends = np.cumsum(counts)
    starts = ends - counts
    cols["filter_ids"] = np.array([f"{a}:{b}" for a, b in zip(starts, ends - 1)], dtype=object)
    idx = pd.MultiIndex.from_arrays(
        [np.array([new_id[m] for m in lm], np.int64),
         layers["conv_depth"].to_numpy(np.int64),
         layers["conv_depth_norm"].to_numpy(np.float64)], names=list(INDEX))
    return pd.DataFrame(cols, index=idx)


def export_h5(db, out, where: str | None = None, dtype: str = "float32", shape: str = "flat",
              chunk_rows: int = 1 << 20, show_progress: bool | None = None) -> dict:
    """Write the selected layers (a SQL expression over ``layer_view``) as a
    published-layout file; returns ``{"models", "layers", "filters", "path"}``."""
    import h5py  # lazy: start-up time (published-format files only)
    import pandas as pd  # lazy: start-up time (published-format files only)

    if dtype not in ("float32", "float64"):
        raise FilterDBError(f"--dtype must be float32 or float64, got {dtype!r}")
    if shape not in ("flat", "3x3"):
        raise FilterDBError(f"--shape must be flat or 3x3, got {shape!r}")
    out = os.fspath(out)
    lay_all = db.layers(where)
    lay = lay_all[lay_all["filter_count"].fillna(0) > 0].sort_values("filter_start")
    if lay.empty:
        raise FilterDBError(f"{db.path}: the selection holds no 3x3 filters; nothing to export")
    models = db.models().set_index("model_id")
    meta = build_meta(lay, models)
    n = int(lay["filter_count"].sum())
    counts = lay["filter_count"].to_numpy(np.int64)
    rows = dict(zip(lay["layer_id"].astype(int).tolist(),
                    (np.cumsum(counts) - counts).tolist()))
    order = list(dict.fromkeys(lay["model_id"].tolist() + lay_all["model_id"].tolist()))
    ranked = lay_all.assign(_m=lay_all["model_id"].map({m: i for i, m in enumerate(order)}))
    doc = catalog_document(ranked.sort_values(["_m", "layer_index"], kind="stable"), models,
                           rows)
    tail = (9,) if shape == "flat" else (3, 3)
    tmp = f"{out}.tmp-{os.getpid()}"
    chunk_rows = max(1, min(int(chunk_rows), n))
    conv = aligned_empty((chunk_rows, 9), np.float64) if dtype == "float64" else None
    bar = progress(total=n, desc="exporting", unit="filter", disable=show_progress
                   if show_progress is None else not show_progress)
    try:
        with h5py.File(tmp, "w") as f:
            ds = f.create_dataset("filters", shape=(n,) + tail, dtype=np.dtype(dtype))
            pos = 0
            for ch in db.filters(where, chunk_rows=chunk_rows):
                m = ch.filters.shape[0]
                src = ch.filters
                if conv is not None:
                    np.copyto(conv[:m], src)
                    src = conv[:m]
                ds.write_direct(src.reshape((m,) + tail), dest_sel=np.s_[pos:pos + m])
                pos += m
                bar.update(m)
            if pos != n:
                raise FilterDBError(f"{db.path}: the selection changed during the export "
                                    f"({pos} filters streamed, {n} expected)")
            cat = f.create_dataset(CATALOG_KEY, data=np.frombuffer(doc, np.uint8),
                                   compression="gzip")
            cat.attrs["format"] = "filterdb catalog rows (JSON, UTF-8)"
            cat.attrs["version"] = CATALOG_VERSION
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pd.HDFStore(tmp, mode="a") as st:
                st.put("meta", meta, format="fixed")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        bar.close()
    return {"path": out, "models": int(meta.index.get_level_values(0).nunique()),
            "layers": len(meta), "filters": n}
