"""Layer-wise relevance propagation with composites of rules, BatchNorm folding and explicit
residual sums (so relevance is conserved across skip connections)."""

from __future__ import annotations

import torch
from torch import nn

from ...engine.batching import input_gradient, run_chunked, select_target
from ...engine.canonizers import BatchNormFolder, ResidualAdd, ResidualCanonizer, canonized
from ...engine.rules import (
    ACTIVATIONS,
    AlphaBetaRule,
    EpsilonRule,
    FlatRule,
    PassRule,
    Rule,
    rules_applied,
    rules_by_type,
)
from .base import AttributionMethod, register

_CONV = nn.modules.conv._ConvNd
_POOL_AVG = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_BN = nn.modules.batchnorm._BatchNorm


class _LRPBase(AttributionMethod):
    signed = True
    reduction = "sum"

    def conv_rule(self) -> Rule:
        raise NotImplementedError

    def first_rule(self) -> Rule:
        return self.conv_rule()

    def dense_rule(self) -> Rule:
        return EpsilonRule(float(self.params["epsilon"]))

    def composite(self, model: nn.Module, folded=()):
        """Module -> rule. ``folded``: BatchNorms already folded away (they keep no rule; an
        activation inside them, as in timm's BatchNormAct2d, gets its own)."""
        folded_ids = {id(m) for m in folded}
        first = next((m for m in model.modules() if isinstance(m, (_CONV, nn.Linear))), None)
        eps = float(self.params["epsilon"])
        table = [
            (lambda _n, m: id(m) in folded_ids, None),
            (lambda _n, m: m is first, self.first_rule() if isinstance(first, _CONV) else self.dense_rule()),
            (ACTIVATIONS, PassRule()),
            (_CONV, self.conv_rule()),
            (nn.Linear, self.dense_rule()),
            (_POOL_AVG + (ResidualAdd,), EpsilonRule(eps)),
            (_BN, EpsilonRule(eps)),  # only BatchNorms that could not be folded keep their forward
        ]
        return rules_by_type(model, table)

    def _attribute(self, x, target):
        raw = torch.empty_like(x, dtype=torch.float32)
        score = torch.empty(x.shape[0], device=x.device)
        folder = BatchNormFolder()
        canonizers = [folder, ResidualCanonizer()] if self.params["canonize"] else []

        def seed(logits, tgt):
            s = torch.zeros_like(logits)
            s.scatter_(1, tgt.view(-1, 1), select_target(logits, tgt).view(-1, 1))
            return s

        with canonized(self.model, canonizers, example=x[:1]):
            with rules_applied(self.model, self.composite(self.model, folder.folded)):
                def chunk(a: int, b: int) -> None:
                    r, logits = input_gradient(self.model, x[a:b], target[a:b], self.precision, grad_seed=seed)
                    raw[a:b] = r
                    score[a:b] = select_target(logits, target[a:b])

                run_chunked(x.shape[0], self.max_batch, chunk)
        total = raw.flatten(1).sum(1)
        conservation = total / torch.where(score != 0, score, torch.ones_like(score))
        return self._result(raw.sum(1), target, raw, conservation=conservation,
                            relevance_sum=total, target_logit=score)


@register
class LRPEpsilon(_LRPBase):
    """LRP-epsilon: relevance redistributed in proportion to each input's contribution z_ij,
    with a small stabiliser epsilon, in every layer.

    Bach et al. 2015, "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by
    Layer-Wise Relevance Propagation". With a tiny epsilon it equals gradient x input on
    ReLU networks and is as noisy; biases absorb part of the relevance. BatchNorm is folded
    into the preceding layer and skip connections split relevance between their summands.
    Map: sum over channels (signed).
    """

    name = "lrp_epsilon"

    def conv_rule(self):
        return EpsilonRule(float(self.params["epsilon"]))


@register
class LRPAlphaBeta(_LRPBase):
    """LRP-alpha-beta composite: alpha-beta (default alpha=2, beta=1) on convolutions, epsilon
    on dense layers, the flat rule on the first layer.

    Bach et al. 2015; Montavon et al. 2019, "Layer-Wise Relevance Propagation: An Overview".
    Positive and negative evidence are weighted separately; maps are sparse but the choice of
    alpha is arbitrary and biases are ignored in the convolutions. Map: sum over channels.
    """

    name = "lrp_alpha_beta"

    def conv_rule(self):
        return AlphaBetaRule(float(self.params["alpha"]), float(self.params["beta"]))

    def first_rule(self):
        return FlatRule()


@register
class LRPZPlusFlat(_LRPBase):
    """LRP epsilon-z+-flat composite: z-plus on convolutions, epsilon on dense layers, flat on
    the first layer (Zennit's EpsilonPlusFlat).

    Kohlbrenner et al. 2020, "Towards Best Practice in Explaining Neural Network Decisions with
    LRP". Only positive evidence is propagated through the convolutions, so the map is
    non-negative there and tends to be less class-specific; biases are ignored in them.
    Map: sum over channels.
    """

    name = "lrp_zplus_flat"

    def conv_rule(self):
        return AlphaBetaRule(1.0, 0.0)

    def first_rule(self):
        return FlatRule()
