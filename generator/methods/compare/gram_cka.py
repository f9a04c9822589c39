"""Linear CKA from per-image Gram matrices, with numpy only (no torch).

Two reports that stored the Gram matrices of the same images (``representation_grams``
artifacts) can be compared layer by layer without their models: linear CKA depends on the
activations only through the n x n Gram matrix ``K = X X^T`` of each layer (Kornblith, Norouzi,
Lee & Hinton 2019, "Similarity of Neural Network Representations Revisited", eq. 4 and sec. 3):

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),   HSIC(K, L) = <H K H, H L H>_F / (n - 1)^2

with the centring matrix ``H = I - 11^T / n`` (the ``(n-1)^2`` cancels in the ratio). Gram
matrices of already centred activations pass through the centring unchanged.

``unbiased=True`` uses the unbiased HSIC estimator of Song, Smola, Gretton, Bedo & Borgwardt
2012 ("Feature Selection via Dependence Maximization", eq. 5) in its U-centred form (Székely &
Rizzo 2014, "Partial distance correlation with methods for dissimilarities"), as Nguyen, Raghu
& Kornblith 2021 ("Do Wide and Deep Networks Learn the Same Things?") do per mini-batch; it is
less inflated on few images but needs n >= 4.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["centre_gram", "u_centre_gram", "hsic_from_grams", "cka_from_grams", "cka_matrix_from_grams"]


def centre_gram(k: np.ndarray) -> np.ndarray:
    """``H K H`` (float64): rows and columns of the Gram matrix with their means removed."""
    k = np.asarray(k, dtype=np.float64)
    _square(k)
    k = k - k.mean(axis=0, keepdims=True)
    return k - k.mean(axis=1, keepdims=True)


def u_centre_gram(k: np.ndarray) -> np.ndarray:
    """The U-centred Gram matrix (float64): zero diagonal, and for i != j
    ``K_ij - r_i/(n-2) - r_j/(n-2) + s/((n-1)(n-2))`` with ``r`` the row sums and ``s`` the total
    of ``K`` with its diagonal zeroed. ``<U(K), U(L)> / (n (n-3))`` is the unbiased HSIC."""
    k = np.array(k, dtype=np.float64)
    _square(k)
    n = k.shape[0]
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs at least 4 images, got {n}")
    np.fill_diagonal(k, 0.0)
    rows = k.sum(axis=1)
    u = k - rows[:, None] / (n - 2) - rows[None, :] / (n - 2) + rows.sum() / ((n - 1) * (n - 2))
    np.fill_diagonal(u, 0.0)
    return u


def hsic_from_grams(k: np.ndarray, l: np.ndarray, *, unbiased: bool = False) -> float:  # noqa: E741
    """HSIC of two Gram matrices of the same images: biased ``<HKH, HLH> / (n-1)^2`` or, with
    ``unbiased``, Song et al.'s estimator."""
    if np.shape(k) != np.shape(l):
        raise ValueError(f"Gram matrices of different sizes: {np.shape(k)} and {np.shape(l)} (not the same images?)")
    if unbiased:
        n = np.shape(k)[0]
        return float(np.sum(u_centre_gram(k) * u_centre_gram(l)) / (n * (n - 3)))
    n = np.shape(k)[0]
    return float(np.sum(centre_gram(k) * centre_gram(l)) / max(n - 1, 1) ** 2)


def cka_from_grams(k: np.ndarray, l: np.ndarray, *, unbiased: bool = False) -> float:  # noqa: E741
    """Linear CKA of two layers given their n x n Gram matrices on the same images, in [0, 1]
    for the biased form; NaN when a layer is constant over the images (no variance to compare)."""
    kl = hsic_from_grams(k, l, unbiased=unbiased)
    kk = hsic_from_grams(k, k, unbiased=unbiased)
    ll = hsic_from_grams(l, l, unbiased=unbiased)
    denom = np.sqrt(kk * ll) if kk > 0 and ll > 0 else 0.0
    return float(kl / denom) if denom > 0 else float("nan")


def cka_matrix_from_grams(grams_a: Sequence[np.ndarray], grams_b: Sequence[np.ndarray], *,
                          unbiased: bool = False) -> np.ndarray:
    """CKA of every layer of ``grams_a`` with every layer of ``grams_b`` (len(a) x len(b), float64):
    each Gram matrix is centred once, then every pair is one inner product."""
    centre = u_centre_gram if unbiased else centre_gram
    a = np.stack([centre(g).ravel() for g in grams_a]) if len(grams_a) else np.zeros((0, 0))
    b = np.stack([centre(g).ravel() for g in grams_b]) if len(grams_b) else np.zeros((0, 0))
    if a.size and b.size and a.shape[1] != b.shape[1]:
        raise ValueError("Gram matrices of different sizes (not the same images?)")
    cross = a @ b.T
    na, nb = np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", b, b)
    denom = np.sqrt(np.outer(na, nb))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, cross / np.where(denom > 0, denom, 1.0), np.nan)


def _square(k: np.ndarray) -> None:
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"a Gram matrix must be square, got shape {k.shape}")
