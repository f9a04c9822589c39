"""Regression concept vectors: directions in a layer along which a continuous measure grows.

Graziani, Andrearczyk and Müller 2018, "Regression Concept Vectors for Bidirectional
Explanations in Histopathology" (iMIMIC, MICCAI workshops). Where TCAV separates a concept
from random images, an RCV is the least-squares direction that *predicts* a continuous measure
of the image (brightness, contrast, colourfulness, texture energy, area of a mask) from the
layer's activations:

* the direction ``v = w / |w|`` of the ridge regression ``y ~ x . w + b`` fitted on a seeded
  part of the images; its **R²** on the held-out rest says how linearly the layer encodes the
  measure (R² <= 0: not at all, the direction is noise);
* the **sensitivity** of class k on image x, the directional derivative of the logit along
  it, ``s_k(x) = grad h_k(f_l(x)) . v`` (positive: more of the measure, more of the class);
* the **bidirectional relevance** ``Br = R² * mean(s) / std(s)`` over the images: large and
  positive when the layer encodes the measure well *and* the class consistently rises with it;
  large and negative when it consistently falls.

All measures are fitted at once (one ridge solve with one right-hand side per measure); when
there are fewer images than features the dual form ``w = X^T (X X^T + lambda I)^-1 y`` is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from generator.methods.concepts.cav import split_indices


@dataclass
class RCVs:
    """M regression concept vectors of dimension D (one per measure)."""

    directions: torch.Tensor  # M x D unit vectors (towards more of the measure)
    weights: torch.Tensor  # M x D ridge weights (raw feature space)
    bias: torch.Tensor  # M
    r2: torch.Tensor  # M held-out R²
    r2_train: torch.Tensor  # M
    train: torch.Tensor  # indices of the fitting images
    test: torch.Tensor  # indices of the held-out images


def r_squared(y: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """Coefficient of determination per column: ``1 - SS_res / SS_tot`` (SS_tot about the
    mean of ``y`` itself); NaN where ``y`` is constant."""
    y, predicted = y.double(), predicted.double()
    ss_res = (y - predicted).pow(2).sum(0)
    ss_tot = (y - y.mean(0)).pow(2).sum(0)
    return torch.where(ss_tot > 0, 1 - ss_res / ss_tot.clamp_min(1e-300), torch.full_like(ss_tot, float("nan")))


def fit_rcvs(x: torch.Tensor, y: torch.Tensor, *, l2: float = 1e-3, holdout: float = 0.3, seed: int = 0) -> RCVs:
    """Fit one RCV per column of ``y`` (``N x M`` measures; ``N`` vector for one) on ``x``
    (``N x D`` activations). ``l2`` is relative: the penalty is ``l2 * trace(X^T X) / D``, so it
    means the same at every layer scale."""
    if y.dim() == 1:
        y = y[:, None]
    x = x.reshape(len(x), -1).double()
    y = y.to(x.device).double()
    gen = torch.Generator().manual_seed(int(seed))
    train, test = split_indices(1, len(x), holdout, gen, x.device)
    train, test = train[0], test[0]
    xt, yt = x[train], y[train]
    mx, my = xt.mean(0), yt.mean(0)
    xc, yc = xt - mx, yt - my
    n, d = xc.shape
    lam = l2 * float(xc.pow(2).sum()) / d + 1e-12
    if n < d:
        gram = xc @ xc.T
        alpha = torch.linalg.solve(gram + lam * torch.eye(n, dtype=x.dtype, device=x.device), yc)
        weights = (xc.T @ alpha).T
    else:
        cov = xc.T @ xc
        weights = torch.linalg.solve(cov + lam * torch.eye(d, dtype=x.dtype, device=x.device), xc.T @ yc).T
    bias = my - weights @ mx
    predict = x @ weights.T + bias
    r2 = r_squared(y[test], predict[test]) if len(test) >= 2 else torch.full((y.shape[1],), float("nan"))
    norm = weights.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return RCVs(directions=(weights / norm).float(), weights=weights.float(), bias=bias.float(), r2=r2.float(),
                r2_train=r_squared(yt, predict[train]).float(), train=train, test=test)


@dataclass
class Sensitivity:
    """Sensitivities of K classes to M measures over N images."""

    values: torch.Tensor  # K x M x N directional derivatives
    mean: torch.Tensor  # K x M
    std: torch.Tensor  # K x M
    positive: torch.Tensor  # K x M fraction of images with a positive derivative
    relevance: torch.Tensor  # K x M bidirectional relevance R² * mean / std (NaN where std is 0)


def sensitivities(gradients: torch.Tensor, directions: torch.Tensor, r2: torch.Tensor,
                  mask: Optional[torch.Tensor] = None) -> Sensitivity:
    """Directional derivatives of each class logit along each RCV (``gradients``: ``K x N x D``,
    ``directions``: ``M x D``), their mean and spread over the images of each class
    (``mask``: ``K x N``, default all) and the bidirectional relevance."""
    values = torch.einsum("knd,md->kmn", gradients.float(), directions.float().to(gradients.device))
    m = (torch.ones(values.shape[0], values.shape[2], device=values.device) if mask is None
         else mask.to(values.device).float())
    count = m.sum(1)[:, None].clamp_min(1)
    w = m[:, None, :]
    mean = (values * w).sum(2) / count
    var = ((values - mean[:, :, None]).pow(2) * w).sum(2) / (count - 1).clamp_min(1)
    std = var.sqrt()
    positive = ((values > 0).float() * w).sum(2) / count
    relevance = torch.where(std > 0, r2.to(values.device)[None, :] * mean / std.clamp_min(1e-30),
                            torch.full_like(mean, float("nan")))
    return Sensitivity(values=values, mean=mean, std=std, positive=positive, relevance=relevance)
