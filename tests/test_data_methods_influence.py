"""TracIn and last-layer influence functions against naive, loop-by-loop computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from generator.methods.data.influence import last_layer_influence, last_linear_layer, tracin


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn = nn.BatchNorm1d(12)
        self.fc1 = nn.Linear(3 * 2 * 2, 12)
        self.head = nn.Linear(12, 4)

    def forward(self, x):
        x = F.relu(self.conv(x)).flatten(1)
        return self.head(torch.tanh(self.bn(self.fc1(x))))


def _factory():
    torch.manual_seed(0)
    return Tiny().double()


def _checkpoints(k=3):
    cks = []
    for i in range(k):
        torch.manual_seed(100 + i)
        m = Tiny().double()
        with torch.no_grad():
            m.bn.running_mean.normal_()
            m.bn.running_var.uniform_(0.5, 2.0)
        cks.append(({kk: v.clone() for kk, v in m.state_dict().items()}, 0.1 / (i + 1)))
    return cks


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, 4, (n,), generator=g)


def _naive_grad(model, x, y, params):
    loss = F.cross_entropy(model(x[None]), y[None])
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


def _naive_tracin(cks, trx, try_, tex, tey, which):
    S = torch.zeros(len(tex), len(trx), dtype=torch.float64)
    for state, lr in cks:
        m = _factory()
        m.load_state_dict(state)
        m.eval()
        params = [m.head.weight, m.head.bias] if which == "last" else [p for p in m.parameters()]
        gtr = [_naive_grad(m, trx[i], try_[i], params) for i in range(len(trx))]
        gte = [_naive_grad(m, tex[j], tey[j], params) for j in range(len(tex))]
        for j in range(len(tex)):
            for i in range(len(trx)):
                S[j, i] += lr * torch.dot(gte[j], gtr[i])
    return S.numpy()


@pytest.mark.parametrize("which", ["last", "all"])
def test_tracin_equals_naive_sum_of_gradient_dot_products(which):
    cks = _checkpoints()
    trx, try_ = _data(23, 1)
    tex, tey = _data(5, 2)
    res = tracin(_factory, cks, trx, try_, tex, tey, params=which, top_k=4, batch_size=7)
    ref = _naive_tracin(cks, trx, try_, tex, tey, which)
    np.testing.assert_allclose(res.scores, ref, rtol=1e-5, atol=1e-7)
    # helpful = largest scores, harmful = smallest, best first
    for j in range(5):
        assert res.helpful[j].tolist() == np.argsort(-ref[j], kind="stable")[:4].tolist()
        assert res.harmful[j].tolist() == np.argsort(ref[j], kind="stable")[:4].tolist()
        np.testing.assert_allclose(res.helpful_scores[j], np.sort(ref[j])[::-1][:4], rtol=1e-5)
    assert res.layer == ("head" if which == "last" else None)


def test_tracin_checks_its_arguments():
    trx, try_ = _data(4, 1)
    with pytest.raises(ValueError):
        tracin(_factory, [], trx, try_, trx, try_)
    with pytest.raises(ValueError):
        tracin(_factory, _checkpoints(1), trx, try_, trx, try_, params="some")
    with pytest.raises(ValueError):
        tracin(_factory, _checkpoints(1), trx, try_, trx, try_, layer="conv")
    assert last_linear_layer(Tiny()) == "head"


def _flat_last(m):
    return torch.cat([m.head.weight.reshape(-1), m.head.bias.reshape(-1)])


def _loss_with_last(m, theta, x, y):
    """Mean cross-entropy with the head's parameters replaced by ``theta``."""
    C, Fin = m.head.out_features, m.head.in_features
    W, b = theta[: C * Fin].reshape(C, Fin), theta[C * Fin :]
    with torch.no_grad():
        h = torch.tanh(m.bn(m.fc1(F.relu(m.conv(x)).flatten(1))))
    return F.cross_entropy(h @ W.T + b, y)


@pytest.mark.parametrize("damping", [1e-3, 0.1])
def test_last_layer_influence_matches_autograd_hessian(damping):
    m = _factory()
    m.load_state_dict(_checkpoints(1)[0][0])
    m.eval()
    trx, try_ = _data(40, 3)
    tex, tey = _data(6, 4)
    res = last_layer_influence(m, trx, try_, tex, tey, damping=damping, top_k=5, batch_size=9)

    theta = _flat_last(m).detach().clone()
    H = torch.autograd.functional.hessian(lambda t: _loss_with_last(m, t, trx, try_), theta)
    H = H + damping * torch.eye(len(theta), dtype=H.dtype)

    def grad_at(x, y):
        t = theta.clone().requires_grad_(True)
        return torch.autograd.grad(_loss_with_last(m, t, x[None], y[None]), t)[0]

    ref = np.zeros((6, 40))
    for j in range(6):
        v = torch.linalg.solve(H, grad_at(tex[j], tey[j]))
        for i in range(40):
            ref[j, i] = -float(v @ grad_at(trx[i], try_[i]))
    np.testing.assert_allclose(res.scores, ref, rtol=1e-4, atol=1e-6)
    for j in range(6):  # helpful = most negative I_up,loss
        assert res.helpful[j].tolist() == np.argsort(ref[j], kind="stable")[:5].tolist()
        assert res.harmful[j].tolist() == np.argsort(-ref[j], kind="stable")[:5].tolist()
    assert res.extra["n_params"] == 4 * 13 and res.extra["hessian_min_eig"] > 0


def test_last_layer_influence_refuses_inexact_or_huge_cases():
    class Softmaxed(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return torch.log_softmax(self.fc(x), 1) * 2.0

    x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    with pytest.raises(ValueError, match="not the model's output"):
        last_layer_influence(Softmaxed(), x, y, x, y)
    with pytest.raises(ValueError, match="max_params"):
        last_layer_influence(nn.Linear(3, 2), x, y, x, y, max_params=4)
