"""Noisy linear imputation of removed pixels (ROAD: Rong, Leemann, Borisov, Kasneci & Kasneci
2022, "A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML).

ROAR replaces the removed pixels by one colour. The *shape* of the removed region then stays
visible, and since that shape follows the attribution map it can tell a retrained model the
class by itself: the test measures the mask instead of the information left in the image.
ROAD fills every removed pixel with the weighted mean of its eight neighbours (removed or not),
which makes the filled region continue its surroundings, and adds a little Gaussian noise so
the filling is not recognisable by its perfect smoothness.

The weighted means couple the removed pixels to each other: for every removed pixel ``i``

    (sum_j w_ij) u_i - sum_{j removed} w_ij u_j = sum_{j kept} w_ij x_j

over its in-image neighbours ``j``, with weight 1/6 for the four direct neighbours and 1/12 for
the four diagonal ones (the paper's weights; neighbours outside the image are left out of both
sides). The system is symmetric and, wherever some pixel of the image is kept, positive
definite. It is solved by conjugate gradients with a Jacobi preconditioner, every image (and
channel) a column of one batch. The neighbour weights form a sparse H*W x H*W matrix with eight
diagonals (pixels numbered row by row: offsets +-1, +-W, +-W+-1); it is applied diagonal by
diagonal, as eight shifted multiply-adds over contiguous memory, four times faster on a CPU
than a general sparse product (:func:`neighbour_matrix` is the same matrix, for checks).
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch

#: Neighbour weights of ROAD's noisy linear imputer: 1/6 direct, 1/12 diagonal.
ROAD_KERNEL = torch.tensor([[1 / 12, 1 / 6, 1 / 12],
                            [1 / 6, 0.0, 1 / 6],
                            [1 / 12, 1 / 6, 1 / 12]], dtype=torch.float64)


@functools.lru_cache(maxsize=8)
def _neighbours(height: int, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Row, column indices (2, E) and weights (E,) of the in-image neighbour pairs of an
    ``height`` x ``width`` grid, pixels numbered row by row."""
    rows, cols, weights = [], [], []
    index = torch.arange(height * width).view(height, width)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            w = float(ROAD_KERNEL[di + 1, dj + 1])
            if w == 0.0:
                continue
            src = index[max(0, -di):height - max(0, di), max(0, -dj):width - max(0, dj)]
            dst = index[max(0, di):height + min(0, di), max(0, dj):width + min(0, dj)]
            rows.append(src.reshape(-1))
            cols.append(dst.reshape(-1))
            weights.append(torch.full((src.numel(),), w, dtype=torch.float64))
    return torch.stack([torch.cat(rows), torch.cat(cols)]), torch.cat(weights)


def neighbour_matrix(height: int, width: int, *, dtype: torch.dtype = torch.float64,
                     device: Optional[torch.device] = None) -> torch.Tensor:
    """The sparse (H*W, H*W) matrix of neighbour weights ``w_ij`` (pixels row by row)."""
    idx, w = _neighbours(int(height), int(width))
    n = int(height) * int(width)
    return torch.sparse_coo_tensor(idx, w, (n, n), check_invariants=False).coalesce().to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=16)
def _diagonals(height: int, width: int, dtype: torch.dtype, device: str) -> Tuple[Tuple[int, torch.Tensor], ...]:
    """The neighbour matrix by diagonals: (offset, weights (P, 1)) with ``weights[k]`` the weight
    of pixel ``k + offset`` in pixel ``k``'s mean (0 where that neighbour is outside the image)."""
    i = torch.arange(height).view(-1, 1).expand(height, width).reshape(-1)
    j = torch.arange(width).view(1, -1).expand(height, width).reshape(-1)
    out = []
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            w = float(ROAD_KERNEL[di + 1, dj + 1])
            if w == 0.0:
                continue
            inside = (i + di >= 0) & (i + di < height) & (j + dj >= 0) & (j + dj < width)
            out.append((di * width + dj, (inside.to(torch.float64) * w).view(-1, 1).to(device=device, dtype=dtype)))
    return tuple(out)


