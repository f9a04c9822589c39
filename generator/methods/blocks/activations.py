"""Activations of one layer for one image: semantic dictionary and activation grid.

Olah et al. 2018, "The Building Blocks of Interpretability" (Distill): a *semantic
dictionary* lists, for each spatial position of a layer, the channels that fire most there;
an *activation grid* shows one feature visualisation per position, of the direction given by
that position's activation vector, sized or faded by its magnitude.

A vision transformer's token layer ((N, C) per image) is read on its patch grid: positions are
patch tokens, and the special tokens in front (class, distillation, registers) are kept apart
(``LayerActivations.prefix``): they are not places in the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from generator.engine.hooks import capture_activations, run_until_stopped
from generator.engine.layers import get_layer
from generator.methods.featurevis.spatial import SpatialView

from ._grad import as_batch, check_eval, full_fp32, model_device


@dataclass
class LayerActivations:
    """``act``: (C, H, W) activation of ``layer``; ``logits``: (num_classes,) or None when the
    forward pass was cut short after the layer. For a token layer, ``act`` covers the patch
    tokens; ``prefix`` (P, C) holds the special tokens named in ``prefix_names`` (P = 0 for a CNN)
    and ``tokens`` says how the layer was read ('' for a CNN)."""

    layer: str
    act: torch.Tensor
    logits: Optional[torch.Tensor] = None
    prefix: Optional[torch.Tensor] = None
    prefix_names: Tuple[str, ...] = ()
    tokens: str = ""

    @property
    def grid_shape(self):
        return tuple(self.act.shape[1:])

    def matrix(self) -> torch.Tensor:
        """The (positions x channels) matrix, positions in row-major order (row * W + col)."""
        c = self.act.shape[0]
        return self.act.reshape(c, -1).T


def layer_activations(model: nn.Module, x: torch.Tensor, layer: str, *, with_logits: bool = True,
                      layout=None) -> LayerActivations:
    """Activation of ``layer`` for one image ((C,H,W) or (1,C,H,W), preprocessed).

    Spatial layers give (C, H, W); a vector layer (C,) is treated as a 1 x 1 grid; a token layer
    (N, C) gives (C, h, w) over the patch grid (``layout``: the model's
    :class:`~generator.models.tokens.TokenLayout`, inferred when None). With ``with_logits=False``
    the forward pass stops after the layer.
    """
    check_eval(model)
    x = as_batch(x, model_device(model))
    module = get_layer(model, layer)
    logits = None
    with full_fp32(), torch.no_grad(), capture_activations(
        model, {layer: module}, stop_after=() if with_logits else (layer,)
    ) as store:
        if with_logits:
            logits = model(x)[0].float()
        else:
            run_until_stopped(model, x)
    view = SpatialView(model, layout, tuple(x.shape[1:]))
    raw = store[layer][:1]
    hw = x.shape[-2:]
    prefix = view.prefix_part(raw, hw)[0].float()
    names, tokens = view.prefix_names(raw, hw), view.describe(raw, hw)
    act = view(raw, hw)[0].float()
    if act.dim() == 1:
        act = act[:, None, None]
    if act.dim() != 3:
        raise ValueError(f"layer {layer!r} gives activations of shape {tuple(act.shape)}; expected (C, H, W) or (C,)")
    return LayerActivations(layer=layer, act=act, logits=logits, prefix=prefix, prefix_names=names, tokens=tokens)


@dataclass
class SemanticDictionary:
    """For each position (row-major), the top channels and their activations, sorted descending.

    ``channels``: (H, W, n) long; ``values``: (H, W, n) float.
    """

    channels: torch.Tensor
    values: torch.Tensor


def semantic_dictionary(act: torch.Tensor, n: int = 6, *, by: str = "value") -> SemanticDictionary:
    """Top ``n`` channels per position of a (C, H, W) activation.

    ``by="value"`` ranks by activation (the channels that fire most; for signed layers a strongly
    negative channel is not "firing"); ``by="abs"`` ranks by magnitude. Values are reported
    signed either way. Ties are broken towards the lower channel index, so the order is stable.
    """
    if by not in ("value", "abs"):
        raise ValueError(f"by must be 'value' or 'abs', got {by!r}")
    c = act.shape[0]
    n = min(n, c)
    flat = act.permute(1, 2, 0)  # H, W, C
    key = flat.abs() if by == "abs" else flat
    # A stable sort (rather than topk) gives a reproducible order among equal values.
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices[..., :n]
    return SemanticDictionary(channels=order, values=torch.gather(flat, -1, order))


@dataclass
class ActivationGrid:
    """Per position: the activation vector (``directions``: H x W x C, the direction objective
    of that cell's icon) and its L2 ``magnitude`` (H x W); ``relative``: magnitude / max, in
    [0, 1], for sizing or fading cells."""

    directions: torch.Tensor
    magnitude: torch.Tensor
    relative: torch.Tensor

    @property
    def grid_shape(self):
        return tuple(self.magnitude.shape)


def activation_grid(act: torch.Tensor) -> ActivationGrid:
    directions = act.permute(1, 2, 0).contiguous()
    magnitude = directions.norm(dim=-1)
    top = magnitude.max()
    relative = magnitude / top if top > 0 else torch.zeros_like(magnitude)
    return ActivationGrid(directions=directions, magnitude=magnitude, relative=relative)
