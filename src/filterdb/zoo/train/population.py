"""Populations of trained CNNs, one meta-parameter varied at a time; the run loop.

Each configuration is trained from a seed and saved as a PyTorch state dict beside its
untrained twin (the same net at initialisation). ``OUT/manifest.csv`` gets two rows per
finished configuration, appended in one write after both files were renamed into place;
a rerun skips every configuration already in the manifest (resumable).
"""
from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ...errors import FilterDBError, MissingExtraError

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = (
    "path", "model", "name", "task", "visual_category", "training_dataset", "architecture",
    "x_seed", "x_width", "x_depth", "x_trained", "x_twin_of", "x_heldout_metric",
    "x_heldout_value", "x_heldout_baseline", "x_epochs", "x_family", "x_dataset", "x_task",
    "x_data_seed", "x_train_seconds",
)
TASK_SHORT = {"classification": "cls", "denoising": "dae", "super-resolution": "sr"}


@dataclass(frozen=True)
class Config:
    """One trained model: what it learns, on what, with which net, from which seed."""

    task: str
    dataset: str
    family: str
    width: int
    depth: int
    seed: int
    epochs: int

    @property
    def id(self) -> str:
        return (f"{TASK_SHORT[self.task]}-{self.dataset}-{self.family}-w{self.width}"
                f"-d{self.depth}-s{self.seed}")

    @property
    def twin_id(self) -> str:
        return self.id + "-init"


def require_torch():
    try:
        import torch  # lazy: optional heavy dependency (torch, train extra)  # noqa: F401
    except ImportError:
        raise MissingExtraError("torch", "train", "train model populations") from None


# ---- presets -------------------------------------------------------------------------

CLS_DATASETS = ("mnist", "digits", "lfw", "textures", "natural", "fractals", "noise",
                "noise-random")
DENSE_DATASETS = ("natural", "textures", "mnist")
PRESETS = ("small", "full")


def one_at_a_time(base: Config, **axes) -> list[Config]:
    """``base`` and every config that differs from it in exactly one of ``axes``."""
    out = [base]
    for field, values in axes.items():
        out += [replace(base, **{field: v}) for v in values if v != getattr(base, field)]
    return out


def _dedupe(configs):
    seen, out = set(), []
    for c in configs:
        if c.id not in seen:
            seen.add(c.id)
            out.append(c)
    return out


def preset_configs(preset: str = "small", seed: int = 0) -> list[Config]:
    """The configurations of a preset; model seeds are ``seed, seed + 1, ...``.

    ``small`` (the demo, minutes): plain CNNs (width 8, depth 2) on six visual
    categories x 2 seeds; one VGG, one ResNet and one wider plain CNN on MNIST; a
    denoiser and a super-resolution net on natural patches.
    ``full`` (the study, hours): for every task, data set and family, the family's base
    (width 8, middle depth) and its width (4, 16) and depth varied one at a time, 3 seeds
    each: 630 trained models.
    """
    from .nets import (  # lazy: optional heavy dependency (torch, train extra)
        DEPTHS,
        FAMILIES,
        WIDTHS,
    )

    if preset == "small":
        cs = [Config("classification", d, "plain", 8, 2, seed + r, 3)
              for d in ("mnist", "lfw", "textures", "natural", "fractals", "noise")
              for r in range(2)]
        cs = [replace(c, epochs=12) if c.dataset == "lfw" else c for c in cs]
        cs += [Config("classification", "mnist", "vgg", 8, 3, seed, 3),
               Config("classification", "mnist", "resnet", 8, 7, seed, 2),
               Config("classification", "mnist", "plain", 16, 2, seed, 3),
               Config("denoising", "natural", "plain", 8, 3, seed, 3),
               Config("super-resolution", "natural", "plain", 8, 3, seed, 3)]
        return cs
    if preset != "full":
        raise FilterDBError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    cs = []
    for task, datasets, kind, epochs in (("classification", CLS_DATASETS, "classify", 6),
                                         ("denoising", DENSE_DATASETS, "dense", 5),
                                         ("super-resolution", DENSE_DATASETS, "dense", 5)):
        for ds in datasets:
            for fam in FAMILIES:
                depths = DEPTHS[(fam, kind)]
                base = Config(task, ds, fam, WIDTHS[1], depths[1], seed,
                              epochs * (4 if ds == "lfw" else 1))
                for c in one_at_a_time(base, width=WIDTHS, depth=depths):
                    cs += [replace(c, seed=seed + r) for r in range(3)]
    return _dedupe(cs)


# ---- manifest ------------------------------------------------------------------------

def read_manifest(out) -> list[dict]:
    """The rows of ``OUT/manifest.csv`` (empty if there is none)."""
    p = Path(out) / MANIFEST
    if not p.exists():
        return []
    with open(p, newline="") as f:
        r = csv.DictReader(f)
        if r.fieldnames is None:
            return []
        missing = [c for c in MANIFEST_COLUMNS if c not in r.fieldnames]
        if missing:
            raise FilterDBError(f"{p}: not a zoo-train manifest (missing columns {missing})")
        return list(r)


def append_rows(out, rows: list[dict]) -> None:
    """Append rows in one write (header first if the manifest is new), then fsync."""
    p = Path(out) / MANIFEST
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    if not p.exists() or p.stat().st_size == 0:
        w.writeheader()
    w.writerows(rows)
    data = buf.getvalue().encode()
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def save_state_dict(net, path: Path) -> None:
    """torch.save of the state dict to a temp file, then an atomic rename."""
    import torch  # lazy: optional heavy dependency (torch, train extra)

    sd = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(sd, tmp)
    os.replace(tmp, path)


