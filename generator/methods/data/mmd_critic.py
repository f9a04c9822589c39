"""Prototypes and criticisms with MMD-critic (Kim, Khanna & Koyejo, NeurIPS 2016).

Given points ``X`` (``n x d``, e.g. penultimate-layer embeddings or raw pixels):

* **Prototypes** ``S`` are chosen greedily to minimise the squared maximum mean discrepancy
  between the data and the prototypes,

  ``MMD^2(X, S) = 1/n^2 sum_ij k(x_i, x_j) - 2/(n m) sum_i sum_{j in S} k(x_i, x_j)
  + 1/m^2 sum_{i, j in S} k(x_i, x_j)``,

  i.e. to maximise ``J_b(S) = 2/(n m) sum_{i, j in S} k(x_i, x_j) - 1/m^2 sum_{i,j in S} k``
  (the paper's eq. 4). Adding candidate ``c`` to ``S`` (``|S| = m``) changes ``(m+1) J_b`` by a
  ``c``-dependent amount ``2/n colsum[c] - (2 cross_S[c] + k(c, c)) / (m + 1)``, where
  ``colsum[c] = sum_i k(x_i, x_c)`` and ``cross_S[c] = sum_{j in S} k(x_c, x_j)``; both are
  vectors over all candidates, so one greedy step is a handful of vector operations plus one
  new kernel column. The original implementation (github.com/BeenKim/MMD-critic) uses the same
  criterion, so the greedy path is the paper's.

* **Criticisms** ``C`` (disjoint from ``S``) maximise ``L(C) = sum_{c in C} |w(c)| + log det
  K_CC`` where ``w(x) = 1/n sum_i k(x, x_i) - 1/m sum_{j in S} k(x, x_j)`` is the witness
  function: positive where the data are denser than the prototypes suggest, negative where
  prototypes over-represent. The log-determinant term (the paper's diversity regulariser)
  stops criticisms from piling up in one place. The greedy gain of ``c`` is ``|w(c)| +
  log(k(c,c) - k_cC K_CC^-1 k_Cc)`` (a Schur complement), which is kept for all candidates at
  once with the incremental Cholesky update of fast greedy MAP inference for DPPs (Chen, Zhang
  & Zhou, NeurIPS 2018): ``O(n |C|)`` memory, one kernel column per step.

Nothing ``n x n`` is ever held: ``colsum`` is accumulated from row chunks of the kernel, so
60,000 points cost one pass over the kernel (about ``n^2 d`` flops) plus ``O(n d)`` per selected
point. On a GPU this takes seconds; on a laptop CPU, about a minute.

Kernel: RBF ``k(x, y) = exp(-||x - y||^2 / (2 sigma^2))`` with ``sigma`` from the median
heuristic (median pairwise distance over at most ``median_sample`` points, seeded) unless given,
or linear ``k(x, y) = x . y``.

Ties in any argmax go to the lowest index, so results are deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

__all__ = [
    "KernelSpec",
    "MMDCriticResult",
    "median_heuristic_bandwidth",
    "kernel_matrix",
    "mmd_critic",
    "mmd_critic_per_class",
]

ArrayLike = Union[np.ndarray, torch.Tensor]


@dataclass(frozen=True)
class KernelSpec:
    """A resolved kernel: ``"rbf"`` with its bandwidth ``sigma``, or ``"linear"``."""

    name: str = "rbf"
    sigma: Optional[float] = None

    def describe(self) -> str:
        if self.name == "rbf":
            return f"RBF kernel exp(-||x-y||^2 / (2 sigma^2)), sigma = {self.sigma:.4g}"
        return "linear kernel x . y"


@dataclass
class MMDCriticResult:
    """Indices refer to rows of the ``X`` that was passed in (or of the whole dataset for the
    per-class variant). ``witness`` holds ``w(x_i)`` for every row of the pool, so pages can show
    the distribution; ``mmd2`` is ``MMD^2(X, S_1..S_t)`` after each prototype was added."""

    prototypes: np.ndarray
    criticisms: np.ndarray
    prototype_witness: np.ndarray
    criticism_witness: np.ndarray
    witness: np.ndarray
    mmd2: np.ndarray
    kernel: KernelSpec
    n: int
    label: Optional[int] = None
    extra: Dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, object]:
        return {
            "label": self.label,
            "n": self.n,
            "kernel": self.kernel.name,
            "sigma": self.kernel.sigma,
            "prototypes": self.prototypes.tolist(),
            "criticisms": self.criticisms.tolist(),
            "prototype_witness": self.prototype_witness.tolist(),
            "criticism_witness": self.criticism_witness.tolist(),
            "mmd2": self.mmd2.tolist(),
        }


def _as_tensor(x: ArrayLike, device: Optional[Union[str, torch.device]], dtype: torch.dtype) -> torch.Tensor:
    t = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    t = t.detach()
    if t.dim() != 2:
        t = t.reshape(t.shape[0], -1)
    return t.to(device=device if device is not None else t.device, dtype=dtype)


def _sq_dists(a: torch.Tensor, b: torch.Tensor, b_sq: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Squared Euclidean distances, clamped at 0 (the expansion can go slightly negative)."""
    a_sq = (a * a).sum(1, keepdim=True)
    if b_sq is None:
        b_sq = (b * b).sum(1)
    d = a_sq + b_sq[None, :] - 2.0 * (a @ b.T)
    return d.clamp_min_(0.0)


