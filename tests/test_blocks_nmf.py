"""NMF of the Building Blocks neuron groups: agreement with scikit-learn, determinism."""

import numpy as np
import pytest
import torch

from generator.methods.blocks import neuron_groups, nmf

sklearn_nmf = pytest.importorskip("sklearn.decomposition").NMF


def _sklearn_error(X: torch.Tensor, k: int) -> float:
    Xn = X.double().numpy()
    model = sklearn_nmf(n_components=k, init="nndsvda", solver="cd", max_iter=2000, tol=1e-6, random_state=0)
    W = model.fit_transform(Xn)
    return float(np.linalg.norm(Xn - W @ model.components_) / np.linalg.norm(Xn))


def _lowrank(n, m, r, noise, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, r, generator=g) @ torch.rand(r, m, generator=g) + noise * torch.rand(n, m, generator=g)


def _activation_matrix():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU())
    with torch.no_grad():
        a = net(torch.randn(1, 3, 28, 28))[0]
    return a.reshape(32, -1).T.contiguous()  # 196 positions x 32 channels


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(
    "name,X,k",
    [
        ("lowrank", _lowrank(150, 60, 6, 0.1, 0), 5),
        ("sparse", torch.relu(torch.randn(120, 40, generator=torch.Generator().manual_seed(1))), 6),
        ("activations", _activation_matrix(), 4),
    ],
)
def test_nmf_matches_sklearn(name, X, k):
    ours = nmf(X, k)
    ref = _sklearn_error(X, k)
    # the reported error is the real one
    assert ours.relative_error == pytest.approx(float((X - ours.W @ ours.H).norm() / X.norm()), rel=1e-4)
    assert ours.relative_error <= ref * 1.03 + 1e-6, (name, ours.relative_error, ref)
    assert (ours.W >= 0).all() and (ours.H >= 0).all()


def test_nmf_canonical_and_deterministic():
    X = _lowrank(80, 30, 4, 0.05, 2)
    a, b = nmf(X, 4), nmf(X, 4)
    assert torch.equal(a.W, b.W) and torch.equal(a.H, b.H)
    torch.testing.assert_close(a.H.norm(dim=1), torch.ones(4))
    sizes = a.W.norm(dim=0)
    assert (sizes[:-1] >= sizes[1:]).all()
    r1, r2, r3 = nmf(X, 4, init="random", seed=3), nmf(X, 4, init="random", seed=3), nmf(X, 4, init="random", seed=4)
    assert torch.equal(r1.W, r2.W)
    assert not torch.equal(r1.W, r3.W)
    assert r1.relative_error == pytest.approx(a.relative_error, rel=0.05)


def test_nmf_rejects_negative_and_bad_k():
    with pytest.raises(ValueError, match="non-negative"):
        nmf(torch.randn(10, 5), 2)
    with pytest.raises(ValueError, match="k="):
        nmf(torch.rand(10, 5), 6)


def test_neuron_groups_split_reconstructs_signed_activations():
    g = torch.Generator().manual_seed(5)
    act = torch.randn(12, 6, 7, generator=g)
    groups = neuron_groups(act, 12, mode="auto")
    assert groups.mode == "split"
    assert groups.spatial.shape == (12, 6, 7) and groups.directions.shape == (12, 12)
    # relative error of the signed reconstruction is bounded by that of the split factorisation
    err = float((groups.reconstruction() - act).norm() / act.norm())
    assert err <= groups.relative_error * 1.5 + 1e-6
    clamp = neuron_groups(act, 3, mode="clamp")
    assert clamp.mode == "clamp" and (clamp.directions >= 0).all()
    with pytest.raises(ValueError, match="plain"):
        neuron_groups(act, 3, mode="plain")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nmf_cuda_matches_cpu():
    X = _lowrank(300, 120, 8, 0.1, 6)
    cpu = nmf(X, 6)
    gpu = nmf(X.cuda(), 6)
    assert gpu.W.is_cuda
    assert gpu.relative_error == pytest.approx(cpu.relative_error, rel=1e-3)
    again = nmf(X.cuda(), 6)
    assert torch.equal(gpu.W, again.W)
    eager = nmf(X.cuda(), 6, use_cuda_graph=False)  # the CUDA-graph replay computes the same
    assert eager.n_iter == gpu.n_iter
    torch.testing.assert_close(eager.W, gpu.W, rtol=1e-3, atol=1e-5)