# ---- training ------------------------------------------------------------------------

def _setup_torch():
    """One thread and deterministic kernels: the same seed gives the same weights."""
    import torch  # lazy: optional heavy dependency (torch, train extra)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def build_net(c: Config, n_classes: int | None = None):
    """The net of a config, initialised from its seed."""
    import torch  # lazy: optional heavy dependency (torch, train extra)

    from . import nets, tasks  # lazy: optional heavy dependency (torch, train extra)

    torch.manual_seed(c.seed)
    return nets.build(c.family, c.width, c.depth, tasks.kind(c.task), n_classes)


def train_config(c: Config, out, data_seed: int = 0) -> list[dict]:
    """Train one config, save it and its untrained twin into ``out``; the manifest rows."""

    from . import data, nets, tasks  # lazy: optional heavy dependency (torch, train extra)

    _setup_torch()
    np.random.seed(c.seed)
    ds = data.load(c.dataset, data_seed)
    a = tasks.prepare(ds, c.task, data_seed)
    net = build_net(c, ds.n_classes)
    out = Path(out)
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    twin_path = models / f"{c.twin_id}.pt"
    save_state_dict(net, twin_path)
    init_eval = tasks.evaluate(net, c.task, a)
    t0 = time.perf_counter()
    tasks.fit(net, c.task, a, c.epochs, c.seed)
    seconds = time.perf_counter() - t0
    trained_eval = tasks.evaluate(net, c.task, a)
    path = models / f"{c.id}.pt"
    save_state_dict(net, path)

    def row(model_id, p, trained, ev):
        return {
            "path": p.relative_to(out).as_posix(),
            "model": model_id,
            "name": (f"{nets.ARCHITECTURE_NAMES[c.family]} w{c.width} d{c.depth}, "
                     f"{c.task} on {c.dataset}, seed {c.seed}"
                     + ("" if trained else " (untrained twin)")),
            "task": tasks.TASKS[c.task][1],
            "visual_category": ds.visual_category,
            "training_dataset": ds.training_dataset,
            "architecture": nets.ARCHITECTURE_NAMES[c.family],
            "x_seed": c.seed,
            "x_width": c.width,
            "x_depth": c.depth,
            "x_trained": "true" if trained else "false",
            "x_twin_of": "" if trained else c.id,
            "x_heldout_metric": ev["metric"],
            "x_heldout_value": f"{ev['value']:.6g}",
            "x_heldout_baseline": f"{ev['baseline']:.6g}",
            "x_epochs": c.epochs if trained else 0,
            "x_family": c.family,
            "x_dataset": c.dataset,
            "x_task": c.task,
            "x_data_seed": data_seed,
            "x_train_seconds": f"{seconds:.2f}" if trained else "0",
        }

    return [row(c.id, path, True, trained_eval), row(c.twin_id, twin_path, False, init_eval)]


def _worker(args):
    c, out, data_seed = args
    return c, train_config(c, out, data_seed)


def pending(configs, out) -> list[Config]:
    """The configs not yet finished in ``out`` (manifest row and both files present)."""
    out = Path(out)
    done = {r["model"]: r for r in read_manifest(out)}
    left = []
    for c in configs:
        rows = [done.get(c.id), done.get(c.twin_id)]
        if not all(r and (out / r["path"]).is_file() for r in rows):
            left.append(c)
    return left


def run(out, preset: str = "small", seed: int = 0, jobs: int = 1, configs=None,
        log=None) -> list[dict]:
    """Train every unfinished config of ``preset`` (or ``configs``) into ``out``.

    ``jobs`` worker processes, one thread each (so results do not depend on ``jobs``).
    Returns the manifest rows of the models trained by this call (trained ones only);
    an empty list when everything was already done.
    """
    require_torch()
    configs = preset_configs(preset, seed) if configs is None else list(configs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = pending(configs, out)
    log = log or (lambda msg: None)
    log(f"{len(configs) - len(todo)} of {len(configs)} configs already done, "
        f"{len(todo)} to train")
    trained = []

    def finish(c, rows):
        append_rows(out, rows)
        trained.append(rows[0])
        r = rows[0]
        log(f"[{len(trained)}/{len(todo)}] {c.id}: {r['x_heldout_metric']} "
            f"{float(r['x_heldout_value']):.4g} (baseline {float(r['x_heldout_baseline']):.4g}, "
            f"{r['x_train_seconds']} s)")

    if jobs <= 1 or len(todo) <= 1:
        import torch  # lazy: optional heavy dependency (torch, train extra)

        threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        try:
            for c in todo:
                finish(c, train_config(c, out, seed))
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(det)
        return trained

    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # longest first for a better balance; fork (as torch's DataLoader does) where it exists
    order = sorted(todo, key=lambda c: -(c.epochs * c.depth * c.width))
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context(method)) as ex:
        futures = [ex.submit(_worker, (c, str(out), seed)) for c in order]
        for f in as_completed(futures):
            c, rows = f.result()
            finish(c, rows)
    return trained


__all__ = ["Config", "MANIFEST", "MANIFEST_COLUMNS", "PRESETS", "preset_configs", "run",
           "train_config", "read_manifest", "pending", "build_net", "one_at_a_time"]