def median_heuristic_bandwidth(X: ArrayLike, *, max_points: int = 2000, seed: int = 0) -> float:
    """Median of the pairwise Euclidean distances ``||x_i - x_j||`` over pairs ``i < j``.

    Above ``max_points`` rows a seeded random subset of that size is used (the median of
    ~2 million distances is stable to a fraction of a percent). The lower median is taken
    (``torch.median``), so the value is one of the distances.
    """
    is64 = getattr(X, "dtype", None) in (torch.float64, np.float64)
    x = _as_tensor(X, None, torch.float64 if is64 else torch.float32)
    n = x.shape[0]
    if n < 2:
        return 1.0
    if n > max_points:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(n, generator=g)[:max_points].to(x.device)
        x = x[idx]
        n = max_points
    d = _sq_dists(x, x)
    iu = torch.triu_indices(n, n, offset=1, device=x.device)
    med = d[iu[0], iu[1]].median().sqrt().item()
    return med if med > 0 else 1.0


def _resolve_kernel(X: torch.Tensor, kernel: str, sigma: Optional[float], median_sample: int, seed: int) -> KernelSpec:
    if kernel == "linear":
        return KernelSpec("linear", None)
    if kernel != "rbf":
        raise ValueError(f"unknown kernel {kernel!r}; expected 'rbf' or 'linear'")
    if sigma is None:
        sigma = median_heuristic_bandwidth(X, max_points=median_sample, seed=seed)
    if not sigma > 0:
        raise ValueError(f"RBF bandwidth must be positive, got {sigma}")
    return KernelSpec("rbf", float(sigma))


def _kernel_block(
    a: torch.Tensor, b: torch.Tensor, spec: KernelSpec, b_sq: Optional[torch.Tensor] = None
) -> torch.Tensor:
    if spec.name == "linear":
        return a @ b.T
    # exp(-(|a|^2 + |b|^2 - 2 a.b) / (2 s^2)) in one addmm, one add and one exp over the block:
    # the block is large (rows x n), so every pass over it counts.
    g = 1.0 / (2.0 * spec.sigma**2)
    if b_sq is None:
        b_sq = (b * b).sum(1)
    a_sq = (a * a).sum(1, keepdim=True)
    t = torch.addmm(b_sq[None, :], a, b.T, beta=-g, alpha=2.0 * g)
    t.sub_(a_sq * g)
    return t.clamp_max_(0.0).exp_()


