"""The distribution of the variance entropy ``H`` of i.i.d. random layers (docs/method.md,
section 5), and from it the randomness threshold of any kernel (:func:`simulated_threshold`).

``H`` of ``n`` i.i.d. ``N(0, I_d)`` filters depends on ``n`` and ``d = kh * kw`` only. The
nonzero variances are the eigenvalues of the centred scatter matrix, a Wishart
``W_d(m, I)`` with ``m = n - 1`` degrees of freedom. Its nonzero spectrum is that of a
``W_k(D, I)`` with ``k = min(m, d)`` and ``D = max(m, d)`` (for ``m < d``: the ``n x n``
Gram of the centred rows restricted to the complement of the all-ones vector, which by
rotation invariance is ``W_m(d, I)``). Each draw is a ``k x k`` Bartlett factor, so the
cost of a draw is independent of ``D`` and memory is ``O(k^2)`` per draw.

Bounded cost for any kernel size:

- ``k <= K_EXACT``: ``draws(k)`` exact draws (:func:`n_draws`: 4000 for small ``k``,
  fewer as ``k^3`` grows, at least 500), in batches of at most ``BATCH_ELEMENTS`` floats.
- ``k > K_EXACT``: the entropy deficit ``delta = log10(k) - H`` tends to the
  Marchenko-Pastur limit ``delta_inf(y) = E[x log10 x]`` (``x`` Marchenko-Pastur with ratio
  ``y = k / D`` and mean 1) with fluctuations and bias of order ``1 / k``. Draws are made at
  ``k0 = K_EXACT`` with the same ratio and mapped per draw:
  ``delta_k = delta_inf + (delta_k0 - delta_inf) * k0 / k``. The result says so
  (``method = "extrapolated"``).

Bounded count of simulations: ``n <= N_EXACT`` is simulated at ``n`` itself; a larger
``n`` between two points of the grid ``N_EXACT * 2^(j / GRID_PER_OCTAVE)`` gets the
quantile function interpolated linearly in ``1 / n`` between the grid points' (``H``'s
mean moves as ``1 / n`` there; the error is a small fraction of the spread, tested), so a
database of any number of distinct layer sizes needs at most ``N_EXACT`` plus
``GRID_PER_OCTAVE`` simulations per octave of ``n`` for each kernel size.

Simulated draws are cached in-process; a store (``STORE``: ``load(key)`` / ``save(key,
draws)``, installed by :mod:`filterdb.health` as a file cache) keeps them across processes.

The p-value of an observed ``H`` is the share of random draws with ``H`` at most the
observed one (:func:`p_value`): small when the layer is more structured (lower ``H``)
than random layers of its size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .health import entropy_from_eigenvalues

K_EXACT = 64          # largest Wishart dimension simulated exactly
MAX_DRAWS = 4000
MIN_DRAWS = 500
COST_PER_BATCH = 4000 * 16 ** 3  # k^3 units: 4000 draws up to k = 16
BATCH_ELEMENTS = 1 << 22        # floats per batch of Bartlett factors (32 MB)
SEED = 0
STORE = None           # optional cross-process store of simulated draws (see above)
VERSION = 1            # of the simulation; part of the store's key
N_EXACT = 64           # n up to this: simulated at n itself
GRID_PER_OCTAVE = 8    # larger n: interpolated between grid points


@dataclass(frozen=True)
class RandomEntropy:
    """The simulated distribution of ``H`` of ``n`` i.i.d. random filters of dimension ``d``.

    ``draws`` sorted ascending; ``method`` is ``"exact"`` (Wishart draws of the true size),
    ``"extrapolated"`` (drawn at ``k0 = K_EXACT``, see the module docstring) or
    ``"degenerate"`` (``n <= 2`` or ``d < 2``: ``H`` is 0 for any weights, no draws).
    """

    n: int
    d: int
    draws: np.ndarray
    method: str
    interpolated: bool = False  # between two grid sizes (see the module docstring)

    @property
    def mean(self) -> float:
        return float(self.draws.mean()) if self.draws.size else float("nan")

    @property
    def sd(self) -> float:
        return float(self.draws.std(ddof=1)) if self.draws.size > 1 else float("nan")

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.draws, q)) if self.draws.size else float("nan")

    def p_value(self, H):
        """Share of random draws with ``H_random <= H`` (NaN for NaN ``H`` or no draws)."""
        return p_value(self.draws, H)


def p_value(sorted_draws, H):
    """``#(draws <= H) / #draws`` for each ``H`` (``sorted_draws`` ascending)."""
    d = np.asarray(sorted_draws, np.float64)
    H = np.asarray(H, np.float64)
    if d.size == 0:
        out = np.full(H.shape, np.nan)
    else:
        out = np.searchsorted(d, np.where(np.isfinite(H), H, 0.0), side="right") / d.size
        out = np.where(np.isfinite(H), out, np.nan)
    return float(out) if out.ndim == 0 else out


