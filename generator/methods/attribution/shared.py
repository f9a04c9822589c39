"""Run several methods on one batch, sharing the passes they have in common."""

from __future__ import annotations

from typing import Dict, Sequence

import torch

from ...engine.batching import as_target_tensor
from .base import AttributionMethod, AttributionResult


def attribute_many(methods: Sequence[AttributionMethod], x: torch.Tensor, target) -> Dict[str, AttributionResult]:
    """Results by method name. Methods that only need the plain input gradient (saliency,
    gradient x input) share one backward pass; the SmoothGrad family (SmoothGrad, its squared
    form, VarGrad) with the same samples, noise level and seed share the noisy gradients; Grad-CAM
    variants on the same layer share one pass to that layer; everything else runs on its own."""
    out: Dict[str, AttributionResult] = {}
    t = as_target_tensor(target, x.shape[0], x.device)
    groups: Dict[tuple, list] = {}
    for m in methods:
        shares = getattr(m, "shares", None)
        if shares == "gradient":
            key = ("gradient", id(m.model), m.precision)
        elif shares == "noise":
            key = ("noise", id(m.model), m.precision, m.noise_key())
        elif shares == "cam" and getattr(m, "from_layer", None) is not None:
            key = ("cam", id(m.model), m.precision, m.layer)
        else:
            key = ("own", id(m))
        groups.setdefault(key, []).append(m)
    for key, members in groups.items():
        lead = members[0]
        if key[0] == "own" or len(members) == 1:
            for m in members:
                out[m.name] = m.attribute(x, t)
            continue
        with lead._session():
            if key[0] == "gradient":
                from .gradient import _gradients

                grads, logits = _gradients(lead, x.detach(), t)
                for m in members:
                    out[m.name] = m.from_gradient(x.detach(), t, grads, logits)
            elif key[0] == "noise":
                squares = any(m.needs_squares for m in members)
                total, total_sq = lead.noise_statistics(x.detach(), t, squares=squares)
                for m in members:
                    out[m.name] = m.from_statistics(x.detach(), t, total, total_sq)
            else:
                from .cam import layer_activation_and_gradient

                A, G = layer_activation_and_gradient(lead, lead.layer, x.detach(), t)
                for m in members:
                    out[m.name] = m.from_layer(x.detach(), t, A, G)
    return out