def kernel_matrix(A: ArrayLike, B: ArrayLike, spec: KernelSpec, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The full kernel matrix between ``A`` and ``B`` (for small inputs and tests)."""
    a = _as_tensor(A, None, dtype)
    b = _as_tensor(B, a.device, dtype)
    return _kernel_block(a, b, spec)


def _pick_chunk(n: int, budget_elems: int) -> int:
    return max(1, min(n, budget_elems // max(n, 1)))


def mmd_critic(
    X: ArrayLike,
    n_prototypes: int = 10,
    n_criticisms: int = 10,
    *,
    kernel: str = "rbf",
    sigma: Optional[float] = None,
    regularizer: str = "logdet",
    device: Optional[Union[str, torch.device]] = None,
    dtype: torch.dtype = torch.float32,
    chunk_elems: int = 1 << 25,
    median_sample: int = 2000,
    seed: int = 0,
) -> MMDCriticResult:
    """Select prototypes and criticisms of the rows of ``X`` (Kim, Khanna & Koyejo 2016).

    ``regularizer`` is ``"logdet"`` (the paper's diversity term) or ``"none"`` (criticisms are
    then simply the largest ``|w|``). ``chunk_elems`` bounds the kernel block held at once
    (``2^25`` floats = 128 MiB in float32). ``dtype=torch.float64`` gives reference-grade
    numbers; float32 is the fast default.
    """
    x = _as_tensor(X, device, dtype)
    n = x.shape[0]
    if kernel == "rbf" and n:
        # the RBF kernel is translation invariant; centring keeps |x|^2 small, so the
        # expansion |a|^2 + |b|^2 - 2 a.b loses less to cancellation
        x = x - x.mean(0, keepdim=True)
    if n == 0:
        raise ValueError("mmd_critic needs at least one point")
    if regularizer not in ("logdet", "none"):
        raise ValueError(f"unknown regularizer {regularizer!r}; expected 'logdet' or 'none'")
    n_prototypes = int(min(max(n_prototypes, 0), n))
    n_criticisms = int(min(max(n_criticisms, 0), n - n_prototypes))
    spec = _resolve_kernel(x, kernel, sigma, median_sample, seed)

    # colsum[c] = sum_i k(x_i, x_c): one pass over the kernel in row chunks.
    x_sq = (x * x).sum(1)
    colsum = torch.zeros(n, dtype=dtype, device=x.device)
    step = _pick_chunk(n, chunk_elems)
    for start in range(0, n, step):
        block = _kernel_block(x[start : start + step], x, spec, x_sq)
        colsum[start : start + step] = block.sum(1)  # symmetric kernel: row sums = column sums
        del block
    if spec.name == "rbf":
        diag = torch.ones(n, dtype=dtype, device=x.device)
    else:
        diag = x_sq.clone()
    total = colsum.sum()

    def column(j: int) -> torch.Tensor:
        return _kernel_block(x[j : j + 1], x, spec, x_sq)[0]

    # ---- prototypes: greedy maximisation of J_b, vectorised over candidates -------------
    selected: List[int] = []
    available = torch.ones(n, dtype=torch.bool, device=x.device)
    cross = torch.zeros(n, dtype=dtype, device=x.device)  # sum_{j in S} k(x_c, x_j)
    s_colsum = torch.zeros((), dtype=dtype, device=x.device)  # sum_{j in S} colsum[j]
    s_ss = torch.zeros((), dtype=dtype, device=x.device)  # sum_{i,j in S} k
    mmd2: List[float] = []
    neg_inf = torch.tensor(-math.inf, dtype=dtype, device=x.device)
    for m in range(n_prototypes):
        gain = 2.0 * colsum / n - (2.0 * cross + diag) / (m + 1)
        gain = torch.where(available, gain, neg_inf)
        j = int(torch.argmax(gain).item())  # first maximum: lowest index on ties
        kj = column(j)
        s_ss = s_ss + 2.0 * cross[j] + diag[j]
        s_colsum = s_colsum + colsum[j]
        cross += kj
        available[j] = False
        selected.append(j)
        mm = m + 1
        mmd2.append(float(total / n**2 - 2.0 * s_colsum / (n * mm) + s_ss / mm**2))

    # ---- witness function ---------------------------------------------------------------
    if selected:
        witness = colsum / n - cross / len(selected)
    else:
        witness = colsum / n

    # ---- criticisms: greedy |w| + log det, incremental Cholesky over all candidates -------
    crit: List[int] = []
    if n_criticisms:
        cand = available.clone()
        resid = diag.clone()  # k(c,c) - k_cC K_CC^-1 k_Cc
        basis = torch.zeros((n_criticisms, n), dtype=dtype, device=x.device)
        tiny = torch.finfo(dtype).tiny
        absw = witness.abs()
        for t in range(n_criticisms):
            if regularizer == "logdet":
                score = absw + torch.log(resid.abs().clamp_min(tiny))
            else:
                score = absw
            score = torch.where(cand, score, neg_inf)
            j = int(torch.argmax(score).item())
            crit.append(j)
            cand[j] = False
            if regularizer == "logdet" and t + 1 < n_criticisms:
                dj = resid[j].abs().clamp_min(tiny).sqrt()
                e = (column(j) - basis[:t].T @ basis[:t, j]) / dj
                basis[t] = e
                resid = resid - e * e

    protos = np.asarray(selected, dtype=np.int64)
    crits = np.asarray(crit, dtype=np.int64)
    w = witness.detach().cpu().double().numpy()
    return MMDCriticResult(
        prototypes=protos,
        criticisms=crits,
        prototype_witness=w[protos] if len(protos) else np.zeros(0),
        criticism_witness=w[crits] if len(crits) else np.zeros(0),
        witness=w,
        mmd2=np.asarray(mmd2, dtype=np.float64),
        kernel=spec,
        n=n,
    )


def mmd_critic_per_class(
    X: ArrayLike,
    labels: Union[np.ndarray, torch.Tensor, Sequence[int]],
    n_prototypes: int = 10,
    n_criticisms: int = 10,
    *,
    classes: Optional[Sequence[int]] = None,
    shared_sigma: bool = True,
    kernel: str = "rbf",
    sigma: Optional[float] = None,
    **kwargs,
) -> Dict[object, MMDCriticResult]:
    """MMD-critic within each class plus once over all points (key ``"all"``).

    Indices in every result refer to rows of ``X``. With ``shared_sigma`` (default) one
    median-heuristic bandwidth, from the whole data set, is used for every class, so witness
    values are comparable across classes; otherwise each class gets its own.
    """
    lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
    x = X if isinstance(X, torch.Tensor) else torch.as_tensor(np.asarray(X))
    if x.shape[0] != lab.shape[0]:
        raise ValueError(f"{x.shape[0]} points but {lab.shape[0]} labels")
    if kernel == "rbf" and sigma is None and shared_sigma:
        sigma = median_heuristic_bandwidth(
            _as_tensor(x, kwargs.get("device"), kwargs.get("dtype", torch.float32)),
            max_points=kwargs.get("median_sample", 2000),
            seed=kwargs.get("seed", 0),
        )
    out: Dict[object, MMDCriticResult] = {}
    for c in (classes if classes is not None else sorted(np.unique(lab).tolist())):
        rows = np.flatnonzero(lab == c)
        if len(rows) == 0:
            continue
        res = mmd_critic(x[torch.as_tensor(rows)], n_prototypes, n_criticisms, kernel=kernel, sigma=sigma, **kwargs)
        res.prototypes = rows[res.prototypes]
        res.criticisms = rows[res.criticisms]
        res.extra["rows"] = rows
        res.label = int(c)
        out[int(c)] = res
    out["all"] = mmd_critic(x, n_prototypes, n_criticisms, kernel=kernel, sigma=sigma, **kwargs)
    return out
