"""Attention rollout and gradient-weighted attention relevance for vision transformers.

Both read the attention probability matrices of every self-attention layer
(:mod:`generator.engine.attention`, which makes fused attention explicit for one forward pass
and leaves the model untouched) and compose them into one token-to-token matrix ``R`` (N x N).
The map is the row of the *readout* tokens (the tokens whose last-layer output the class score
depends on: the class token of a ViT, class and distillation tokens of a distilled DeiT, every
patch token of an average-pooled model), averaged, over the patch tokens, laid out on the patch
grid and bilinearly upsampled to the input, as CAMs are.

Readout tokens are found, not assumed: they are the query rows of the last attention layer whose
gradient with respect to the class score is not exactly zero. That zero pattern is structural
(which outputs the head reads), so it does not depend on the class.

Defined for models whose attention is global over one token sequence of fixed length with the
patch tokens after any special tokens (ViT, DeiT, register tokens, torchvision's ViT). Windowed
attention (Swin), pooling or cross attention, TorchScript and networks without attention raise
:class:`~generator.capability.Unsupported` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ...capability import Unsupported
from ...engine.attention import AttentionRecord, capture_attention
from ...engine.batching import autocast_for, run_chunked
from ...models.tokens import TokenLayout, infer_token_layout
from .base import AttributionMethod, AttributionResult, SpecOrLayer, register
from .cam import upsample


@dataclass
class _Layers:
    """The captured attention of one chunk, validated: ``attn`` (B,heads,N,N) float32 per layer,
    ``grads`` the class score's gradient with respect to each (empty for rollout), ``readout``
    which query rows the score reads, the patch grid and the number of special tokens in front
    of the patch tokens."""

    attn: List[torch.Tensor]
    grads: List[torch.Tensor]
    readout: torch.Tensor  # (B,N) bool
    grid: Tuple[int, int]
    prefix: int


def fuse_heads(attn: torch.Tensor, how: str) -> torch.Tensor:
    """(B,heads,N,N) -> (B,N,N) by the mean, maximum or minimum over heads."""
    if how == "mean":
        return attn.mean(dim=1)
    if how == "max":
        return attn.amax(dim=1)
    if how == "min":
        return attn.amin(dim=1)
    raise ValueError(f"unknown head fusion {how!r}; use mean, max or min")


def rollout(attn: List[torch.Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): ``R = Â_L ⋯ Â_1`` with
    ``Â = rownorm(fuse(A) + I)``, the identity standing for the residual connection.

    With mean fusion rows of ``fuse(A)`` already sum to one and ``Â = (A + I) / 2`` as in the
    paper. ``discard_ratio`` zeroes that fraction of the smallest fused weights of each matrix
    before the identity is added (a noise filter popularised by later implementations).
    """
    B, _, N, _ = attn[0].shape
    eye = torch.eye(N, dtype=attn[0].dtype, device=attn[0].device).expand(B, N, N)
    R = eye.clone()
    for A in attn:
        fused = fuse_heads(A, head_fusion)
        if discard_ratio > 0:
            flat = fused.flatten(1)
            drop = int(flat.shape[1] * discard_ratio)
            if drop:
                idx = flat.topk(drop, dim=1, largest=False).indices
                fused = flat.scatter(1, idx, 0.0).view_as(fused)
        step = fused + eye
        step = step / step.sum(dim=-1, keepdim=True)
        R = step @ R
    return R


def gradient_relevance(attn: List[torch.Tensor], grads: List[torch.Tensor]) -> torch.Tensor:
    """Chefer, Gur & Wolf 2021, self-attention rule: ``R ← R + Ā R`` from ``R = I`` with
    ``Ā = mean_heads((∇A ⊙ A)^+)``."""
    B, _, N, _ = attn[0].shape
    R = torch.eye(N, dtype=attn[0].dtype, device=attn[0].device).expand(B, N, N).clone()
    for A, G in zip(attn, grads):
        weighted = (G * A).clamp(min=0).mean(dim=1)
        R = R + weighted @ R
    return R


