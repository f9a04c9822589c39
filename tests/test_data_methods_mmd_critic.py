"""MMD-critic: the fast greedy equals a slow, literal reference, and behaves as the paper says
on a toy mixture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from generator.methods.data.mmd_critic import (
    KernelSpec,
    kernel_matrix,
    median_heuristic_bandwidth,
    mmd_critic,
    mmd_critic_per_class,
)


# ---------------------------------------------------------------------------------------
# Slow reference: full kernel matrix, objective recomputed from scratch for every candidate.
# ---------------------------------------------------------------------------------------
def _ref_kernel(X: np.ndarray, spec: KernelSpec) -> np.ndarray:
    if spec.name == "linear":
        return X @ X.T
    d2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * spec.sigma**2))


def _ref_mmd2(K: np.ndarray, S: list) -> float:
    n, m = K.shape[0], len(S)
    return K.sum() / n**2 - 2.0 * K[:, S].sum() / (n * m) + K[np.ix_(S, S)].sum() / m**2


def _ref_mmd_critic(X: np.ndarray, spec: KernelSpec, m: int, c: int, reg: str = "logdet"):
    K = _ref_kernel(X, spec)
    n = len(X)
    protos: list = []
    for _ in range(m):
        best, arg = np.inf, -1
        for cand in range(n):
            if cand in protos:
                continue
            v = _ref_mmd2(K, protos + [cand])
            if v < best:  # strict: the lowest index wins ties
                best, arg = v, cand
        protos.append(arg)
    witness = K.mean(1) - K[:, protos].mean(1)

    def objective(C):
        val = np.abs(witness[C]).sum()
        if reg == "logdet" and C:
            sign, logdet = np.linalg.slogdet(K[np.ix_(C, C)])
            val += logdet
        return val

    crits: list = []
    for _ in range(c):
        best, arg = -np.inf, -1
        for cand in range(n):
            if cand in protos or cand in crits:
                continue
            v = objective(crits + [cand])
            if v > best:
                best, arg = v, cand
        crits.append(arg)
    return protos, crits, witness, [_ref_mmd2(K, protos[: i + 1]) for i in range(m)]


@pytest.mark.parametrize("kernel", ["rbf", "linear"])
@pytest.mark.parametrize("reg", ["logdet", "none"])
def test_matches_slow_reference_exactly(kernel, reg):
    rng = np.random.default_rng(3)
    # 6 dimensions: the linear kernel's K_CC stays full rank for 5 criticisms
    X = np.concatenate([rng.normal(0, 1, (40, 6)), rng.normal(3, 0.5, (25, 6))])
    sigma = median_heuristic_bandwidth(X) if kernel == "rbf" else None
    spec = KernelSpec(kernel, sigma)
    p_ref, c_ref, w_ref, mmd_ref = _ref_mmd_critic(X, spec, 6, 5, reg)
    # small chunks exercise the chunked kernel row sums
    res = mmd_critic(X, 6, 5, kernel=kernel, sigma=sigma, regularizer=reg, dtype=torch.float64, chunk_elems=7 * 65)
    assert res.prototypes.tolist() == p_ref
    assert res.criticisms.tolist() == c_ref
    np.testing.assert_allclose(res.witness, w_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.criticism_witness, w_ref[c_ref], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.prototype_witness, w_ref[p_ref], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.mmd2, mmd_ref, rtol=1e-9, atol=1e-12)


def test_float32_default_agrees_with_float64():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    a = mmd_critic(X, 8, 4)
    b = mmd_critic(X.astype(np.float64), 8, 4, dtype=torch.float64)
    assert a.prototypes.tolist() == b.prototypes.tolist()
    assert a.criticisms.tolist() == b.criticisms.tolist()


def test_median_heuristic_is_median_pairwise_distance():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(31, 4))
    d = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))[np.triu_indices(31, 1)]
    # lower median of the 465 distances (an odd count: the exact median)
    assert median_heuristic_bandwidth(X) == pytest.approx(np.sort(d)[(len(d) - 1) // 2], rel=1e-9)
    K = kernel_matrix(X, X, KernelSpec("rbf", 2.0)).numpy()
    np.testing.assert_allclose(K, _ref_kernel(X, KernelSpec("rbf", 2.0)), atol=1e-12)


def _toy_mixture(seed=0, n_rare=30):
    """Two big modes (300 points each) and a small cluster (5%) far from both."""
    rng = np.random.default_rng(seed)
    a = rng.normal([-4.0, 0.0], 0.5, (300, 2))
    b = rng.normal([4.0, 0.0], 0.5, (300, 2))
    rare = rng.normal([0.0, 6.0], 0.4, (n_rare, 2))
    return np.concatenate([a, b, rare]), {"a": (-4.0, 0.0), "b": (4.0, 0.0), "rare": (0.0, 6.0)}


@pytest.mark.parametrize("sigma", [1.0, 2.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_toy_mixture_prototypes_in_modes_criticisms_in_rare_region(sigma, seed):
    X, centres = _toy_mixture(seed)
    res = mmd_critic(X, 2, 3, sigma=sigma)

    def dist(p, name):
        return float(np.linalg.norm(p - np.array(centres[name])))

    P = X[res.prototypes]
    # one prototype at the centre of each big mode
    assert sorted(min(("a", "b"), key=lambda m: dist(p, m)) for p in P) == ["a", "b"]
    assert all(min(dist(p, "a"), dist(p, "b")) < 0.5 for p in P)
    # the rare cluster has no prototype: the data are under-represented there, so the witness
    # peaks there and the criticism with positive witness lands there. (The other criticisms
    # have negative witness: next to a prototype, which over-represents its neighbourhood.)
    assert dist(X[int(np.argmax(res.witness))], "rare") < 1.5
    C = X[res.criticisms]
    in_rare = np.array([dist(c, "rare") < 1.5 for c in C])
    assert in_rare.sum() == 1
    assert (res.criticism_witness[in_rare] > 0).all()
    assert (res.criticism_witness[~in_rare] < 0).all()
    # MMD^2 falls as prototypes are added
    assert np.all(np.diff(res.mmd2) < 0)


def test_logdet_regulariser_spreads_criticisms():
    """Without the regulariser, criticisms cluster; with it they are more spread out."""
    X, _ = _toy_mixture(1)
    plain = mmd_critic(X, 2, 6, sigma=1.0, regularizer="none", dtype=torch.float64)
    reg = mmd_critic(X, 2, 6, sigma=1.0, regularizer="logdet", dtype=torch.float64)

    def min_pair(idx):
        Y = X[idx]
        d = np.sqrt(((Y[:, None] - Y[None]) ** 2).sum(-1))
        return d[np.triu_indices(len(Y), 1)].min()

    assert min_pair(reg.criticisms) >= min_pair(plain.criticisms)
    # "none" is simply the largest |witness| among non-prototypes
    w = np.abs(plain.witness)
    w[plain.prototypes] = -1
    assert plain.criticisms.tolist() == np.argsort(-w, kind="stable")[:6].tolist()


def test_per_class_indices_refer_to_whole_dataset():
    X, _ = _toy_mixture()
    y = np.array([0] * 300 + [1] * 300 + [1] * 30)
    out = mmd_critic_per_class(X, y, 2, 2, sigma=1.0)
    assert set(out) == {0, 1, "all"}
    assert (y[out[0].prototypes] == 0).all() and (y[out[0].criticisms] == 0).all()
    assert (y[out[1].prototypes] == 1).all() and (y[out[1].criticisms] == 1).all()
    # class 1 holds the rare cluster: a criticism goes there, and no prototype
    assert (X[out[1].criticisms][:, 1] > 3).any()
    assert (X[out[1].prototypes][:, 1] < 3).all()
    # same result as running on the class subset directly
    rows = np.flatnonzero(y == 1)
    direct = mmd_critic(X[rows], 2, 2, sigma=1.0)
    assert rows[direct.prototypes].tolist() == out[1].prototypes.tolist()
    assert out[0].kernel.sigma == out[1].kernel.sigma == out["all"].kernel.sigma == 1.0
    # the median heuristic, shared by default, is the whole data set's
    shared = mmd_critic_per_class(X, y, 1, 1)
    assert shared[0].kernel.sigma == shared["all"].kernel.sigma == median_heuristic_bandwidth(X.astype(np.float32))


def test_edge_cases():
    X = np.random.default_rng(0).normal(size=(5, 2))
    res = mmd_critic(X, 10, 10)
    assert len(res.prototypes) == 5 and len(res.criticisms) == 0
    res = mmd_critic(X, 0, 3)
    assert len(res.prototypes) == 0 and len(res.criticisms) == 3
    with pytest.raises(ValueError):
        mmd_critic(X, 1, 1, kernel="poly")
