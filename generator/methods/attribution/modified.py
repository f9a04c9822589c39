"""Modified-backprop methods built on :mod:`generator.engine.rules`: deconvnet, guided
backprop, DeepLIFT (rescale)."""

from __future__ import annotations

import torch

from ...engine.batching import input_gradient, run_chunked, select_target
from ...engine.rules import (
    ACTIVATIONS,
    RELU_LIKE,
    DeconvnetRule,
    GuidedBackpropRule,
    RescaleRule,
    rules_applied,
    rules_by_type,
)
from .base import AttributionMethod, reduce_channels, register


def _rule_gradients(method: AttributionMethod, x, target, rule, types=RELU_LIKE):
    grads = torch.empty_like(x, dtype=torch.float32)
    with rules_applied(method.model, rules_by_type(method.model, [(types, rule)])):
        def chunk(a: int, b: int) -> None:
            grads[a:b] = input_gradient(method.model, x[a:b], target[a:b], method.precision)[0]

        run_chunked(x.shape[0], method.max_batch, chunk)
    return grads


def guided_backprop_gradients(method: AttributionMethod, x, target) -> torch.Tensor:
    return _rule_gradients(method, x, target, GuidedBackpropRule())


@register
class GuidedBackprop(AttributionMethod):
    """Guided backpropagation: the gradient with negative signals stopped at every ReLU.

    Springenberg et al. 2015, "Striving for Simplicity: The All Convolutional Net". The maps
    look sharp, but they largely reconstruct the image (edges) and barely change with the
    class or the weights (Adebayo et al. 2018; Nie et al. 2018). Only ReLU/ReLU6 *modules*
    are modified (functional relu calls are not). Map: max over channels of |gradient|.
    """

    name = "guided_backprop"
    signed = False
    reduction = "max_abs"

    def _attribute(self, x, target):
        raw = guided_backprop_gradients(self, x, target)
        return self._result(reduce_channels(raw, "max_abs"), target, raw)


@register
class Deconvnet(AttributionMethod):
    """Deconvnet: the backward pass with every ReLU applied to the backward signal instead of
    masked by the forward activation.

    Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks". Like guided
    backprop it is largely class-insensitive and mostly shows image structure; only ReLU/ReLU6
    modules are modified. Map: max over channels of |gradient|.
    """

    name = "deconvnet"
    signed = False
    reduction = "max_abs"

    def _attribute(self, x, target):
        raw = _rule_gradients(self, x, target, DeconvnetRule())
        return self._result(reduce_channels(raw, "max_abs"), target, raw)


@register
class DeepLift(AttributionMethod):
    """DeepLIFT with the rescale rule: (x - reference) times multipliers that replace each
    nonlinearity's gradient by its secant slope between input and reference.

    Shrikumar, Greenside & Kundaje 2017, "Learning Important Features Through Propagating
    Activation Differences". Summation-to-delta holds for networks of linear layers and
    elementwise activation modules (the gap is reported); max-pooling passes the ordinary
    gradient here (a simplification), and the result depends on the reference.
    Map: sum over channels (signed). References as for integrated gradients.
    """

    name = "deeplift"
    signed = True
    reduction = "sum"

    def _attribute(self, x, target):
        ref = self.make_baseline(x, self.params["baseline"], seed=int(self.params["seed"]),
                                 blur_sigma=float(self.params["blur_sigma"]))
        raw = torch.empty_like(x, dtype=torch.float32)
        delta = torch.empty(x.shape[0], device=x.device)
        rules = rules_by_type(self.model, [(ACTIVATIONS, RescaleRule())])

        def seed(logits, tgt):
            s = torch.zeros_like(logits)
            half = logits.shape[0] // 2
            s[:half].scatter_(1, tgt[:half].view(-1, 1), 1.0)
            return s

        with rules_applied(self.model, rules):
            def chunk(a: int, b: int) -> None:
                both = torch.cat([x[a:b], ref[a:b]])
                tt = torch.cat([target[a:b], target[a:b]])
                g, logits = input_gradient(self.model, both, tt, self.precision, grad_seed=seed)
                n = b - a
                raw[a:b] = (x[a:b] - ref[a:b]).float() * g[:n]
                delta[a:b] = select_target(logits[:n], target[a:b]) - select_target(logits[n:], target[a:b])

            run_chunked(x.shape[0], max(1, self.max_batch // 2), chunk)
        gap = (raw.flatten(1).sum(1) - delta).abs()
        return self._result(raw.sum(1), target, raw, completeness_gap=gap / delta.abs().clamp(min=1e-6), delta=delta)