class _AttentionBase(AttributionMethod):
    signed = False
    reduction = "upsampled"
    needs_gradients = False

    def __init__(self, model: nn.Module, spec_or_layer: SpecOrLayer = None, **params: Any):
        super().__init__(model, spec_or_layer, **params)
        if isinstance(model, torch.jit.ScriptModule):
            raise Unsupported(f"{self.name} is not defined for a TorchScript module: it reads the attention "
                              "matrices from the forward's calls, and TorchScript hides them")
        self._layouts: Dict[Tuple[int, ...], Optional[TokenLayout]] = {}  # input size -> layout (one trace)

    @property
    def start_layer(self) -> int:
        return int(self.params["start_layer"])

    def _relevance(self, layers: _Layers) -> torch.Tensor:
        raise NotImplementedError

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> AttributionResult:
        grids: List[torch.Tensor] = []
        readout: List[int] = []
        info: Dict[str, Any] = {}

        def chunk(a: int, b: int) -> None:
            layers = self._capture(x[a:b], target[a:b])
            R = self._relevance(layers)
            rows = layers.readout.to(R.dtype)
            row = (rows.unsqueeze(-1) * R).sum(1) / rows.sum(1, keepdim=True)  # (B,N)
            grids.append(row[:, layers.prefix:].reshape(-1, *layers.grid))
            readout.extend(int(n) for n in layers.readout.sum(1))
            info.update(layers=len(layers.attn), prefix=layers.prefix)

        run_chunked(x.shape[0], self.max_batch, chunk)
        grid = torch.cat(grids)
        if not torch.isfinite(grid).all():
            raise FloatingPointError(f"{self.name}: the relevance is not finite (an attention row without any "
                                     "allowed position?)")
        return self._result(upsample(grid, x.shape[-2:]), target, None, grid=grid,
                            layers=info["layers"], prefix_tokens=info["prefix"], readout_tokens=readout)

    # ------------------------------------------------------------------ capture and checks
    def _capture(self, x: torch.Tensor, target: torch.Tensor) -> _Layers:
        with torch.enable_grad():
            with autocast_for(x.device, self.precision), capture_attention() as rec:
                logits = self.model(x)
            attn = self._check(rec, x)
            score = logits.float().gather(1, target.view(-1, 1)).sum()
            # the last layer's gradient gives the readout rows; Chefer's rule needs every layer's
            wanted = attn if self.needs_gradients else attn[-1:]
            found = torch.autograd.grad(score, wanted, allow_unused=True)
        grads = [torch.zeros_like(a) if g is None else g for a, g in zip(wanted, found)]
        readout = grads[-1].detach().ne(0).any(dim=-1).any(dim=1)  # (B,N)
        N = attn[0].shape[-1]
        grid, prefix = self._layout(rec, x, N)
        if not readout.any(dim=1).all():
            # a score that depends on no token (a dead head): read the class token, or all tokens
            fallback = torch.zeros_like(readout)
            fallback[:, : (1 if prefix else N)] = True
            readout = torch.where(readout.any(dim=1, keepdim=True), readout, fallback)
        start = self.start_layer
        if start >= len(attn):
            raise ValueError(f"{self.name}: start_layer={start}, but the model has {len(attn)} attention layers")
        return _Layers([a.detach().float() for a in attn[start:]],
                       [g.float() for g in grads[start:]] if self.needs_gradients else [],
                       readout, grid, prefix)

    def _check(self, rec: AttentionRecord, x: torch.Tensor) -> List[torch.Tensor]:
        model = type(self.model).__name__
        if rec.uncaptured:
            raise Unsupported(f"{self.name} is not defined for {model}: an attention call could not be made "
                              f"explicit ({rec.uncaptured[0]})")
        if not rec.attentions:
            raise Unsupported(f"{self.name} is not defined for {model}: it computes no attention that can be read "
                              "(a network without attention, or attention inside a custom autograd function)")
        windowed = next((a for a in rec.attentions if a.batch != x.shape[0]), None)
        if windowed is not None:
            raise Unsupported(f"{self.name} is not defined for {model}: its attention is windowed (e.g. Swin; "
                              f"{windowed.batch} attention groups for {x.shape[0]} images), tokens attend only within "
                              "(shifted) windows, so there is no token-to-token matrix to compose")
        sizes = {tuple(a.probs.shape[-2:]) for a in rec.attentions}
        if len(sizes) != 1 or not rec.attentions[0].square:
            raise Unsupported(f"{self.name} is not defined for {model}: its attention matrices have different or "
                              f"non-square sizes {sorted(sizes)} (token pooling or cross attention), so they do not "
                              "compose")
        return [a.probs for a in rec.attentions]

    def _layout(self, rec: AttentionRecord, x: torch.Tensor, n_tokens: int) -> Tuple[Tuple[int, int], int]:
        """(patch grid, number of special tokens in front) for ``n_tokens`` tokens: from the
        model's token layout (the spec's, else :func:`~generator.models.tokens.infer_token_layout`),
        else from the spatial size of the last convolution output before the first attention
        (the patch embedding)."""
        model = type(self.model).__name__
        size = tuple(x.shape[1:])
        if size not in self._layouts:
            known = TokenLayout.from_json(self.spec.tokens) if self.spec is not None and self.spec.tokens else None
            self._layouts[size] = known or infer_token_layout(self.model, size)
        layout = self._layouts[size]
        if layout is not None and layout.kind != "tokens":
            raise Unsupported(f"{self.name} is not defined for {model}: its tokens form a {layout.kind} map, not "
                              "one sequence that every attention layer sees")
        grid = layout.grid_for(x.shape[-2:]) if layout is not None else rec.attentions[0].grid_before
        if grid is None:
            raise Unsupported(f"{self.name} is not defined for {model}: no patch embedding (a convolution before "
                              "the first attention) gives the token grid")
        prefix = n_tokens - grid[0] * grid[1]
        if prefix < 0 or (layout is not None and layout.prefix != prefix):
            raise Unsupported(f"{self.name} is not defined for {model}: its {n_tokens} tokens are not the "
                              f"{grid[0]}x{grid[1]} patch tokens after a few special tokens")
        return grid, prefix


