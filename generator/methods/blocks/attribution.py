"""Spatial, channel and layer-to-layer attribution by activation x gradient.

Olah et al. 2018, "The Building Blocks of Interpretability": the attribution of a hidden
activation ``a`` to an output ``f`` is the linear approximation ``a * df/da``. Summed over all
positions and channels it is the first-order Taylor estimate of ``f(a) - f(0)``, and exactly
that difference when ``f`` is affine in ``a`` (a layer followed only by pooling and a linear
classifier, say). Summing over channels gives *spatial* attribution (a map per class), summing
over positions gives *channel* attribution (a bar per channel).

Vision transformers. A token layer's positions are its patch tokens (the layer is read on the
patch grid, :mod:`generator.methods.featurevis.spatial`); the special tokens in front (class,
distillation, registers) are not places in the image, so their activation x gradient is kept
apart as ``prefix`` (per class and token). ``total`` is still the whole layer's sum:
``spatial.sum() + prefix.sum() == total``. With a class-token head, a late layer's attribution
lies mostly in ``prefix``: the logits read the class token, and patch tokens reach it only
through the attention of the blocks above.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from generator.methods.featurevis.spatial import SpatialView

from ._grad import layer_gradients, model_device


def split_layer(
    view: SpatialView, act: torch.Tensor, grads: torch.Tensor, hw: Sequence[int]
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's raw activation (layer layout) and n gradients -> spatial act (C, H, W), spatial
    gradients (n, C, H, W) and the special tokens' activation x gradient (n, P)."""
    raw = act.float().unsqueeze(0)
    grads = grads.float()
    prefix = (view.prefix_part(raw, hw) * view.prefix_part(grads, hw)).sum(-1)
    act_s, grads_s = view(raw, hw)[0], view(grads, hw)
    if act_s.dim() == 1:  # a vector layer is a 1 x 1 grid
        act_s, grads_s = act_s[:, None, None], grads_s[:, :, None, None]
    return act_s, grads_s, prefix


@dataclass
class ClassAttribution:
    """Activation x gradient of one layer with respect to the logits of ``classes``.

    ``act``: (C, H, W); ``grads``: (K, C, H, W), K = len(classes); ``logits``: (K,) the logits of
    ``classes`` at this image; ``prefix``: (K, P) activation x gradient of the special tokens of a
    token layer, named in ``prefix_names`` (P = 0 for a CNN). Derived views are properties.
    """

    layer: str
    classes: List[int]
    act: torch.Tensor
    grads: torch.Tensor
    logits: torch.Tensor
    prefix: Optional[torch.Tensor] = None
    prefix_names: Tuple[str, ...] = ()

    @property
    def attr(self) -> torch.Tensor:
        """(K, C, H, W): activation x gradient."""
        return self.act.unsqueeze(0) * self.grads

    @property
    def spatial(self) -> torch.Tensor:
        """(K, H, W): attribution of each position to each class (summed over channels)."""
        return self.attr.sum(1)

    @property
    def channel(self) -> torch.Tensor:
        """(K, C): attribution of each channel to each class (summed over positions)."""
        return self.attr.sum((2, 3))

    @property
    def spatial_total(self) -> torch.Tensor:
        """(K,): the sum of the spatial map (every position of the grid, every channel)."""
        return self.attr.sum((1, 2, 3))

    @property
    def prefix_total(self) -> torch.Tensor:
        """(K,): what the special tokens carry (zero for a CNN)."""
        if self.prefix is None:
            return torch.zeros_like(self.logits)
        return self.prefix.sum(1)

    @property
    def total(self) -> torch.Tensor:
        """(K,): the linear approximation of logit(a) - logit(0), over the whole layer
        (``spatial_total + prefix_total``)."""
        return self.spatial_total + self.prefix_total

    def row(self, cls: int) -> int:
        try:
            return self.classes.index(int(cls))
        except ValueError:
            raise KeyError(f"class {cls} was not among the attributed classes {self.classes}") from None