def n_draws(k: int) -> int:
    """Draws for a Wishart dimension ``k`` (``k <= K_EXACT``): ``MAX_DRAWS`` while
    ``k^3`` is small, then a fixed ``k^3`` budget, never fewer than ``MIN_DRAWS``."""
    return int(min(MAX_DRAWS, max(MIN_DRAWS, COST_PER_BATCH // max(k, 1) ** 3)))


def wishart_entropy(k: int, dof: int, draws: int, rng) -> np.ndarray:
    """``H`` of the eigenvalues of ``draws`` Wishart ``W_k(dof, I)`` matrices (Bartlett:
    ``L L^T`` with ``L`` lower triangular, ``L_ii^2 ~ chi2(dof - i)``, ``L_ij ~ N(0, 1)``)."""
    out = np.empty(draws)
    per = max(1, BATCH_ELEMENTS // (k * k))
    rows, cols = np.tril_indices(k, -1)
    diag = np.arange(k)
    for b0 in range(0, draws, per):
        b = min(per, draws - b0)
        L = np.zeros((b, k, k))
        L[:, rows, cols] = rng.standard_normal((b, rows.size))
        L[:, diag, diag] = np.sqrt(rng.chisquare(dof - diag, size=(b, k)))
        G = L @ np.swapaxes(L, -1, -2)
        out[b0:b0 + b] = entropy_from_eigenvalues(np.linalg.eigvalsh(G))
    return out


def mp_deficit(y: float) -> float:
    """``E[x log10 x]`` for ``x`` Marchenko-Pastur with ratio ``0 < y <= 1`` and mean 1:
    the large-size limit of ``log10(k) - H`` for i.i.d. random filters."""
    from scipy.integrate import quad  # lazy: start-up time (scipy.integrate for one constant)

    y = float(y)
    a, b = (1 - math.sqrt(y)) ** 2, (1 + math.sqrt(y)) ** 2

    def f(x):
        return math.sqrt(max((b - x) * (x - a), 0.0)) / (2 * math.pi * y) * math.log10(x)

    # x log10 x times the density 1 / x: integrable at a = 0 (y = 1)
    val, _ = quad(f, a, b, limit=200)
    return float(val)


def grid_neighbours(n: int) -> tuple[int, int]:
    """The grid sizes ``g0 <= n <= g1`` around ``n > N_EXACT`` (equal when ``n`` is one)."""
    j = math.floor(GRID_PER_OCTAVE * math.log2(n / N_EXACT) + 1e-9)
    g0 = int(round(N_EXACT * 2 ** (j / GRID_PER_OCTAVE)))
    g1 = int(round(N_EXACT * 2 ** ((j + 1) / GRID_PER_OCTAVE)))
    if g0 > n:  # rounding at the boundary
        g0, g1 = int(round(N_EXACT * 2 ** ((j - 1) / GRID_PER_OCTAVE))), g0
    if n >= g1:
        g0 = g1 = n if n == g1 else g0
    return (n, n) if n == g0 else (g0, g1)


def random_entropy(n: int, d: int, seed: int = SEED) -> RandomEntropy:
    """The (cached) :class:`RandomEntropy` of ``n`` filters of dimension ``d``."""
    n, d, seed = int(n), int(d), int(seed)
    if n <= N_EXACT or d < 2:
        return _random_entropy(n, d, seed)
    return _interpolated(n, d, seed)


@lru_cache(maxsize=256)  # cheap to rebuild from the cached grid simulations
def _interpolated(n: int, d: int, seed: int) -> RandomEntropy:
    g0, g1 = grid_neighbours(n)
    if g0 == g1:
        return _random_entropy(n, d, seed)
    a, b = _random_entropy(g0, d, seed), _random_entropy(g1, d, seed)
    if a.draws.size != b.draws.size:  # cannot happen for n > N_EXACT (see the docstring)
        return _random_entropy(n, d, seed)
    w = (1 / n - 1 / g1) / (1 / g0 - 1 / g1)
    return RandomEntropy(n, d, w * a.draws + (1 - w) * b.draws, a.method, True)


def store_key(n: int, d: int, seed: int) -> str:
    """The store's key of a simulation (changes with :data:`VERSION` and the draw counts)."""
    k = min(n - 1, d)
    return f"v{VERSION}-d{d}-n{n}-s{seed}-k{K_EXACT}-m{n_draws(min(k, K_EXACT))}"


@lru_cache(maxsize=8192)
def _random_entropy(n: int, d: int, seed: int) -> RandomEntropy:
    if n <= 2 or d < 2:
        return RandomEntropy(n, d, np.zeros(0), "degenerate")
    method = "exact" if min(n - 1, d) <= K_EXACT else "extrapolated"
    key = store_key(n, d, seed)
    if STORE is not None:
        got = STORE.load(key)
        want = n_draws(min(n - 1, d, K_EXACT))
        if (got is not None and got.shape == (want,) and np.isfinite(got).all()
                and (np.diff(got) >= 0).all()):
            return RandomEntropy(n, d, got, method)
    r = _simulate(n, d, seed)
    if STORE is not None:
        STORE.save(key, r.draws)
    return r


def _simulate(n: int, d: int, seed: int) -> RandomEntropy:
    m = n - 1
    k, dof = min(m, d), max(m, d)
    rng = np.random.default_rng([seed, n, d])
    if k <= K_EXACT:
        draws = wishart_entropy(k, dof, n_draws(k), rng)
        return RandomEntropy(n, d, np.sort(draws), "exact")
    k0 = K_EXACT
    y = k / dof
    dof0 = max(k0, int(round(k0 / y)))
    h0 = wishart_entropy(k0, dof0, n_draws(k0), rng)
    inf = mp_deficit(k0 / dof0)
    delta = inf + ((math.log10(k0) - h0) - inf) * (k0 / k)
    inf_k = mp_deficit(y)  # the limit at the true ratio (dof0 rounds it)
    draws = math.log10(k) - (delta - inf + inf_k)
    return RandomEntropy(n, d, np.sort(draws), "extrapolated")


def random_stats(n, d, H, seed: int = SEED):
    """Vectorised over layers (arrays of equal length; ``n >= 3``, ``d >= 2``): the mean and
    sd of ``H`` of random layers of each ``(n, d)``, the p-value of each ``H``
    (:func:`p_value`) and the method, as :func:`random_entropy` gives them one by one.
    Sizes interpolated between the same two grid sizes are done together, as one matrix."""
    n = np.asarray(n, np.int64)
    d = np.asarray(d, np.int64)
    H = np.asarray(H, np.float64)
    mean, sd, p = (np.full(n.shape, np.nan) for _ in range(3))
    method = np.full(n.shape, "", dtype=object)
    if not n.size:
        return mean, sd, p, method
    g = np.array([grid_neighbours(int(x)) if x > N_EXACT else (int(x), int(x))
                  for x in np.unique(n).tolist()], np.int64).reshape(-1, 2)
    gi = np.searchsorted(np.unique(n), n)
    g0, g1 = g[gi, 0], g[gi, 1]
    keys, inv = np.unique(np.stack([g0, g1, d], axis=1), axis=0, return_inverse=True)
    inv = np.asarray(inv).reshape(-1)
    groups = np.split(np.argsort(inv, kind="stable"),
                      np.cumsum(np.bincount(inv, minlength=len(keys)))[:-1])
    for (a0, a1, dd), sel in zip(keys.tolist(), groups):
        if a0 == a1:  # simulated at n itself
            r = _random_entropy(a0, dd, seed)
            mean[sel], sd[sel], p[sel] = r.mean, r.sd, r.p_value(H[sel])
            method[sel] = r.method
            continue
        ra, rb = _random_entropy(a0, dd, seed), _random_entropy(a1, dd, seed)
        A, B = ra.draws, rb.draws
        m = A.size
        w = (1 / n[sel] - 1 / a1) / (1 / a0 - 1 / a1)
        # the interpolated draws w A + (1 - w) B, never built: their mean and variance in
        # closed form, their count below H by a binary search over the (sorted) index
        ma, mb = A.mean(), B.mean()
        va, vb = A.var(), B.var()
        cab = np.mean((A - ma) * (B - mb))
        mean[sel] = w * ma + (1 - w) * mb
        var = (w * w * va + (1 - w) ** 2 * vb + 2 * w * (1 - w) * cab) * m / (m - 1)
        sd[sel] = np.sqrt(np.maximum(var, 0.0))
        h = H[sel]
        lo = np.zeros(h.shape, np.int64)
        hi = np.full(h.shape, m, np.int64)
        while True:
            act = lo < hi
            if not act.any():
                break
            mid = (lo + hi) // 2
            midc = np.minimum(mid, m - 1)
            below = (w * A[midc] + (1 - w) * B[midc]) <= h
            lo = np.where(act & below, mid + 1, lo)
            hi = np.where(act & ~below, mid, hi)
        p[sel] = np.where(np.isfinite(h), lo / m, np.nan)
        method[sel] = ra.method
    return mean, sd, p, method


def simulated_threshold(n: int, d: int, seed: int = SEED) -> float:
    """Mean ``H`` of ``n`` i.i.d. Gaussian filters of dimension ``d`` (:func:`random_entropy`):
    the randomness threshold of kernels other than 3x3 (3x3 keeps the paper's ``TH(n)``,
    :func:`filterdb.kernels.health.randomness_threshold`). NaN for ``n < 1`` or ``d < 2``;
    0 for ``n <= 2``."""
    n, d = int(n), int(d)
    if n < 1 or d < 2:
        return float("nan")
    if n <= 2:
        return 0.0
    return random_entropy(n, d, seed).mean


def simulate_iid_entropy(n: int, d: int, seed: int = SEED) -> np.ndarray:
    """The sorted simulated samples of ``H`` of ``n`` i.i.d. ``N(0, I_d)`` filters."""
    return random_entropy(int(n), int(d), seed).draws


def random_entropy_many(n, d) -> list[RandomEntropy]:
    """:func:`random_entropy` of each ``(n_i, d_i)``, each distinct pair simulated once."""
    n = np.atleast_1d(np.asarray(n, np.int64))
    d = np.broadcast_to(np.atleast_1d(np.asarray(d, np.int64)), n.shape)
    return [random_entropy(int(a), int(b)) for a, b in zip(n.tolist(), d.tolist())]


__all__ = ["RandomEntropy", "random_entropy", "random_entropy_many", "random_stats", "p_value",
           "n_draws", "simulated_threshold", "simulate_iid_entropy", "wishart_entropy",
           "mp_deficit", "grid_neighbours", "K_EXACT", "MAX_DRAWS", "MIN_DRAWS", "N_EXACT",
           "GRID_PER_OCTAVE"]
