"""The built-in reference population: what ``filterdb check`` and ``filterdb drift --model``
compare a model with when no database is given.

``python -m filterdb.zoo.reference build`` computes it from the curated zoo (the readable
catalog models that are not another entry's weights in a second container) and writes
``data/reference.npz`` inside the package: no weights, only

- ``layers``: every conv layer's metrics (method.md sec. 5) with its model, kernel, ``n``,
  ``conv_depth_norm`` and depth bin (sec. 4);
- ``pca``: the population PCA of the scaled 3x3 filters (sec. 3);
- ``hist_model`` / ``hist_depth``: coefficient **counts** ``(group, 9, bins)`` per model and
  per depth bin over one shared range (the global min and max, sec. 4); task and visual
  category histograms are sums of model rows. Counts, not probabilities: the notebook's floor
  (:func:`filterdb.kernels.hist.probabilities`, eps on the density) is applied at use time.

The build is deterministic: models in catalog order, float64 sums in that order, and a zip
written with fixed timestamps, so the same zoo and code give the same bytes.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import FilterDBError
from ..health import model_health
from ..health.population import compare_to_population
from ..kernels import hist as H
from ..kernels import pca as P
from ..kernels.drift import depth_bin, depth_bin_labels, drift_to_reference, resolve_weights
from ..kernels.metrics import PERCENTILE
from ..kernels.pca import PCA
from ..readers import read_model
from ..readers.base import Model
from .catalog import distinct, readable
from .fetch import fetch

VERSION = 1
NAME = f"filterdb-zoo-v{VERSION}"
DATA = Path(__file__).with_name("data") / "reference.npz"
BINS = 70
N_DEPTH = 10
METRICS = PERCENTILE  # the registry's percentile metrics (filterdb.kernels.metrics)
FLAGS = ("random", "low_diversity", "sparse", "degenerated", "assessed")
MAX_BYTES = 5 << 20


def population_models(models=None):
    """The zoo models the reference is built from, in catalog order."""
    return distinct(readable(models))


# ---- build ------------------------------------------------------------------------------

def _read(m, path):
    model = m.read(path)
    df, _ = model_health(model)
    X = [l.filters() for l in model.layers if tuple(l.kernel) == (3, 3)]
    dn = [l.conv_depth_norm for l in model.layers if tuple(l.kernel) == (3, 3)]
    counts = [len(x) for x in X]
    X = np.concatenate(X).astype(np.float32, copy=False) if X else np.zeros((0, 9), np.float32)
    return model, df, X, np.repeat(np.asarray(dn, np.float64), counts)


def _moments(X):
    """``(n, sum, sum of v v^T)`` of the scaled filters, in a fixed summation order (numpy's
    pairwise sum and einsum's loops, no threads), so that builds repeat bit for bit."""
    Xs = P.scale_filters(X).astype(np.float64)
    return len(Xs), Xs.sum(axis=0), np.einsum("ni,nj->ij", Xs, Xs, optimize=False)


def build(models=None, cache=None, log=None) -> dict:
    """Compute the reference arrays (``{name: array}``, plus ``meta`` as a JSON string)."""
    log = log or (lambda msg: None)
    models = population_models(models)
    paths = fetch(models, cache=cache, log=log)
    rows, filters, depths, info = [], [], [], []
    n, s, sxx = 0, np.zeros(9), np.zeros((9, 9))
    for i, m in enumerate(models):
        model, df, X, dn = _read(m, paths[m.id])
        df.insert(0, "model", i)
        rows.append(df)
        filters.append(X)
        depths.append(depth_bin(np.clip(dn, 0.0, 1.0)) if len(dn) else np.zeros(0, np.int64))
        if len(X):
            k, a, b = _moments(X)
            n, s, sxx = n + k, s + a, sxx + b
        info.append({"id": m.id, "task": m.task, "visual_category": m.visual_category,
                     "format": m.format, "architecture": m.architecture,
                     "training_dataset": m.training_dataset, "sha256": model.sha256,
                     "file_sha256": m.sha256,
                     "n_layers": int(len(df)), "filters_3x3": int(len(X)),
                     "depth_source": model.depth_source})
        log(f"{m.id}: {len(df)} layers, {len(X):,} 3x3 filters")
    pca = P.pca_from_moments(n, s, sxx)
    cmin, cmax = np.full(9, np.inf), np.full(9, -np.inf)
    for X in filters:
        if len(X):
            a, b = P.coeff_range_chunk(X, pca)
            cmin, cmax = np.minimum(cmin, a), np.maximum(cmax, b)
    lo, hi = P.shared_range(cmin, cmax)
    hist_md = np.zeros((len(models), N_DEPTH, 9, BINS), np.int64)
    for i, (X, d) in enumerate(zip(filters, depths)):
        if len(X):
            hist_md[i] = H.hist_chunk(X, d, N_DEPTH, pca, BINS, lo, hi)
    layers = pd.concat(rows, ignore_index=True)
    out = {
        "layer_model": layers["model"].to_numpy(np.int32),
        "layer_kernel": layers["kernel"].to_numpy(str),
        "layer_n": layers["n"].to_numpy(np.int64),
        "layer_conv_depth_norm": layers["conv_depth_norm"].to_numpy(np.float64),
        "pca_n": np.array(pca.n, np.int64),
        "pca_mean": np.asarray(pca.mean, np.float64),
        "pca_components": np.asarray(pca.components, np.float64),
        "pca_explained_variance": np.asarray(pca.explained_variance, np.float64),
        "pca_evr": np.asarray(pca.explained_variance_ratio, np.float64),
        "hist_range": np.array([lo, hi], np.float64),
        "hist_model": hist_md.sum(axis=1),
        "hist_depth": hist_md.sum(axis=0),
    }
    for c in METRICS:
        out[f"layer_{c}"] = layers[c].to_numpy(np.float64)
    for c in FLAGS:
        out[f"layer_{c}"] = layers[c].to_numpy(bool)
    meta = {"name": NAME, "version": VERSION, "bins": BINS, "n_depth_bins": N_DEPTH,
            "n_models": len(models), "n_layers": int(len(layers)),
            "n_filters_3x3": int(pca.n), "models": info,
            "built_from": "python -m filterdb.zoo.reference build"}
    out["meta"] = np.array(json.dumps(meta, sort_keys=True))
    return out


def write(arrays: dict, path: Path | str = DATA) -> Path:
    """Write ``arrays`` as an .npz (a zip of .npy files) with fixed timestamps: the same
    arrays give the same bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
            zi = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            z.writestr(zi, buf.getvalue(), compresslevel=9)
    tmp.replace(path)
    if path.stat().st_size > MAX_BYTES:
        raise FilterDBError(f"{path}: {path.stat().st_size:,} bytes, over the {MAX_BYTES:,} "
                            "bytes the reference may take")
    return path


# ---- use --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reference:
    """The loaded reference population."""

    meta: dict
    layers: pd.DataFrame  # one row per conv layer; columns as health's layer tables
    pca: object  # filterdb.kernels.pca.PCA
    range: tuple[float, float]
    hist_model: np.ndarray  # (n_models, 9, bins) int64 counts
    hist_depth: np.ndarray  # (10, 9, bins) int64 counts

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def models(self) -> pd.DataFrame:
        return pd.DataFrame(self.meta["models"])

    def summary(self) -> dict:
        """What ``summary.reference`` of ``check`` says about the population."""
        L = self.layers
        return {"name": self.name, "n_models": int(self.meta["n_models"]),
                "n_layers": int(len(L)), "n_assessed_3x3_layers":
                int((L["assessed"] & (L["kernel"] == "3x3")).sum()),
                "n_filters_3x3": int(self.meta["n_filters_3x3"]),
                "source": "built-in (filterdb.zoo.reference)"}

    def group_counts(self, by: str) -> tuple[list[str], np.ndarray]:
        """``(labels, counts (G, 9, bins))`` of ``by``: ``all``, ``model``, ``task``,
        ``visual_category`` or ``depth``."""
        if by == "all":
            return ["all"], self.hist_depth.sum(axis=0)[None]
        if by == "depth_bin":
            return depth_bin_labels(N_DEPTH), self.hist_depth
        models = self.models
        if by == "model":
            return models["id"].tolist(), self.hist_model
        if by not in ("task", "visual_category"):
            raise FilterDBError(f"the built-in reference has groups all, model, task, "
                                f"visual_category and depth_bin, not {by!r}")
        labels = sorted(models[by].unique())
        codes = models[by].map({g: i for i, g in enumerate(labels)}).to_numpy()
        out = np.zeros((len(labels),) + self.hist_model.shape[1:], np.int64)
        np.add.at(out, codes, self.hist_model)
        return labels, out


def _load_arrays(path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise FilterDBError(f"{path}: not a filterdb reference ({e})") from None


def _metric(a: dict, c: str) -> np.ndarray:
    """The reference's column of metric ``c``; NaN (no percentile) for a metric added to
    the registry after the reference was built (rebuild it: see the module docstring)."""
    return a[f"layer_{c}"] if f"layer_{c}" in a else np.full(len(a["layer_n"]), np.nan)


@lru_cache(maxsize=4)
def load(path: str | None = None) -> Reference:
    """The reference shipped in the package (or the one at ``path``)."""
    p = Path(path) if path else DATA
    if not p.is_file():
        raise FilterDBError(f"no reference population at {p}; build it with "
                            "'python -m filterdb.zoo.reference build'")
    a = _load_arrays(p)
    meta = json.loads(str(a["meta"]))
    layers = pd.DataFrame({
        "model": a["layer_model"].astype(np.int64), "kernel": a["layer_kernel"].astype(str),
        "n": a["layer_n"], "conv_depth_norm": a["layer_conv_depth_norm"],
        **{c: _metric(a, c) for c in METRICS}, **{c: a[f"layer_{c}"] for c in FLAGS}})
    dn = layers["conv_depth_norm"].to_numpy(np.float64)
    layers["depth_bin"] = depth_bin(np.clip(dn, 0.0, 1.0))
    pca = PCA(int(a["pca_n"]), a["pca_mean"], a["pca_components"],
              a["pca_explained_variance"], a["pca_evr"])
    return Reference(meta, layers, pca, (float(a["hist_range"][0]), float(a["hist_range"][1])),
                     a["hist_model"], a["hist_depth"])


def percentiles(layer_df: pd.DataFrame, sha256: str | None = None,
                ref: Reference | None = None) -> tuple[list, dict]:
    """Each layer's percentiles against the reference: ``(per-layer dicts or None, info)``.

    ``layer_df`` is a health table (columns ``conv_depth_norm``, ``n``, ``kernel`` and the
    metrics, as :func:`filterdb.health.model_health` gives); the comparison is
    :func:`filterdb.health.population.compare_to_population` over the reference's assessed
    layers of the same kernel, depth bin and size class (the depth bin alone when fewer
    than 10); None for a kernel the reference does not hold. A model of the reference with the same file
    (``sha256``, the reader's: of all the files of a multi-file model) is left out of the
    population.
    """
    ref = ref or load()
    pop = ref.layers
    same = [m["id"] for m in ref.meta["models"] if sha256 and m["sha256"] == sha256]
    if same:
        ids = [i for i, m in enumerate(ref.meta["models"]) if m["id"] in same]
        pop = pop[~pop["model"].isin(ids)]
    pct: list = [None] * len(layer_df)
    kernels = layer_df["kernel"].to_numpy(str) if len(layer_df) else np.zeros(0, str)
    for k in dict.fromkeys(kernels):
        # compare_to_population compares 3x3 layers; other kernels against their own kind
        rows = np.flatnonzero(kernels == k)
        kpop = pop[pop["kernel"] == k].assign(kernel="3x3")
        if not len(kpop):
            continue
        got = compare_to_population(layer_df.iloc[rows].assign(kernel="3x3"), kpop)
        for i, g in zip(rows, got):
            pct[i] = g
    info = {**ref.summary(), "n_layers": int(pop["assessed"].sum()), "excluded_models": same,
            "percentile": "share of comparable layers (same kernel, depth bin and size "
            "class) with a smaller value (%)"}
    return pct, info


def drift_to_model(model, by: str | None = None, weights="evr", ref: Reference | None = None):
    """Drift of a model (path or :class:`~filterdb.readers.Model`) against the reference
    population, and against each of its ``by`` groups (``model``, ``task``,
    ``visual_category``, ``depth_bin``): the model's filters on the reference PCA and range,
    as :func:`filterdb.analysis.drift_to_model` does against a database."""
    from ..analysis.model import ModelDrift, model_histogram  # lazy: start-up time (check)
    from ..analysis.provenance import weights_name  # lazy: start-up time (check)

    ref = ref or load()
    m = model if isinstance(model, Model) else read_model(model)
    name = str(m.path) if m.path else m.sha256[:12]
    X = m.filters_3x3()
    if len(X) == 0:
        raise FilterDBError(f"{name}: the model has no 3x3 convolution filters")
    w = resolve_weights(weights, ref.pca.explained_variance_ratio)
    bins = int(ref.meta["bins"])
    counts, outside = model_histogram(X, ref.pca, ref.range, bins)
    if counts.sum() == 0:
        raise FilterDBError(f"{name}: every filter's coefficients fall outside the "
                            f"reference's range {ref.range}: no distribution to compare")
    edges = H.bin_edges(*ref.range, bins)
    pm = H.probabilities(counts, edges)  # the notebook's floor on the density (method.md 4)
    _, allc = ref.group_counts("all")
    d_all = float(drift_to_reference(H.probabilities(allc, edges), pm, w)[0])
    groups = pd.Series(dtype=float, name="drift")
    sizes = pd.Series(dtype=np.int64)
    if by is not None:
        labels, gc = ref.group_counts(by)
        keep = gc[:, 0, :].sum(axis=1) > 0  # groups with 3x3 filters in the range
        labels = [g for g, k in zip(labels, keep) if k]
        gc = gc[keep]
        d = drift_to_reference(H.probabilities(gc, edges), pm, w)
        order = np.argsort(d, kind="stable") if by != "depth_bin" else np.arange(len(d))
        groups = pd.Series(d[order], index=pd.Index([labels[i] for i in order], name=by),
                           name="drift")
        sizes = pd.Series(gc[:, 0, :].sum(axis=1), index=labels)
    return ModelDrift(name, len(X), outside, d_all, by, groups, sizes, counts, bins, ref.range,
                      w, weights_name(weights), ref.pca, None,
                      extra={"reference": ref.summary()})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m filterdb.zoo.reference",
                                 description="build or describe the built-in reference")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="compute the reference from the zoo and write it")
    b.add_argument("-o", "--output", default=str(DATA), help=f"output file (default {DATA})")
    b.add_argument("--cache", help="zoo cache (default: $FILTERDB_CACHE or ~/.cache/filterdb)")
    sub.add_parser("info", help="print what the shipped reference holds")
    args = ap.parse_args(argv)
    if args.cmd == "build":
        arrays = build(cache=args.cache, log=lambda m: print(m, file=sys.stderr, flush=True))
        out = write(arrays, args.output)
        meta = json.loads(str(arrays["meta"]))
        print(f"wrote {out} ({out.stat().st_size:,} bytes): {meta['n_models']} models, "
              f"{meta['n_layers']:,} layers, {meta['n_filters_3x3']:,} 3x3 filters")
        return 0
    ref = load()
    print(json.dumps(ref.summary(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
