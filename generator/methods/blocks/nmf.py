"""Non-negative matrix factorisation in torch (HALS), for neuron groups.

``X (n x m) ~ W (n x k) @ H (k x m)`` with W, H >= 0, minimising the Frobenius error, by
hierarchical alternating least squares (Cichocki & Phan 2009, "Fast local algorithms for large
scale nonnegative matrix and tensor factorizations"; the same coordinate-descent update as
scikit-learn's ``solver="cd"``). Initialised by NNDSVD (Boutsidis & Gallopoulos 2008), with
zeros filled by the mean of X ("nndsvda", scikit-learn's default for k < min(n, m)), or by a
seeded random draw. The initialisation is computed on the CPU in float64, so it is identical on
every device; the iterations run on X's device (GPU-capable) and are deterministic there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class NMFResult:
    """``W`` (n x k) spatial factors, ``H`` (k x m) channel factors with unit-L2 rows, sorted by
    the size of each rank-one component (``||W[:, g]|| * ||H[g]||``, largest first);
    ``error``: ``||X - W H||_F``; ``relative_error``: error / ``||X||_F``; ``n_iter``."""

    W: torch.Tensor
    H: torch.Tensor
    error: float
    relative_error: float
    n_iter: int


def _nndsvd(X: torch.Tensor, k: int, fill: str) -> tuple:
    """NNDSVD initialisation (float64, CPU), following Boutsidis & Gallopoulos 2008."""
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    n, m = X.shape
    W = torch.zeros(n, k, dtype=X.dtype)
    H = torch.zeros(k, m, dtype=X.dtype)
    W[:, 0] = S[0].sqrt() * U[:, 0].abs()
    H[0, :] = S[0].sqrt() * Vh[0, :].abs()
    for j in range(1, k):
        x, y = U[:, j], Vh[j, :]
        xp, xn, yp, yn = x.clamp(min=0), (-x).clamp(min=0), y.clamp(min=0), (-y).clamp(min=0)
        xpn, xnn, ypn, ynn = xp.norm(), xn.norm(), yp.norm(), yn.norm()
        mp, mn = xpn * ypn, xnn * ynn
        if mp > mn:
            u, v, sigma = xp / xpn, yp / ypn, mp
        else:
            u, v, sigma = xn / xnn, yn / ynn, mn
        lbd = (S[j] * sigma).sqrt()
        W[:, j] = lbd * u
        H[j, :] = lbd * v
    eps = 1e-6
    W[W < eps] = 0
    H[H < eps] = 0
    if fill == "mean":
        avg = X.mean()
        W[W == 0] = avg
        H[H == 0] = avg
    W = torch.nan_to_num(W, nan=0.0)
    H = torch.nan_to_num(H, nan=0.0)
    return W, H


def nmf(
    X: torch.Tensor,
    k: int,
    *,
    init: str = "nndsvda",
    seed: int = 0,
    max_iter: int = 300,
    tol: float = 1e-5,
    check_every: int = 10,
    use_cuda_graph: bool = True,
) -> NMFResult:
    """Factorise a non-negative ``X`` (n x m) into ``k`` components on X's device.

    ``init``: "nndsvda" (default), "nndsvd" (zeros kept) or "random" (seeded by ``seed``: uniform
    scaled to X's mean, as scikit-learn). Iterates HALS until the relative decrease of the error
    over ``check_every`` iterations is below ``tol`` or ``max_iter`` is reached.
    """
    if X.dim() != 2:
        raise ValueError(f"X must be a matrix, got shape {tuple(X.shape)}")
    if (X < 0).any():
        raise ValueError("NMF needs a non-negative matrix (clamp or split signed activations first)")
    n, m = X.shape
    if not 1 <= k <= min(n, m):
        raise ValueError(f"k={k} must be between 1 and min(n, m) = {min(n, m)}")
    device = X.device
    X64 = X.detach().to("cpu", torch.float64)
    if init in ("nndsvda", "nndsvd"):
        W0, H0 = _nndsvd(X64, k, "mean" if init == "nndsvda" else "zero")
    elif init == "random":
        gen = torch.Generator().manual_seed(int(seed))
        scale = math.sqrt(float(X64.mean()) / k)
        W0 = scale * torch.rand(n, k, generator=gen, dtype=torch.float64)
        H0 = scale * torch.rand(k, m, generator=gen, dtype=torch.float64)
    else:
        raise ValueError(f"unknown init {init!r} (nndsvda, nndsvd, random)")

    if device.type == "cpu" and n * m * k <= _SMALL:
        # Each HALS step is a handful of tiny kernels; with several OpenMP threads their
        # fork/join (and spinning when cores are shared) costs 10-100x the arithmetic.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return _hals(X, W0, H0, k, max_iter, tol, check_every, use_cuda_graph)
        finally:
            torch.set_num_threads(threads)
    return _hals(X, W0, H0, k, max_iter, tol, check_every, use_cuda_graph)


_SMALL = 4_000_000


def _hals(
    X: torch.Tensor, W0: torch.Tensor, H0: torch.Tensor, k: int, max_iter: int, tol: float, check_every: int,
    use_cuda_graph: bool
) -> NMFResult:
    device = X.device
    Xf = X.detach().to(device=device, dtype=torch.float32)
    W = W0.to(device=device, dtype=torch.float32)
    H = H0.to(device=device, dtype=torch.float32)
    xx = float((Xf * Xf).sum())
    tiny = 1e-12

    def sq_error(WtX: torch.Tensor, WtW: torch.Tensor) -> torch.Tensor:
        # ||X - WH||^2 = ||X||^2 - 2 <W^T X, H> + <W^T W, H H^T>, from products already at hand.
        return xx - 2 * (WtX * H).sum() + (WtW * (H @ H.T)).sum()

    def step() -> None:
        # H step: coordinate descent over the k rows of H, W fixed.
        WtX, WtW = W.T @ Xf, W.T @ W
        for j in range(k):
            H[j] = (H[j] + (WtX[j] - WtW[j] @ H) / WtW[j, j].clamp(min=tiny)).clamp(min=0)
        # W step: the same for the k columns of W, H fixed.
        XHt, HHt = Xf @ H.T, H @ H.T
        for j in range(k):
            W[:, j] = (W[:, j] + (XHt[:, j] - W @ HHt[:, j]) / HHt[j, j].clamp(min=tiny)).clamp(min=0)

    def block() -> None:
        for _ in range(check_every):
            step()

    def converged() -> bool:
        nonlocal prev
        err = float(sq_error(W.T @ Xf, W.T @ W).clamp(min=0))
        done = prev is not None and prev - err <= tol * max(prev, tiny)
        prev = err
        return done

    prev = None
    it = 0
    runner = block
    if device.type == "cuda" and use_cuda_graph and max_iter >= 2 * check_every:
        # One iteration is 2k row and column updates of a few tiny kernels each; on a GPU the
        # launches, not the arithmetic, set the time, so a block of iterations is captured once as a CUDA graph
        # and replayed (same kernels, so still deterministic). The warm-up block counts.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            block()
        torch.cuda.current_stream(device).wait_stream(side)
        it = check_every
        if not converged():
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    block()
                runner = graph.replay
            except RuntimeError:  # capture unsupported here: eager iterations, same result
                runner = block
        else:
            max_iter = it
    while it + check_every <= max_iter:
        runner()
        it += check_every
        if converged():
            break
    else:
        while it < max_iter:
            step()
            it += 1

    # Canonical form: unit-norm channel factors, components sorted by size (a stable order).
    hn = H.norm(dim=1)
    scale = torch.where(hn > 0, hn, torch.ones_like(hn))
    H = H / scale[:, None]
    W = W * scale[None, :]
    size = W.norm(dim=0)
    order = torch.sort(size, descending=True, stable=True).indices
    W, H = W[:, order].contiguous(), H[order].contiguous()
    error = float((Xf - W @ H).norm())
    xnorm = math.sqrt(xx)
    return NMFResult(W=W, H=H, error=error, relative_error=error / xnorm if xnorm > 0 else 0.0, n_iter=it)
