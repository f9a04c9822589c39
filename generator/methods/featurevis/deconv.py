"""Deconvnet projections: a unit's strongest activation mapped back to pixel space.

Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks": pick one
activation (a channel at its arg-max position on an image), set every other activation of
the layer to zero and run the network backwards with transposed convolutions, passing the
signal through every ReLU rectified (``max(0, signal)``) instead of masked by the forward
pass. In autograd terms this is the gradient of that single activation with respect to the
input, with each ReLU/ReLU6 replaced by :class:`~generator.engine.rules.DeconvnetRule`;
max-pooling keeps its ordinary backward, which routes the signal through the recorded
"switches" exactly as the paper's unpooling does.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from generator.capability import Unsupported
from generator.engine.activations import RELU_KINDS, RectifiedGradient, activation_rules, find_nonlinearities, rules_for
from generator.engine.batching import run_chunked
from generator.engine.hooks import capture_activations, refuse_script, run_until_stopped
from generator.engine.layers import get_layer

from .render import frozen_model, model_device
from .spatial import SpatialView


def deconv_projection(
    model: nn.Module,
    layer: str,
    inputs: torch.Tensor,
    channels: Sequence[int],
    positions: Sequence[Sequence[int]],
    *,
    max_batch: int = 32,
    layout=None,
) -> np.ndarray:
    """Project ``channels[i]``'s activation at ``positions[i]`` (y, x) on ``inputs[i]`` back to
    the input; returns (N, H, W, C) float32, signed (the model input's space).

    ``inputs`` are model inputs (normalised), one per projection, in chunks of ``max_batch``
    (halved on CUDA out-of-memory): images in eval mode are independent, so the sum of the
    selected activations has per-image gradients equal to each activation's own. The forward
    pass stops at ``layer``. Chunks bound the memory: a whole layer's units at 224 px in one
    batch kept tens of GB of autograd graph alive (every channel of EfficientNet-Lite0's
    ``blocks.6`` is 320 projections).

    A token layer (vision transformer) is read on its patch grid: ``positions`` are patch rows
    and columns. ``layout``: the model's token layout (inferred when a token output appears and
    none is given).

    Every ReLU below the layer gets the rule, as a module or as a function call. The projection
    is defined for a ReLU network only: when the part of the network below ``layer`` applies any
    other activation (a transformer's GELU, SiLU, gates) it would be the plain gradient there,
    so :class:`~generator.capability.Unsupported` is raised with the reason, as for TorchScript.
    """
    dev = model_device(model)
    n = inputs.shape[0]
    if not (len(channels) == len(positions) == n):
        raise ValueError(f"need one channel and position per input: {len(channels)}, {len(positions)}, {n}")
    ch = torch.as_tensor([int(c) for c in channels], device=dev)
    ys = torch.as_tensor([int(p[0]) for p in positions], device=dev)
    xs = torch.as_tensor([int(p[1]) for p in positions], device=dev)
    out = np.empty((n, inputs.shape[2], inputs.shape[3], inputs.shape[1]), np.float32)
    refuse_script(model, "deconvnet projections")
    below = find_nonlinearities(model, inputs[:1].to(dev, torch.float32), stop_at=get_layer(model, layer))
    reason = _relu_only(below, layer)
    if reason:
        raise Unsupported(reason)
    view = SpatialView(model, layout, tuple(inputs.shape[1:]))
    rules = rules_for(RELU_KINDS, RectifiedGradient())
    with frozen_model(model), \
            capture_activations(model, {layer: get_layer(model, layer)}, keep_graph=True, stop_after=[layer]) as store:

        def chunk(a: int, b: int) -> None:
            x = inputs[a:b].to(dev, torch.float32).clone().requires_grad_(True)
            store.clear()
            with activation_rules(rules):
                run_until_stopped(model, x)
            act = view(store.pop(layer), x.shape[-2:])
            if act.dim() == 2:
                act = act[:, :, None, None]
            selected = act[torch.arange(b - a, device=dev), ch[a:b], ys[a:b], xs[a:b]]
            (grad,) = torch.autograd.grad(selected.sum(), x)
            out[a:b] = grad.permute(0, 2, 3, 1).detach().float().cpu().numpy()

        run_chunked(n, max_batch, chunk)
    return out


def _relu_only(found, layer: str) -> "str | None":
    """Why the deconvnet rule is undefined below ``layer``, or None (see :func:`deconv_projection`)."""
    acts = found.activation_kinds()
    other = [k for k in acts if k not in RELU_KINDS]
    if other:
        return (f"a deconvnet projection rectifies the backward signal at every ReLU; below {layer!r} this network "
                f"also applies {found.describe(other)}, where the rule is undefined (the projection would be the "
                f"plain gradient there)")
    if not acts:
        return (f"a deconvnet projection rectifies the backward signal at ReLUs; below {layer!r} this network applies "
                f"none, so it would be the plain gradient")
    return None


def projection_image(projection: np.ndarray) -> np.ndarray:
    """(H, W, C) signed projection -> (H, W, C) uint8 for display: grey is zero, each image
    scaled by its own largest absolute value (as the paper's figures, which show each
    projection contrast-normalised)."""
    peak = float(np.abs(projection).max()) or 1.0
    return np.clip(127.5 + 127.5 * projection / peak, 0, 255).round().astype(np.uint8)
