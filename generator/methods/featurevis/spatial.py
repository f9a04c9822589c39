"""Layer outputs as (B, K, h, w) maps, whatever the architecture.

Feature visualisation and Building Blocks think in channels at places in the image. A CNN's
layers already give (B, C, H, W); a vision transformer's give a token sequence (B, N, C) with
special tokens (class, distillation, registers) in front of the patch tokens, and a Swin-style
model gives channels-last (B, H, W, C) maps. :class:`SpatialView` turns any of them into the
(B, C, h, w) map over the **patch grid**, using the model's :class:`~generator.models.tokens.TokenLayout`
(from the spec, else inferred once from a trace and cached per model).

What this means for the objectives (they read the converted map):

* ``channel(layer, c)`` is unit ``c`` **averaged over the patch tokens** (a spatial average;
  for an MLP layer ``blocks.i.mlp.fc1`` a hidden unit, for a block's output a direction of
  the residual stream's basis);
* ``neuron(layer, c)`` is unit ``c`` at **one token**, by default the centre patch;
* the class token (and any other special token) is left out: it is not a place in the image.
  Building Blocks reports what the special tokens carry of an attribution separately
  (:func:`prefix_part`), so the sums stay complete.

Conversion is a view or permutation (plus a slice), so it is differentiable and applies to
gradients alike; :meth:`SpatialView.adjoint` is its transpose (a spatial read-out placed back
into the layer's own layout, zero on the special tokens).
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from generator.models.tokens import TokenLayout, infer_token_layout, to_spatial

# model -> {input size: inferred layout}; weak, so a model dropped by the caller is freed.
_INFERRED: "weakref.WeakKeyDictionary[nn.Module, Dict[Tuple[int, ...], Optional[TokenLayout]]]" = (
    weakref.WeakKeyDictionary())


def inferred_layout(model: nn.Module, input_size: Sequence[int]) -> Optional[TokenLayout]:
    """``infer_token_layout`` once per (model, input size)."""
    size = tuple(int(s) for s in input_size)
    per_model = _INFERRED.setdefault(model, {})
    if size not in per_model:
        per_model[size] = infer_token_layout(model, size)
    return per_model[size]


def spec_layout(spec: Any) -> Optional[TokenLayout]:
    """The layout a spec carries (``spec.tokens``: a dict or a TokenLayout), if any."""
    data = getattr(spec, "tokens", None)
    if isinstance(data, TokenLayout):
        return data
    return TokenLayout.from_json(data) if isinstance(data, dict) else None


class SpatialView:
    """Converts one model's layer outputs to (B, K, h, w) over the patch grid.

    ``layout``: the model's token layout, or None (not known: inferred here with
    :func:`inferred_layout` at ``input_size``, once per model and size; free for a model without a
    patchifying convolution, one traced forward pass otherwise). Construct the view before any
    hook that cuts forward passes short is registered: the trace runs the model.
    """

    def __init__(self, model: nn.Module, layout: Optional[TokenLayout], input_size: Sequence[int]):
        self.model = model
        self.input_size = tuple(int(s) for s in input_size)
        if layout is None:
            try:
                layout = inferred_layout(model, self.input_size)
            except Exception:  # a model the trace cannot run at this size: read as a CNN
                layout = None
        self.layout = layout

    @classmethod
    def for_spec(cls, model: nn.Module, spec: Any) -> "SpatialView":
        return cls(model, spec_layout(spec), spec.input_size)

    def is_tokens(self, t: torch.Tensor) -> bool:
        """Whether ``t`` is a token sequence or channels-last map (converted by :meth:`__call__`)."""
        layout = self.layout
        if layout is None:
            return False
        return (layout.kind == "tokens" and t.dim() == 3) or (layout.kind == "channels_last" and t.dim() == 4)

    def _start(self, t: torch.Tensor, layout: TokenLayout, input_hw: Sequence[int]) -> int:
        """Index of the first patch token of a (B, N, C) sequence: 0 when it has exactly the patch
        grid's tokens (the patch embedding's own output), else the layout's special tokens
        (``to_spatial`` then fits the rest to a grid or says why not)."""
        gh, gw = layout.grid_for(input_hw)
        if int(t.shape[1]) == gh * gw and layout.prefix:
            return 0
        return layout.prefix

    def __call__(self, t: torch.Tensor, input_hw: Sequence[int]) -> torch.Tensor:
        """``t`` as (B, K, h, w) when it is a token output; any other tensor unchanged."""
        if not self.is_tokens(t):
            return t
        layout = self.layout
        assert layout is not None
        if layout.kind == "tokens":
            start = self._start(t, layout, input_hw)
            if start != layout.prefix:  # no special tokens in this output (the patch embedding)
                layout = dataclasses.replace(layout, prefix=0, prefix_names=())
        return to_spatial(t, layout, input_hw)

    def prefix_part(self, t: torch.Tensor, input_hw: Sequence[int]) -> torch.Tensor:
        """(B, P, C): the special tokens of a token output (P = 0 for every other tensor)."""
        if not self.is_tokens(t) or self.layout is None or self.layout.kind != "tokens":
            channels = int(self(t, input_hw).shape[1]) if t.dim() >= 2 else 1
            return t.new_zeros((t.shape[0], 0, channels))
        return t[:, : self._start(t, self.layout, input_hw)]

    def prefix_names(self, t: torch.Tensor, input_hw: Sequence[int]) -> Tuple[str, ...]:
        p = int(self.prefix_part(t, input_hw).shape[1])
        return tuple(self.layout.prefix_names[:p]) if self.layout is not None and p else ()

    def adjoint(self, v: torch.Tensor, shape: Sequence[int], input_hw: Sequence[int]) -> torch.Tensor:
        """The transpose of the conversion: (n, K, h, w) read-out weights -> (n, *shape) in the
        layer's own layout (zero on special tokens). ``shape`` is one output's shape, without batch.

        Computed by autograd through the conversion itself, so it is exact for any layout.
        """
        probe = torch.zeros((1,) + tuple(shape), device=v.device, dtype=v.dtype)
        if not self.is_tokens(probe):
            return v.reshape((v.shape[0],) + tuple(shape))
        z = torch.zeros((v.shape[0],) + tuple(shape), device=v.device, dtype=v.dtype, requires_grad=True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self(z, input_hw), z, grad_outputs=v)
        return g.detach()

    def describe(self, t: torch.Tensor, input_hw: Sequence[int]) -> str:
        """A line for records: how a token output was read ('' for a CNN map)."""
        if not self.is_tokens(t) or self.layout is None:
            return ""
        gh, gw = self.layout.grid_for(input_hw)
        names = self.prefix_names(t, input_hw)
        left_out = f"; {', '.join(names)} token{'s' if len(names) > 1 else ''} left out (not a place in the image)" \
            if names else ""
        return f"{self.layout.kind} on a {gh}x{gw} patch grid{left_out}"


__all__ = ["SpatialView", "inferred_layout", "spec_layout"]
