"""Training tasks: classification, denoising auto-encoding and 2x super-resolution.

Inputs are normalised to zero mean, unit std: per image for classification (the class
must not hide in the brightness), with the train set's scalar mean / std for the dense
tasks (so that PSNR is measured in the original [0, 1] units). Training is deterministic
given the seed: batch order and noise come from seeded generators.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .data import Dataset

# task -> (net kind, published task name)
TASKS = {
    "classification": ("classify", "Classification"),
    "denoising": ("dense", "Auto-Encoder"),
    "super-resolution": ("dense", "Super Resolution"),
}
DENOISE_SIGMA = 0.15  # noise std in [0, 1] image units


@dataclass
class Arrays:
    """Task-ready tensors: inputs ``x`` (already normalised) and targets ``t``."""

    x_train: torch.Tensor
    t_train: torch.Tensor
    x_test: torch.Tensor
    t_test: torch.Tensor
    std: float = 1.0  # of the dense tasks' normalisation, to go back to [0, 1] units
    n_classes: int = 0


def kind(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return TASKS[task][0]


def standardise(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Each image to zero mean and unit std (a constant image becomes zeros)."""
    m = x.mean(axis=(-2, -1), keepdims=True)
    s = x.std(axis=(-2, -1), keepdims=True)
    return ((x - m) / np.maximum(s, eps)).astype(np.float32)


def downup(x: torch.Tensor) -> torch.Tensor:
    """2x average-pool down, bilinear up: the low-resolution input of super-resolution."""
    return F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="bilinear",
                         align_corners=False)


def psnr(mse: float, peak: float = 1.0) -> float:
    return 10 * math.log10(peak ** 2 / mse) if mse > 0 else float("inf")


def prepare(ds: Dataset, task: str, seed: int = 0) -> Arrays:
    """The tensors a task trains and is evaluated on."""
    k = kind(task)
    if k == "classify":
        return Arrays(torch.from_numpy(standardise(ds.x_train)), torch.from_numpy(ds.y_train),
                      torch.from_numpy(standardise(ds.x_test)), torch.from_numpy(ds.y_test),
                      n_classes=ds.n_classes)
    mean, std = float(ds.x_train.mean()), float(ds.x_train.std())
    tr = torch.from_numpy((ds.x_train - mean) / std)
    te = torch.from_numpy((ds.x_test - mean) / std)
    if task == "super-resolution":
        return Arrays(downup(tr), tr, downup(te), te, std=std)
    # denoising: fixed held-out noise; train noise drawn fresh per batch in fit()
    g = torch.Generator().manual_seed(int(seed) + 7919)
    noisy = te + torch.randn(te.shape, generator=g) * (DENOISE_SIGMA / std)
    return Arrays(tr, tr, noisy, te, std=std)


def _loss(task, out, target):
    return F.cross_entropy(out, target) if kind(task) == "classify" else F.mse_loss(out, target)


def fit(net: torch.nn.Module, task: str, a: Arrays, epochs: int, seed: int,
        batch_size: int = 64, lr: float | None = None) -> list[float]:
    """Train with Adam; returns the mean training loss of every epoch."""
    lr = lr if lr is not None else (2e-3 if kind(task) == "classify" else 3e-3)
    g = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n = len(a.x_train)
    history = []
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            x, t = a.x_train[idx], a.t_train[idx]
            if task == "denoising":
                x = x + torch.randn(x.shape, generator=g) * (DENOISE_SIGMA / a.std)
            opt.zero_grad(set_to_none=True)
            loss = _loss(task, net(x), t)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / n)
    net.eval()
    return history


@torch.no_grad()
def evaluate(net: torch.nn.Module, task: str, a: Arrays, batch_size: int = 500) -> dict:
    """Held-out metric: ``accuracy`` (classification) or ``psnr_db`` in [0, 1] units
    (dense tasks), with the loss and the trivial baseline (chance / the input itself)."""
    was = net.training
    net.eval()
    outs = [net(a.x_test[i:i + batch_size]) for i in range(0, len(a.x_test), batch_size)]
    net.train(was)
    out = torch.cat(outs)
    loss = float(_loss(task, out, a.t_test))
    if kind(task) == "classify":
        acc = float((out.argmax(1) == a.t_test).float().mean())
        return {"metric": "accuracy", "value": acc, "loss": loss,
                "baseline": 1.0 / a.n_classes}
    base = float(F.mse_loss(a.x_test, a.t_test))
    return {"metric": "psnr_db", "value": psnr(loss * a.std ** 2), "loss": loss,
            "baseline": psnr(base * a.std ** 2)}
