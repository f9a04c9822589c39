"""Attention probability matrices of one forward pass, as nodes of the autograd graph.

Attention rollout and gradient-weighted attention need every softmax(q kᵀ) of a transformer, and
the second also its gradient with respect to a class score. Modern implementations never form it:
timm's ``Attention`` calls the fused ``F.scaled_dot_product_attention`` and torchvision's
``VisionTransformer`` calls ``nn.MultiheadAttention`` with ``need_weights=False``, which ends in
the same fused kernel (or in ``torch._native_multi_head_attention``).

:class:`AttentionCapture` is a ``__torch_function__`` mode (``torch.overrides.TorchFunctionMode``)
active for one forward pass. It replaces

* ``F.scaled_dot_product_attention`` by the explicit ``softmax(q kᵀ · scale + mask) v``;
* ``F.multi_head_attention_forward`` (what ``nn.MultiheadAttention.forward`` calls; a mode being
  active also keeps it off the native fast path) by input projections, the same explicit
  attention and the output projection;
* and it records the result of an explicit ``softmax`` over the last dimension of a square
  (B', heads, N, N) tensor (timm's non-fused path, torchvision's Swin), which already is a node;

recording each probability tensor. The explicit forms give the fused kernels' values up to
floating-point rounding (tests check 1e-5 on whole models). Nothing of the user's model is changed
or hooked: the mode lives only inside the ``with`` block, so there is nothing to restore, even on
error. Calls it cannot make explicit (dropout on the attention in training mode, ``bias_k`` /
``add_zero_attn`` / a key padding mask in ``nn.MultiheadAttention``) run unchanged and are listed
in :attr:`AttentionRecord.uncaptured`, so a method can refuse instead of rolling out a partial
set of layers. Attention inside TorchScript or a custom ``autograd.Function`` is invisible to the
mode (then no attention is found at all, or too few layers: callers check).

Windowed attention (Swin) is recorded as it is: one (B·windows, heads, w², w²) matrix per window;
:attr:`CapturedAttention.batch` tells the caller so.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


@dataclass
class CapturedAttention:
    """One attention probability tensor ``probs`` (B', heads, Nq, Nk), rows summing to one.

    ``source``: the call it came from (``scaled_dot_product_attention``,
    ``multi_head_attention_forward`` or ``softmax``). ``grid_before``: the spatial size (h, w) of
    the last ``conv2d`` output seen before this call (the patch embedding, for a ViT), or None.
    """

    probs: torch.Tensor
    source: str
    grid_before: Optional[Tuple[int, int]] = None

    @property
    def batch(self) -> int:
        """Leading size: the batch, or batch x windows for windowed attention."""
        return int(self.probs.shape[0])

    @property
    def square(self) -> bool:
        return self.probs.shape[-1] == self.probs.shape[-2]


@dataclass
class AttentionRecord:
    """What one captured forward pass held: the attention tensors in call order, and the
    attention calls that ran unchanged (``"call: reason"``) because they could not be made
    explicit."""

    attentions: List[CapturedAttention] = field(default_factory=list)
    uncaptured: List[str] = field(default_factory=list)


def attention_probabilities(q: torch.Tensor, k: torch.Tensor, *, mask: Optional[torch.Tensor] = None,
                            mask_true_allows: bool = True, is_causal: bool = False,
                            scale: Optional[float] = None) -> torch.Tensor:
    """``softmax(q kᵀ · scale + mask)`` for (..., L, E) queries and (..., S, E) keys.

    A boolean ``mask`` allows a position where it is True when ``mask_true_allows`` (the
    ``scaled_dot_product_attention`` convention) and forbids it otherwise (the
    ``nn.MultiheadAttention`` convention); a float mask is added to the scores.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q * scale) @ k.transpose(-2, -1)
    if is_causal:
        L, S = q.shape[-2], k.shape[-2]
        allowed = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~allowed, float("-inf"))
    if mask is not None:
        if mask.dtype == torch.bool:
            forbidden = ~mask if mask_true_allows else mask
            scores = scores.masked_fill(forbidden, float("-inf"))
        else:
            scores = scores + mask
    return scores.softmax(dim=-1)


def _sdpa_arguments(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attn_mask: Optional[torch.Tensor] = None, dropout_p: float = 0.0, is_causal: bool = False,
                    scale: Optional[float] = None, enable_gqa: bool = False) -> Tuple[Any, ...]:
    return query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa


_MHA_SIGNATURE = inspect.signature(F.multi_head_attention_forward)