def class_attribution(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    classes: Sequence[int],
    *,
    batch_size: int = 64,
    layout=None,
) -> ClassAttribution:
    """Activation x gradient of ``layer`` for the logits of ``classes`` (one image).

    ``layout``: the model's :class:`~generator.models.tokens.TokenLayout` (inferred when None
    and the layer outputs tokens)."""
    classes = [int(c) for c in classes]
    if not classes:
        raise ValueError("no classes to attribute")
    cls_t = torch.tensor(classes, device=model_device(model))

    def readout(idx: torch.Tensor, shape: tuple) -> torch.Tensor:
        if len(shape) != 1:
            raise ValueError(f"model output has shape (batch, {shape}); expected (batch, classes)")
        return torch.nn.functional.one_hot(cls_t[idx], shape[0]).float()

    lg = layer_gradients(model, x, layer, readout, len(classes), batch_size=batch_size)
    view, hw = SpatialView(model, layout, tuple(x.shape[-3:])), x.shape[-2:]
    act, grads, prefix = split_layer(view, lg.act, lg.grads, hw)
    return ClassAttribution(layer=layer, classes=classes, act=act, grads=grads, logits=lg.values.float(),
                            prefix=prefix, prefix_names=view.prefix_names(lg.act.unsqueeze(0), hw))


@dataclass
class ChannelRanking:
    """Channels of one class sorted by attribution: ``support`` (most positive first) and
    ``oppose`` (most negative first), each a list of (channel, attribution)."""

    cls: int
    support: List[tuple]
    oppose: List[tuple]


def rank_channels(values: torch.Tensor, n: int) -> tuple:
    """(top positive, top negative) entries of a 1-D tensor as [(index, value)], stable order."""
    order = torch.sort(values, descending=True, stable=True).indices
    pos = [(int(i), float(values[i])) for i in order[:n] if values[i] > 0]
    neg_order = torch.sort(values, descending=False, stable=True).indices
    neg = [(int(i), float(values[i])) for i in neg_order[:n] if values[i] < 0]
    return pos, neg


def channel_ranking(ca: ClassAttribution, cls: int, n: int = 8) -> ChannelRanking:
    support, oppose = rank_channels(ca.channel[ca.row(cls)], n)
    return ChannelRanking(cls=int(cls), support=support, oppose=oppose)


@dataclass
class CompetingClasses:
    """The article's teaser: two classes (by default the top two predictions) side by side.

    ``difference`` (C,) is the channel attribution to ``logit(a) - logit(b)`` (the linear
    approximation of the margin); ``for_a`` / ``for_b`` are the channels that push the margin
    towards each class, with that attribution (positive for ``for_a``, negative for ``for_b``);
    ``rank_a`` / ``rank_b`` are each class's own supporting and opposing channels.
    """

    a: int
    b: int
    difference: torch.Tensor
    for_a: List[tuple]
    for_b: List[tuple]
    rank_a: ChannelRanking
    rank_b: ChannelRanking


def competing_classes(
    ca: ClassAttribution, a: Optional[int] = None, b: Optional[int] = None, n: int = 8
) -> CompetingClasses:
    """Channels arguing for ``a`` versus ``b``; defaults to the two highest logits among ``ca.classes``."""
    if a is None or b is None:
        order = torch.argsort(ca.logits, descending=True, stable=True).tolist()
        if len(order) < 2:
            raise ValueError("need at least two attributed classes")
        a = ca.classes[order[0]] if a is None else a
        b = next(ca.classes[i] for i in order if ca.classes[i] != a) if b is None else b
    diff = ca.channel[ca.row(a)] - ca.channel[ca.row(b)]
    for_a, for_b = rank_channels(diff, n)
    return CompetingClasses(
        a=int(a), b=int(b), difference=diff, for_a=for_a, for_b=for_b,
        rank_a=channel_ranking(ca, a, n), rank_b=channel_ranking(ca, b, n),
    )


