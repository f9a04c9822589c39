"""RCVs recover a planted linear measure, with R² recomputed independently; measures by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from generator.methods.concepts import measures, textures
from generator.methods.concepts.rcv import fit_rcvs, sensitivities


def test_rcv_recovers_a_planted_measure_and_its_r2():
    n, d = 300, 20
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    w = torch.zeros(d)
    w[3], w[7] = 2.0, -1.0
    y = torch.stack([x @ w + 0.3 * torch.randn(n, generator=g), torch.randn(n, generator=g)], dim=1)
    rcv = fit_rcvs(x, y, l2=1e-4, holdout=0.3, seed=1)
    cosine = float(rcv.directions[0] @ (w / w.norm()))
    assert cosine > 0.99
    # R² recomputed from the stored weights with numpy, on the held-out images
    xt, yt = x[rcv.test].numpy().astype(np.float64), y[rcv.test].numpy().astype(np.float64)
    pred = xt @ rcv.weights.numpy().T.astype(np.float64) + rcv.bias.numpy()
    ref = 1 - ((yt - pred) ** 2).sum(0) / ((yt - yt.mean(0)) ** 2).sum(0)
    assert np.allclose(rcv.r2.numpy(), ref, atol=1e-4)
    assert float(rcv.r2[0]) > 0.9
    assert float(rcv.r2[1]) < 0.1  # pure noise: nothing to predict
    sk = pytest.importorskip("sklearn.metrics")
    assert float(rcv.r2[0]) == pytest.approx(sk.r2_score(yt[:, 0], pred[:, 0]), abs=1e-4)


def test_dual_ridge_equals_the_primal_closed_form():
    # fewer images than features: the dual solve must give the primal ridge solution
    g = torch.Generator().manual_seed(2)
    x = torch.randn(40, 90, generator=g)
    y = x[:, 0] - x[:, 5] + 0.1 * torch.randn(40, generator=g)
    rcv = fit_rcvs(x, y, l2=1e-2, holdout=0.25, seed=0)
    xt = x[rcv.train].numpy().astype(np.float64)
    yt = y[rcv.train].numpy().astype(np.float64)
    xc, yc = xt - xt.mean(0), yt - yt.mean()
    lam = 1e-2 * (xc ** 2).sum() / 90
    w = np.linalg.solve(xc.T @ xc + lam * np.eye(90), xc.T @ yc)
    assert np.allclose(rcv.weights[0].numpy(), w, atol=1e-4)


def test_sensitivity_and_bidirectional_relevance_by_hand():
    grads = torch.tensor([[[1.0, 0.0], [2.0, 1.0], [-1.0, 0.0], [3.0, 0.0]]])  # 1 class, 4 images, D = 2
    dirs = torch.tensor([[1.0, 0.0]])
    sens = sensitivities(grads, dirs, torch.tensor([0.5]))
    values = np.array([1.0, 2.0, -1.0, 3.0])
    assert torch.allclose(sens.values[0, 0], torch.tensor(values, dtype=torch.float32))
    assert float(sens.mean[0, 0]) == pytest.approx(values.mean())
    assert float(sens.std[0, 0]) == pytest.approx(values.std(ddof=1), rel=1e-6)
    assert float(sens.positive[0, 0]) == pytest.approx(0.75)
    assert float(sens.relevance[0, 0]) == pytest.approx(0.5 * values.mean() / values.std(ddof=1), rel=1e-6)


def test_measures_by_hand():
    black = np.zeros((1, 8, 8, 3), np.uint8)
    white = np.full((1, 8, 8, 3), 255, np.uint8)
    half = np.zeros((1, 8, 8, 1), np.uint8)
    half[:, :, 4:] = 255
    red = np.zeros((1, 4, 4, 3), np.uint8)
    red[..., 0] = 255
    assert float(measures.brightness(black)[0]) == 0 and float(measures.brightness(white)[0]) == pytest.approx(1)
    assert float(measures.contrast(half)[0]) == pytest.approx(0.5)
    assert float(measures.colourfulness(white)[0]) == pytest.approx(0)
    # pure red: rg = 1, yb = 0.5, no spread: 0.3 * sqrt(1 + 0.25)
    assert float(measures.colourfulness(red)[0]) == pytest.approx(0.3 * np.sqrt(1.25))
    assert float(measures.texture_energy(white)[0]) == 0
    assert float(measures.texture_energy(half)[0]) > 0
    assert float(measures.area(np.ones((1, 4, 4), bool))[0]) == 1


def test_textures_are_seeded_and_shaped():
    a = textures.draw("stripes", 32, 3, seed=5)
    b = textures.draw("stripes", 32, 3, seed=5)
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, textures.draw("stripes", 32, 3, seed=6))
    for name in textures.CONCEPTS:
        img = textures.draw(name, 28, 2, channels=1)
        assert img.shape == (2, 28, 28, 1)
    # textures vary within the image, colour fields barely
    assert float(measures.contrast(textures.draw("checkerboard", 32, 4)).min()) > 0.1
    assert float(measures.contrast(textures.draw("red", 32, 4)).max()) < 0.1
    crops = textures.random_crops([np.zeros((50, 60, 3), np.uint8)], 16, 5)
    assert crops.shape == (5, 16, 16, 3)