class AttentionCapture(TorchFunctionMode):
    """The mode behind :func:`capture_attention` (see the module doc).

    ``as_leaf``: when a probability tensor does not require grad (frozen parameters, an input
    without grad), it is made a leaf that does, so the class score can be differentiated with
    respect to it; the values are unchanged.
    """

    def __init__(self, as_leaf: bool = True):
        super().__init__()
        self.as_leaf = as_leaf
        self.record = AttentionRecord()
        self._grid: Optional[Tuple[int, int]] = None

    def _keep(self, probs: torch.Tensor, source: str) -> torch.Tensor:
        if self.as_leaf and torch.is_grad_enabled() and not probs.requires_grad:
            probs = probs.detach().requires_grad_(True)
        self.record.attentions.append(CapturedAttention(probs, source, self._grid))
        return probs

    def __torch_function__(self, func: Callable, types_: Any, args: Tuple = (),
                           kwargs: Optional[Dict[str, Any]] = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "scaled_dot_product_attention":
            return self._sdpa(func, args, kwargs)
        if name == "multi_head_attention_forward":
            return self._mha(func, args, kwargs)
        out = func(*args, **kwargs)
        if name == "conv2d" and isinstance(out, torch.Tensor) and out.dim() >= 3:
            self._grid = (int(out.shape[-2]), int(out.shape[-1]))
        elif name == "softmax" and _is_attention_softmax(out, args, kwargs):
            out = self._keep(out, "softmax")
        return out

    # ------------------------------------------------------------------ scaled_dot_product_attention
    def _sdpa(self, func: Callable, args: Tuple, kwargs: Dict[str, Any]) -> Any:
        try:
            q, k, v, mask, dropout_p, is_causal, scale, gqa = _sdpa_arguments(*args, **kwargs)
        except TypeError as exc:  # an argument of a newer torch than this code knows
            self.record.uncaptured.append(f"scaled_dot_product_attention: {exc}")
            return func(*args, **kwargs)
        if dropout_p:
            self.record.uncaptured.append("scaled_dot_product_attention: dropout on the attention (training mode)")
            return func(*args, **kwargs)
        if gqa and k.shape[-3] != q.shape[-3]:
            # grouped-query attention: each key/value head serves a group of query heads
            k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
            v = v.repeat_interleave(q.shape[-3] // v.shape[-3], dim=-3)
        probs = attention_probabilities(q, k, mask=mask, is_causal=is_causal, scale=scale)
        return self._keep(probs, "scaled_dot_product_attention") @ v

    # ------------------------------------------------------------------ nn.MultiheadAttention
    def _mha(self, func: Callable, args: Tuple, kwargs: Dict[str, Any]) -> Any:
        bound = _MHA_SIGNATURE.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        why = [what for what, bad in (
            ("bias_k/bias_v", a["bias_k"] is not None or a["bias_v"] is not None),
            ("add_zero_attn", a["add_zero_attn"]),
            ("static_k/static_v", a["static_k"] is not None or a["static_v"] is not None),
            ("key_padding_mask", a["key_padding_mask"] is not None),
            ("dropout on the attention (training mode)", a["training"] and a["dropout_p"] > 0),
        ) if bad]
        if why:
            self.record.uncaptured.append(f"multi_head_attention_forward: {', '.join(why)}")
            return func(*args, **kwargs)
        query, key, value = a["query"], a["key"], a["value"]
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        L, N, E = query.shape
        heads = int(a["num_heads"])
        bias = a["in_proj_bias"]
        b_q, b_k, b_v = bias.chunk(3) if bias is not None else (None, None, None)
        if a["use_separate_proj_weight"]:
            w_q, w_k, w_v = a["q_proj_weight"], a["k_proj_weight"], a["v_proj_weight"]
        else:
            w_q, w_k, w_v = a["in_proj_weight"].chunk(3)

        def split(t: torch.Tensor) -> torch.Tensor:  # (S, N, E) -> (N, heads, S, E/heads)
            return t.reshape(t.shape[0], N, heads, E // heads).permute(1, 2, 0, 3)

        q = split(F.linear(query, w_q, b_q))
        k = split(F.linear(key, w_k, b_k))
        v = split(F.linear(value, w_v, b_v))
        mask = a["attn_mask"]
        if mask is not None:
            mask = mask.view(N, heads, L, -1) if mask.dim() == 3 else mask
        probs = attention_probabilities(q, k, mask=mask, mask_true_allows=False)
        probs = self._keep(probs, "multi_head_attention_forward")
        out = (probs @ v).permute(2, 0, 1, 3).reshape(L, N, E)
        out = F.linear(out, a["out_proj_weight"], a["out_proj_bias"])
        weights = None
        if a["need_weights"]:
            weights = probs.mean(dim=1) if a["average_attn_weights"] else probs
            weights = weights.squeeze(0) if unbatched else weights
        return (out.squeeze(1) if unbatched else out), weights


def _is_attention_softmax(out: Any, args: Tuple, kwargs: Dict[str, Any]) -> bool:
    """A softmax over the last dimension of a (B', heads, N, N) tensor: attention written out."""
    if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[-1] != out.shape[-2]:
        return False
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    return isinstance(dim, int) and dim in (-1, 3)


@contextlib.contextmanager
def capture_attention(as_leaf: bool = True) -> Iterator[AttentionRecord]:
    """Record every attention probability tensor computed inside the block (see the module doc).

    >>> with torch.enable_grad(), capture_attention() as rec:   # doctest: +SKIP
    ...     logits = model(x)
    >>> [a.probs.shape for a in rec.attentions]                 # doctest: +SKIP
    """
    mode = AttentionCapture(as_leaf=as_leaf)
    with mode:
        yield mode.record