@dataclass
class LayerToLayer:
    """Attribution from positions of ``lower`` to objectives read from ``upper``.

    ``attr``: (Q, C_l, H_l, W_l), activation x gradient of objective q; ``values``: (Q,) the
    objectives; ``spatial``: (Q, H_l, W_l) summed over channels. With ``target="positions"``
    Q = H_u * W_u (upper positions, row-major) and ``upper_shape`` = (H_u, W_u); with
    ``target="total"`` Q = 1. ``prefix`` (Q, P): what the lower layer's special tokens carry
    (P = 0 for a CNN); positions are patch tokens on both sides.
    """

    lower: str
    upper: str
    target: str
    act: torch.Tensor
    attr: torch.Tensor
    values: torch.Tensor
    upper_shape: tuple
    prefix: Optional[torch.Tensor] = None

    @property
    def spatial(self) -> torch.Tensor:
        return self.attr.sum(1)

    def matrix(self) -> torch.Tensor:
        """(Q, H_l * W_l): attribution of each lower position (row-major) to each objective."""
        return self.spatial.reshape(self.spatial.shape[0], -1)


def layer_to_layer(
    model: nn.Module,
    x: torch.Tensor,
    lower: str,
    upper: str,
    *,
    target: str = "positions",
    direction: Optional[torch.Tensor] = None,
    positions: Optional[Sequence[int]] = None,
    batch_size: int = 64,
    layout=None,
) -> LayerToLayer:
    """Spatial attribution of ``lower``'s positions to ``upper``'s activation.

    The objective at an upper position q is the sum of its channels (the position's total
    activation) or, with ``direction`` (C_u,), the projection ``direction . a_u[:, q]``.
    ``target="positions"`` gives one map per upper position (optionally only ``positions``,
    row-major indices); ``target="total"`` one map for the objective summed over all positions.
    The forward pass stops at ``upper``. Because gradients are linear in the objective, the
    per-position maps sum to the total map.
    """
    if target not in ("positions", "total"):
        raise ValueError(f"target must be 'positions' or 'total', got {target!r}")
    device = model_device(model)
    d = None if direction is None else torch.as_tensor(direction, dtype=torch.float32, device=device)

    # The upper layer's grid: one cheap forward, cut short at the upper layer.
    from .activations import layer_activations

    view, hw = SpatialView(model, layout, tuple(x.shape[-3:])), x.shape[-2:]
    up_act = layer_activations(model, x, upper, with_logits=False, layout=layout).act  # (C_u, H_u, W_u)
    c_u, h_u, w_u = up_act.shape
    upper_shape = (h_u, w_u)
    if d is not None and d.shape != (c_u,):
        raise ValueError(f"direction has shape {tuple(d.shape)}, upper layer has {c_u} channels")
    per_channel = torch.ones(c_u, device=device) if d is None else d
    if target == "total":
        qs = None
        n = 1
    else:
        qs = (torch.arange(h_u * w_u, device=device) if positions is None
              else torch.as_tensor(list(positions), device=device))
        n = len(qs)

    def readout(idx: torch.Tensor, shape: tuple) -> torch.Tensor:
        if qs is None:
            spatial = torch.ones(len(idx), h_u * w_u, device=device)
        else:
            spatial = torch.nn.functional.one_hot(qs[idx], h_u * w_u).float()
        V = torch.einsum("bp,c->bcp", spatial, per_channel).reshape(len(idx), c_u, h_u, w_u)
        # back into the upper layer's own layout (a vector upper layer (C_u,) is a 1 x 1 grid)
        return view.adjoint(V, shape, hw)

    lg = layer_gradients(model, x, lower, readout, n, upper_layer=upper, batch_size=batch_size)
    act, grads, prefix = split_layer(view, lg.act, lg.grads, hw)
    return LayerToLayer(
        lower=lower, upper=upper, target=target, act=act, attr=act.unsqueeze(0) * grads,
        values=lg.values.float(), upper_shape=upper_shape, prefix=prefix,
    )
