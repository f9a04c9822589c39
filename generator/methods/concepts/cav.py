"""Concept activation vectors, many fitted at once on the GPU (or CPU) in torch.

Kim et al. 2018, "Interpretability Beyond Feature Attribution: Quantitative Testing with
Concept Activation Vectors (TCAV)", ICML: a concept's CAV at a layer is the normal of a linear
classifier separating the layer's activations of the concept's images from those of random
counterexamples, pointing towards the concept.

Two fits:

* ``logistic``: L2-regularised logistic regression by full-batch L-BFGS. The R runs of a
  concept (one per random counterexample set) are R independent problems; their losses are
  summed and minimised together. The sum is separable and each problem strictly convex, so
  the joint minimiser is each problem's own minimiser; the batch only shares the line search.
  Features are centred and scaled by one number per run (their RMS), which leaves the
  direction unchanged and makes the L2 strength mean the same at every layer.
* ``mean_difference``: the difference of the two classes' means (the fast variant; for two
  classes with a shared isotropic covariance it is the same direction), classified at the
  midpoint of the projected means.

Every run holds out a seeded fraction of each class; the held-out accuracy says whether the
layer separates the concept at all (near 0.5: the CAV is noise, and so is its TCAV score).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Tuple

import torch

Fit = Literal["logistic", "mean_difference"]


@dataclass
class CAVs:
    """R fitted CAVs of dimension D."""

    directions: torch.Tensor  # R x D unit vectors, towards the positive (concept) class
    bias: torch.Tensor  # R: decision value = x . weight + bias (raw feature space)
    weights: torch.Tensor  # R x D unnormalised normal of the boundary
    accuracy: torch.Tensor  # R held-out accuracy (positives and negatives, each correct / all held out)
    train_accuracy: torch.Tensor  # R


def split_indices(runs: int, n: int, holdout: float, generator: torch.Generator,
                  device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per run, a random (train, test) split of ``n`` items: ``R x n_train`` and ``R x n_test``.
    At least one item on each side when n >= 2."""
    n_test = min(n - 1, max(1, int(round(holdout * n)))) if holdout > 0 and n >= 2 else 0
    order = torch.argsort(torch.rand(runs, n, generator=generator), dim=1).to(device)
    return order[:, n_test:], order[:, :n_test]


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, index[:, :, None].expand(-1, -1, x.shape[2]))


def fit_cavs(positive: torch.Tensor, negative: torch.Tensor, *, fit: Fit = "logistic", l2: float = 0.01,
             holdout: float = 0.3, seed: int = 0, max_iter: int = 200) -> CAVs:
    """Fit R CAVs at once: ``positive`` is ``R x P x D`` (or ``P x D``, shared by every run),
    ``negative`` ``R x N x D`` (run r's own counterexamples).

    ``l2``: the penalty ``l2 / 2 * |w|^2`` added to the mean logistic loss, in the scaled
    feature space. ``holdout``: fraction of each class held out for the accuracy.
    """
    if negative.dim() == 2:
        negative = negative[None]
    runs = negative.shape[0]
    if positive.dim() == 2:
        positive = positive[None].expand(runs, -1, -1)
    if positive.shape[0] != runs or positive.shape[2] != negative.shape[2]:
        raise ValueError(f"positive {tuple(positive.shape)} and negative {tuple(negative.shape)} do not match")
    device = negative.device
    positive, negative = positive.float(), negative.float()
    gen = torch.Generator().manual_seed(int(seed))
    p_train, p_test = split_indices(runs, positive.shape[1], holdout, gen, device)
    n_train, n_test = split_indices(runs, negative.shape[1], holdout, gen, device)
    xp, xn = _gather(positive, p_train), _gather(negative, n_train)
    x = torch.cat([xp, xn], dim=1)  # R x n x D
    y = torch.cat([torch.ones(xp.shape[:2], device=device), torch.zeros(xn.shape[:2], device=device)], dim=1)

    if fit == "mean_difference":
        mp, mn = xp.mean(1), xn.mean(1)
        weights = mp - mn
        bias = -(weights * (mp + mn) / 2).sum(1)
    elif fit == "logistic":
        weights, bias = _logistic(x, y, l2, max_iter)
    else:
        raise ValueError(f"unknown CAV fit {fit!r} (logistic or mean_difference)")

    def accuracy(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        if pos.shape[1] + neg.shape[1] == 0:
            return torch.full((runs,), float("nan"), device=device)
        sp = torch.einsum("rnd,rd->rn", pos, weights) + bias[:, None]
        sn = torch.einsum("rnd,rd->rn", neg, weights) + bias[:, None]
        return ((sp > 0).sum(1) + (sn <= 0).sum(1)).float() / (pos.shape[1] + neg.shape[1])

    norm = weights.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return CAVs(directions=weights / norm, bias=bias, weights=weights,
                accuracy=accuracy(_gather(positive, p_test), _gather(negative, n_test)),
                train_accuracy=accuracy(xp, xn))


def _logistic(x: torch.Tensor, y: torch.Tensor, l2: float, max_iter: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Batched L2 logistic regression; returns (weights R x D, bias R) in the raw feature space."""
    runs, n, d = x.shape
    mean = x.mean(1, keepdim=True)
    # one scale per run: the RMS of the centred features, so the penalty means the same at every layer
    scale = (x - mean).pow(2).mean((1, 2)).sqrt().clamp_min(1e-12)
    z = (x - mean) / scale[:, None, None]
    w = torch.zeros(runs, d, device=x.device, requires_grad=True)
    b = torch.zeros(runs, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-7,
                            tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = torch.einsum("rnd,rd->rn", z, w) + b[:, None]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(1)
        loss = (loss + 0.5 * l2 * w.pow(2).sum(1)).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    weights = w.detach() / scale[:, None]
    bias = b.detach() - (weights * mean[:, 0]).sum(1)
    return weights, bias
