"""Neuron groups: NMF of a layer's (positions x channels) activations, and their attribution.

Olah et al. 2018 factorise the activation matrix of one image into a few groups of neurons,
each with a spatial map (where the group is active) and a channel factor (what it is; its
feature visualisation is the direction objective of that factor).

Signed activations. NMF needs a non-negative matrix, but many layers (EfficientNet's linear
bottlenecks, say) output signed values. ``mode`` chooses:

* ``"plain"``: factorise the activations as they are (they must be >= 0);
* ``"clamp"``: factorise ``relu(a)`` (what fires), ignoring negative values;
* ``"split"``: factorise ``[relu(a), relu(-a)]`` (2C columns), so a group's direction is the
  signed vector ``H[:, :C] - H[:, C:]`` and the groups reconstruct ``a`` itself;
* ``"auto"`` (default): ``"plain"`` when the activations are non-negative, else ``"split"``.

Group attribution (our definition). A group ``g`` stands for the rank-one part of the
activation ``a_g[c, p] = W[p, g] * d_g[c]`` (spatial factor times signed direction). Its
attribution to an objective ``f`` is the activation x gradient of that part,
``sum_{p,c} a_g[c, p] * df/da[c, p]``. The groups' attributions plus the attribution of the
residual ``a - sum_g a_g`` add up exactly to the layer's total activation x gradient, so
nothing is hidden: the residual is reported next to the groups.

Vision transformers: the factorised matrix is (patch tokens x channels); the special tokens
(class, distillation, registers) are not places in the image and are not factorised. What they
carry is reported apart (``prefix``), so groups + residual + prefix == total still holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn

from generator.methods.featurevis.spatial import SpatialView

from ._grad import layer_gradients
from .attribution import ClassAttribution, rank_channels, split_layer
from .nmf import nmf


@dataclass
class NeuronGroups:
    """``spatial``: (k, H, W) spatial factors; ``directions``: (k, C) signed channel directions
    (``spatial[g] (x) directions[g]`` is group g's part of the activation); ``factors``: the raw
    non-negative channel factors (k x C, or k x 2C in split mode); ``relative_error`` of the
    factorisation of the (transformed) matrix; groups are sorted by size, largest first."""

    layer: str
    mode: str
    spatial: torch.Tensor
    directions: torch.Tensor
    factors: torch.Tensor
    relative_error: float
    n_iter: int

    @property
    def k(self) -> int:
        return self.spatial.shape[0]

    def components(self) -> torch.Tensor:
        """(k, C, H, W): each group's part of the activation."""
        return torch.einsum("ghw,gc->gchw", self.spatial, self.directions)

    def reconstruction(self) -> torch.Tensor:
        return self.components().sum(0)

    def unit_directions(self) -> torch.Tensor:
        """Directions scaled to unit L2 norm (for direction objectives of feature visualisation)."""
        n = self.directions.norm(dim=1, keepdim=True)
        return self.directions / torch.where(n > 0, n, torch.ones_like(n))

    def top_channels(self, g: int, n: int = 6) -> List[tuple]:
        """The channels that make up group ``g`` (largest positive direction entries)."""
        return rank_channels(self.directions[g], n)[0]


def _transform(X: torch.Tensor, mode: str) -> tuple:
    if mode == "auto":
        mode = "plain" if bool((X >= 0).all()) else "split"
    if mode == "plain":
        if (X < 0).any():
            raise ValueError("mode='plain' needs non-negative activations; use 'clamp', 'split' or 'auto'")
        return X, mode
    if mode == "clamp":
        return X.clamp(min=0), mode
    if mode == "split":
        return torch.cat([X.clamp(min=0), (-X).clamp(min=0)], dim=1), mode
    raise ValueError(f"unknown mode {mode!r} (auto, plain, clamp, split)")


def neuron_groups(
    act: torch.Tensor,
    k: int = 6,
    *,
    layer: str = "",
    mode: str = "auto",
    seed: int = 0,
    init: str = "nndsvda",
    max_iter: int = 300,
    tol: float = 1e-5,
) -> NeuronGroups:
    """NMF of a (C, H, W) activation into ``k`` groups, on the activation's device (see module doc)."""
    c, h, w = act.shape
    X, mode = _transform(act.reshape(c, h * w).T.float(), mode)
    res = nmf(X, k, init=init, seed=seed, max_iter=max_iter, tol=tol)
    Hf = res.H
    directions = Hf[:, :c] - Hf[:, c:] if mode == "split" else Hf
    return NeuronGroups(
        layer=layer, mode=mode, spatial=res.W.T.reshape(k, h, w).contiguous(), directions=directions.contiguous(),
        factors=Hf, relative_error=res.relative_error, n_iter=res.n_iter,
    )


def _project(groups: NeuronGroups, grads: torch.Tensor) -> torch.Tensor:
    """(N, k, H, W): per position, spatial factor x (direction . gradient), for N gradients (N, C, H, W)."""
    proj = torch.einsum("gc,nchw->nghw", groups.directions, grads.float())
    return proj * groups.spatial.unsqueeze(0)


@dataclass
class GroupAttribution:
    """Attribution of each group to each class: ``attr`` (K, k); ``spatial`` (K, k, H, W) its map;
    ``residual`` (K,): the part of the grid's activation x gradient not carried by the groups;
    ``prefix`` (K,): what a token layer's special tokens carry (zero for a CNN). ``attr.sum(1) +
    residual + prefix`` equals the class attribution's total exactly."""

    classes: List[int]
    attr: torch.Tensor
    spatial: torch.Tensor
    residual: torch.Tensor
    prefix: Optional[torch.Tensor] = None


def group_attribution(groups: NeuronGroups, ca: ClassAttribution) -> GroupAttribution:
    if groups.spatial.shape[1:] != ca.act.shape[1:] or groups.directions.shape[1] != ca.act.shape[0]:
        raise ValueError("groups and class attribution come from layers of different shapes")
    spatial = _project(groups, ca.grads)
    attr = spatial.sum((2, 3))
    return GroupAttribution(classes=list(ca.classes), attr=attr, spatial=spatial,
                            residual=ca.spatial_total - attr.sum(1), prefix=ca.prefix_total)


@dataclass
class GroupFlow:
    """Attribution from the groups of a lower layer to the groups of an upper layer.

    The objective of upper group ``h`` is its direction read out where it lives:
    ``f_h(a_u) = sum_q m_h[q] * (d_h . a_u[:, q])`` with ``d_h`` the unit direction and ``m_h``
    the spatial factor scaled to a maximum of 1. ``flow[g, h]`` (k1 x k2) is the activation x
    gradient of lower group g's part of the lower activation with respect to ``f_h``;
    ``residual`` (k2,) the part of the lower grid not carried by the lower groups; ``prefix`` (k2,)
    what the lower layer's special tokens carry (zero for a CNN); ``total`` (k2,) the whole
    activation x gradient (``flow.sum(0) + residual + prefix == total``); ``values`` (k2,) ``f_h``.
    """

    lower: str
    upper: str
    flow: torch.Tensor
    residual: torch.Tensor
    total: torch.Tensor
    values: torch.Tensor
    prefix: Optional[torch.Tensor] = None


def upper_group_readout(upper: NeuronGroups, view: Optional[SpatialView] = None, input_hw=None):
    """The objective ``f_h`` of each upper group (see :class:`GroupFlow`), for ``layer_gradients``;
    with ``view``, placed back into a token layer's own layout (zero on special tokens)."""
    d = upper.unit_directions()
    m = upper.spatial / upper.spatial.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]

    def readout(idx: torch.Tensor, shape: tuple) -> torch.Tensor:
        V = torch.einsum("bc,bhw->bchw", d.to(idx.device)[idx], m.to(idx.device)[idx])
        if view is not None:
            return view.adjoint(V, shape, input_hw)
        return V.reshape(len(idx), *shape)  # a vector upper layer (C_u,) is a 1 x 1 grid

    return readout


def group_flow(
    model: nn.Module,
    x: torch.Tensor,
    lower: NeuronGroups,
    upper: NeuronGroups,
    *,
    batch_size: int = 64,
    layout=None,
) -> GroupFlow:
    """k1 x k2 flow matrix from ``lower``'s groups to ``upper``'s (a Sankey diagram's links)."""
    if not lower.layer or not upper.layer:
        raise ValueError("both neuron groups need their layer name (neuron_groups(..., layer=...))")
    view, hw = SpatialView(model, layout, tuple(x.shape[-3:])), x.shape[-2:]
    lg = layer_gradients(model, x, lower.layer, upper_group_readout(upper, view, hw), upper.k,
                         upper_layer=upper.layer, batch_size=batch_size)
    act, grads, prefix = split_layer(view, lg.act, lg.grads, hw)
    flow = _project(lower, grads).sum((2, 3)).T  # (k1, k2)
    grid = (act.unsqueeze(0) * grads).sum((1, 2, 3))
    pre = prefix.sum(1)
    return GroupFlow(
        lower=lower.layer, upper=upper.layer, flow=flow, residual=grid - flow.sum(0), total=grid + pre,
        values=lg.values.float(), prefix=pre,
    )
