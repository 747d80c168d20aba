"""Summaries of assessed tables (docs/method.md, section 5): one model's
(:func:`summarise`, the same for a file and for the database) and groups of a database's
layers (:func:`summarise_groups`: by model, task, visual category and depth bin, 10 bins
of ``conv_depth_norm``, ``[0, 0.1], (0.1, 0.2], ...``)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..kernels import metrics as M
from ..kernels.drift import depth_bin, depth_bin_labels
from .assess import HealthThresholds, flag_names, verdict, verdict_sentence

GROUP_METRICS = M.names(headline=True)  # means per group in summarise_groups

N_WORST = 5


def worst_label(r) -> str:
    """What a layer is worst at, with its number."""
    if r["random"]:
        return f"random-like (p {r['p_random']:.2f})"
    if r["low_diversity"] and r["sparse"]:
        return f"sparse and low-diversity (S {r['sparsity']:.3f}, H {r['variance_entropy']:.3f})"
    if r["low_diversity"]:
        return f"low diversity (H {r['variance_entropy']:.3f})"
    if r["sparse"]:
        return f"sparse (S {r['sparsity']:.3f})"
    return (f"closest to random (H {r['variance_entropy']:.3f}, random layers "
            f"{r['random_mean']:.3f}, p {r['p_random']:.3f})")


def worst_first(a: pd.DataFrame) -> np.ndarray:
    """Positions of the assessed layers ``a``, worst first: degenerated, then flagged, then
    the rest, each group by ``p_random``, then ``H / random_mean`` (closeness to random), then
    sparsity, descending (ties in table order)."""
    flagged = a[["random", "low_diversity", "sparse"]].to_numpy(bool).any(axis=1)
    order = pd.DataFrame({"deg": a["degenerated"].to_numpy(bool).astype(int),
                          "fl": flagged.astype(int),
                          "p": a["p_random"].fillna(-1.0).to_numpy(),
                          "h": (a["variance_entropy"] / a["random_mean"]).fillna(-1.0).to_numpy(),
                          "s": a["sparsity"].fillna(-1.0).to_numpy(),
                          "pos": np.arange(len(a))})
    order = order.sort_values(["deg", "fl", "p", "h", "s", "pos"],
                              ascending=[False, False, False, False, False, True])
    return order["pos"].to_numpy()


def _mean(v: np.ndarray) -> float:
    """The mean of the finite-or-inf values (NaN skipped, as ``pd.Series.mean``); NaN if none."""
    k = ~np.isnan(v)
    n = int(np.count_nonzero(k))
    return float(np.where(k, v, 0.0).sum() / n) if n else float("nan")


def summarise(df: pd.DataFrame, thresholds: HealthThresholds | None = None) -> dict:
    """The summary of an assessed table (a model's layers, from a file or the database).

    - ``share_degenerated`` = degenerated / assessed layers (NaN if none assessed).
    - worst layers: the assessed layers, degenerated first, then flagged ones, then the
      rest, each group by ``p_random``, then ``H / random_mean`` (closeness to random), then
      sparsity, descending; the top 5, each labelled by what it is worst at.
    - ``not_assessed``: ``{reason: number of layers}``.
    """
    t = thresholds or HealthThresholds()
    a = df[df["assessed"].to_numpy(bool)] if len(df) else df
    na = int(len(a))

    def count(mask) -> int:
        return int(np.count_nonzero(mask)) if na else 0

    deg = a["degenerated"].to_numpy(bool) if na else np.zeros(0, bool)
    low = a["low_diversity"].to_numpy(bool) if na else deg
    sp = a["sparse"].to_numpy(bool) if na else deg
    counts = {"n_layers": int(len(df)), "n_assessed": na, "n_degenerated": count(deg),
              "n_random": count(a["random"].to_numpy(bool)) if na else 0,
              "n_random_paper": count(a["random_paper"].to_numpy(bool)) if na else 0,
              "n_low_diversity_sparse": count(low & sp),
              "n_low_diversity_only": count(low & ~sp & ~deg),
              "n_sparse_only": count(sp & ~low & ~deg)}
    share = counts["n_degenerated"] / na if na else float("nan")
    worst = []
    if na:
        for i in worst_first(a)[:N_WORST]:
            r = a.iloc[int(i)]
            worst.append({"name": r["name"], "label": worst_label(r), "flags": flag_names(r),
                          "reason": r["reason"], "p_random": float(r["p_random"]),
                          "variance_entropy_norm": float(r["variance_entropy_norm"]),
                          "sparsity": float(r["sparsity"])})
    nota = {}
    if len(df):
        for why in df.loc[~df["assessed"].to_numpy(bool), "not_assessed"].tolist():
            nota[why] = nota.get(why, 0) + 1
    by_depth = {}
    if na:
        bins = depth_bin(np.clip(a["conv_depth_norm"].to_numpy(np.float64), 0, 1))
        labels = depth_bin_labels()
        vals = {m: a[m].to_numpy(np.float64) for m in GROUP_METRICS}
        for b in np.unique(bins).tolist():
            sel = bins == b
            by_depth[labels[b]] = {
                "n_layers": int(np.count_nonzero(sel)),
                **{m: _mean(v[sel]) for m, v in vals.items()},  # NaN skipped, as pandas
                "n_degenerated": int(np.count_nonzero(deg[sel])),
            }
    return {**counts, "share_degenerated": share, "worst_layers": worst,
            "not_assessed": nota, "by_depth": by_depth,
            "verdict_class": verdict(na, counts["n_degenerated"], t),
            "verdict": verdict_sentence(counts, t), "thresholds": t.to_dict()}


def model_summaries(df: pd.DataFrame, thresholds: HealthThresholds | None = None) -> dict:
    """``{model: summary}`` of a :func:`database_health` table, each the
    :func:`summarise` dict ``check`` gives for the model file."""
    return {m: summarise(g.reset_index(drop=True), thresholds)
            for m, g in df.groupby("model", sort=False)}


def summarise_groups(df: pd.DataFrame, by: str,
                     thresholds: HealthThresholds | None = None) -> pd.DataFrame:
    """Per group of column ``by``: layers, assessed, degenerated (random-like, sparse and
    low-diversity), random-like by the paper's rule, share degenerated, mean S / H/TH /
    orthogonality over assessed layers, and (``by='model'``) the verdict class."""
    t = thresholds or HealthThresholds()
    key = df[by].fillna("").astype(str) if by != "depth_bin" else df[by]
    a = df["assessed"].to_numpy(bool)
    tmp = pd.DataFrame({
        "key": key.to_numpy(),
        "n_layers": 1,
        "n_assessed": a.astype(int),
        "n_degenerated": (df["degenerated"].to_numpy(bool) & a).astype(int),
        "n_random": (df["random"].to_numpy(bool) & a).astype(int),
        "n_random_paper": (df["random_paper"].to_numpy(bool) & a).astype(int),
        "n_low_diversity_sparse": (df["low_diversity"].to_numpy(bool)
                                   & df["sparse"].to_numpy(bool) & a).astype(int),
        **{m: np.where(a, df[m], np.nan) for m in GROUP_METRICS},
    })
    g = tmp.groupby("key", sort=True)
    out = g[["n_layers", "n_assessed", "n_degenerated", "n_random", "n_random_paper",
             "n_low_diversity_sparse"]].sum()
    for m in GROUP_METRICS:
        out[m] = g[m].mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        out["share_degenerated"] = np.where(out["n_assessed"] > 0,
                                            out["n_degenerated"] / out["n_assessed"].clip(1),
                                            np.nan)
    out = out.reset_index().rename(columns={"key": by})
    if by == "depth_bin":
        labels = depth_bin_labels(10)
        out["depth_bin"] = [labels[b] if 0 <= b < 10 else "unknown" for b in out["depth_bin"]]
    if by == "model":
        out["verdict"] = [verdict(a_, d_, t) for a_, d_ in
                          zip(out["n_assessed"].tolist(), out["n_degenerated"].tolist())]
    return out


def health_summary(df: pd.DataFrame, thresholds: HealthThresholds | None = None) -> dict:
    """``{"by_model", "by_task", "by_visual_category", "by_depth_bin"}`` frames."""
    return {f"by_{c}": summarise_groups(df, c, thresholds)
            for c in ("model", "task", "visual_category", "depth_bin")}


__all__ = ["summarise", "summarise_groups", "health_summary", "model_summaries", "worst_label",
           "worst_first", "N_WORST"]