def _neighbour_sum(diagonals, u: torch.Tensor) -> torch.Tensor:
    """S @ u for u (P, B): sum_j w_ij u_j over in-image neighbours, diagonal by diagonal."""
    P = u.shape[0]
    out = torch.zeros_like(u)
    for offset, w in diagonals:
        if abs(offset) >= P:  # a neighbour beyond the whole image (one-row images): none
            continue
        if offset > 0:
            out[:P - offset].addcmul_(w[:P - offset], u[offset:])
        else:
            out[-offset:].addcmul_(w[-offset:], u[:P + offset])
    return out


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    # float64 stays float64 (the tests' exact checks); everything else is solved in float32,
    # ample for pixels that end up as 8-bit values and several times faster than float64
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def linear_imputation_system(x: torch.Tensor, missing: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """The parts of the neighbour-average equations of :func:`noisy_linear_imputation` for ``x``
    (N,C,H,W) and ``missing`` (N,H,W), one column per image and channel (P = H*W pixels): the
    diagonal ``sum_j w_ij`` (P, 1), the right-hand sides (P, N*C; zero at kept pixels), the mask
    of unknowns (P, N*C; 1 where missing) and ``x`` itself as columns (P, N*C)."""
    N, C, H, W = x.shape
    dtype = _work_dtype(x)
    diagonals = _diagonals(H, W, dtype, str(x.device))
    miss = missing.to(x.device).bool().reshape(N, 1, H * W).expand(N, C, H * W).reshape(N * C, H * W).T.to(dtype)
    xs = x.to(dtype).reshape(N * C, H * W).T
    diag = sum(w for _, w in diagonals)
    rhs = _neighbour_sum(diagonals, xs * (1 - miss)) * miss
    return diag, rhs, miss, xs


def noisy_linear_imputation(x: torch.Tensor, missing: torch.Tensor, *, noise: float = 0.01,
                            generator: Optional[torch.Generator] = None, fill: Optional[torch.Tensor] = None,
                            tolerance: float = 1e-5, max_iterations: Optional[int] = None) -> torch.Tensor:
    """``x`` (N,C,H,W) with the pixels where ``missing`` (N,H,W, bool) is true replaced by ROAD's
    noisy linear imputation (Rong et al. 2022): the solution of the neighbour-average equations
    (see the module docstring) plus Gaussian noise of standard deviation ``noise`` (in the units
    of ``x``; 0 gives the plain linear imputation). Kept pixels are returned unchanged.

    An image with every pixel missing has nothing to interpolate from; its pixels get ``fill``
    (per channel, default the mean of ``x``) plus the noise. ``tolerance``: the conjugate
    gradients stop when every system's residual is below ``tolerance`` times its right-hand
    side (or the initial residual when that side is zero); ``max_iterations`` defaults to
    ``4 * (H + W) + 50``, ample for the conditioning of these systems (a 28 x 28 image with 90% of
    its pixels removed in blobs converges in about 80 iterations). Solved in float32 (float64
    when ``x`` is float64): the default tolerance is far below an 8-bit pixel step.
    """
    N, C, H, W = x.shape
    missing = missing.to(x.device).bool().view(N, H, W)
    if not missing.any():
        return x.clone()
    dtype = _work_dtype(x)
    tiny = torch.finfo(dtype).tiny
    diagonals = _diagonals(H, W, dtype, str(x.device))
    diag, rhs, miss, xs = linear_imputation_system(x, missing)

    def apply(u: torch.Tensor) -> torch.Tensor:  # A u on the missing pixels (u is zero elsewhere)
        return (diag * u - _neighbour_sum(diagonals, u)) * miss

    # start from the mean of the kept pixels of each image: close, and cheap
    kept = 1 - miss
    u = ((xs * kept).sum(0, keepdim=True) / kept.sum(0, keepdim=True).clamp(min=1)) * miss
    r = rhs - apply(u)
    inv = miss / diag  # Jacobi preconditioner (the diagonal is positive everywhere)
    z = inv * r
    p = z.clone()
    rz = (r * z).sum(0)
    side, first = rhs.square().sum(0), r.square().sum(0)
    goal = tolerance ** 2 * torch.where(side > 0, side, first).clamp(min=tiny)  # squared norms
    limit = max_iterations if max_iterations is not None else 4 * (H + W) + 50
    for step in range(limit):
        # a look at every residual costs a sync (on a GPU) and a reduction: every fourth step
        if step % 4 == 0 and bool((r.square().sum(0) <= goal).all()):
            break
        ap = apply(p)
        pap = (p * ap).sum(0)
        alpha = torch.where(pap > 0, rz / pap.clamp(min=tiny), 0.0)
        u = u + alpha * p
        r = r - alpha * ap
        z = inv * r
        rz_new = (r * z).sum(0)
        beta = torch.where(rz > 0, rz_new / rz.clamp(min=tiny), 0.0)
        p = z + beta * p
        rz = rz_new
    filled = u.T.reshape(N, C, H, W)
    everything = missing.flatten(1).all(1)
    if everything.any():
        value = (fill if fill is not None else x.mean(dim=(0, 2, 3))).to(x.device, dtype).view(1, C, 1, 1)
        filled = torch.where(everything.view(N, 1, 1, 1), value.expand(N, C, H, W), filled)
    if noise > 0:
        # drawn on the CPU: the same seed gives the same noise on every device
        filled = filled + noise * torch.randn(filled.shape, generator=generator, dtype=dtype).to(x.device)
    return torch.where(missing.view(N, 1, H, W), filled.to(x.dtype), x)