@register
class AttentionRollout(_AttentionBase):
    """Attention rollout: the product over layers of head-fused attention plus identity.

    Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers". ``R = Â_L ⋯ Â_1`` with
    ``Â = rownorm(fuse_heads(A) + I)`` (the identity models the residual connection); the map is
    the readout token's row of ``R`` over the patch tokens, upsampled to the input. It uses
    attention only, so it is the same for every class: it shows where information flows to the
    class token, not evidence for a class.
    """

    name = "attention_rollout"

    def _relevance(self, layers: _Layers) -> torch.Tensor:
        return rollout(layers.attn, str(self.params["head_fusion"]), float(self.params["discard_ratio"]))


@register
class AttentionGradient(_AttentionBase):
    """Gradient-weighted attention relevance (the self-attention rule of Chefer et al.).

    Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability for Interpreting Bi-Modal
    and Encoder-Decoder Transformers". Per layer ``Ā = mean_heads((∇A ⊙ A)^+)`` with ``∇A`` the
    gradient of the class score with respect to the attention probabilities, and
    ``R ← R + Ā R`` from ``R = I``; the map is the readout token's row of ``R`` over the patch
    tokens, upsampled to the input. Class-specific through the gradients.
    """

    name = "attention_gradient"
    needs_gradients = True

    def _relevance(self, layers: _Layers) -> torch.Tensor:
        return gradient_relevance(layers.attn, layers.grads)
