"""CAVs recover planted directions; TCAV of a random concept is not significant; the batched
scores equal a slow per-image computation; hooks are removed and the model is unchanged."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from generator.methods.concepts.activations import layer_activations, logit_gradients
from generator.methods.concepts.cav import fit_cavs
from generator.methods.concepts.tcav import RANDOM, outlier_test, run_tcav, slow_tcav_score, tcav_scores


def _planted(seed: int, runs: int = 6, d: int = 20, n: int = 200, shift: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(d, generator=g)
    direction /= direction.norm()
    negative = torch.randn(runs, n, d, generator=g)
    positive = torch.randn(n, d, generator=g) + shift * direction
    return direction, positive, negative


@pytest.mark.parametrize("fit", ["logistic", "mean_difference"])
def test_cav_recovers_a_planted_direction(fit):
    direction, positive, negative = _planted(0)
    cavs = fit_cavs(positive, negative, fit=fit, l2=0.01, seed=1)
    cosine = cavs.directions @ direction
    assert cavs.directions.shape == (6, 20)
    assert torch.allclose(cavs.directions.norm(dim=1), torch.ones(6), atol=1e-5)
    assert float(cosine.min()) > 0.9  # towards the concept, close to the planted direction
    assert float(cavs.accuracy.mean()) > 0.88  # Bayes accuracy: Phi(1.5) = 0.93


def test_logistic_cav_is_the_minimiser_of_its_loss():
    # the batched L-BFGS fit equals a one-problem fit: each run is its own problem
    direction, positive, negative = _planted(3, runs=3, d=10, n=30)
    batch = fit_cavs(positive, negative, l2=0.05, holdout=0.0, seed=0)
    for r in range(3):
        single = fit_cavs(positive, negative[r:r + 1], l2=0.05, holdout=0.0, seed=0)
        assert torch.allclose(single.directions[0], batch.directions[r], atol=1e-3)


def test_batched_scores_equal_a_slow_per_image_computation():
    g = torch.Generator().manual_seed(0)
    grads = torch.randn(3, 17, 12, generator=g)
    dirs = torch.randn(5, 12, generator=g)
    mask = torch.rand(3, 17, generator=g) > 0.4
    fast = tcav_scores(grads, dirs, mask)
    for k in range(3):
        for r in range(5):
            chosen = [grads[k, i] for i in range(17) if mask[k, i]]
            assert float(fast[k, r]) == pytest.approx(slow_tcav_score(chosen, dirs[r]))


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1)
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        y = self.conv2(self.relu(self.bn(self.conv(x))))
        return self.head(y.mean((2, 3)))


def test_layer_gradients_equal_per_image_autograd_and_the_model_is_unchanged():
    torch.manual_seed(0)
    model = _Tiny()
    model.train()  # flags must come back as they were
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(7, 3, 8, 8)
    grads = logit_gradients(model, ["relu", "conv2"], x, [0, 3], batch=3)
    acts = layer_activations(model, ["relu"], x, batch=4)
    assert grads["relu"].shape == (2, 7, 6 * 8 * 8)
    assert model.training and all(m.training for m in model.modules())
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())
    for k, v in before.items():
        assert torch.equal(v, model.state_dict()[k]), k
    # slow reference: one image at a time, the activation as an explicit input to the rest
    model.eval()
    for i in range(7):
        with torch.no_grad():
            h = model.relu(model.bn(model.conv(x[i:i + 1])))
        assert torch.allclose(acts["relu"][i], h[0], atol=1e-6)
        for k, c in enumerate([0, 3]):
            h1 = h.clone().requires_grad_(True)
            logit = model.head(model.conv2(h1).mean((2, 3)))[0, c]
            (g,) = torch.autograd.grad(logit, h1)
            assert torch.allclose(grads["relu"][k, i], g.reshape(-1), atol=1e-5)


def test_tcav_of_a_planted_concept_is_significant_and_of_a_random_one_is_not():
    g = torch.Generator().manual_seed(0)
    d, sets, n = 16, 11, 200
    direction = torch.zeros(d)
    direction[0] = 1.0
    randoms = torch.randn(sets, n, d, generator=g)
    concept = torch.randn(n, d, generator=g) + 2.0 * direction
    fake = torch.randn(n, d, generator=g)  # a "concept" of random images: same distribution as the randoms
    # class 0's logit rises along the planted direction for 90 % of its images; class 1 is noise
    grads = torch.randn(2, 50, d, generator=g) * 0.3
    grads[0, :45, 0] += 1.0
    grads[0, 45:, 0] -= 1.0
    result = run_tcav({"planted": {"L": concept}, "fake": {"L": fake}}, {"L": randoms}, {"L": grads}, seed=0)
    planted = result.layers["L"]["planted"]
    assert planted.classes[0].mean == pytest.approx(0.9, abs=0.06)
    assert planted.classes[0].significant
    fake_row = result.layers["L"]["fake"]
    assert not fake_row.classes[0].significant and not fake_row.classes[1].significant
    assert result.tests == 4 and RANDOM in result.layers["L"]
    assert len(planted.classes[0].scores) == sets and len(planted.classes[0].random_means) == sets
    assert sum(planted.accuracy) / sets > 0.78  # Bayes accuracy for a shift of 2: Phi(1) = 0.84


def test_random_concepts_are_rarely_significant():
    # the false-positive rate of the uncorrected test stays near its nominal 5 %
    hits = 0
    for seed in range(24):
        g = torch.Generator().manual_seed(100 + seed)
        randoms = torch.randn(9, 30, 12, generator=g)
        fake = torch.randn(30, 12, generator=g)
        grads = torch.randn(1, 40, 12, generator=g)
        result = run_tcav({"fake": {"L": fake}}, {"L": randoms}, {"L": grads}, fit="mean_difference",
                          seed=seed, correction="none")
        hits += result.layers["L"]["fake"].classes[0].significant
    assert hits <= 4  # 24 tests at 5 %: P(more than 4 | rate 0.05) < 0.01


def test_outlier_test_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    sample = [0.41, 0.52, 0.47, 0.39, 0.58, 0.45]
    t, p = outlier_test(0.71, sample)
    import math

    import numpy as np

    sd = float(np.std(sample, ddof=1))
    t_ref = (0.71 - float(np.mean(sample))) / (sd * math.sqrt(1 + 1 / 6))
    assert t == pytest.approx(t_ref)
    assert p == pytest.approx(float(2 * stats.t.sf(abs(t_ref), 5)), rel=1e-9)
