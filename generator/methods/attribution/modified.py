"""Modified-backprop methods: deconvnet, guided backprop, DeepLIFT (rescale).

Each is defined by a rule at the network's non-linearities, so each first finds them all
(:func:`generator.engine.activations.find_nonlinearities`: modules and function calls alike,
from one traced forward pass) and refuses, with :class:`~generator.capability.Unsupported` and
a one-line reason, a network where its rule is undefined. Running anyway would return the plain
gradient wherever the rule does not apply, and the page would present that as the method.

The rules are applied by intercepting the activation calls during the forward pass
(:func:`generator.engine.activations.activation_rules`), so ``F.relu`` at the end of
torchvision's DenseNet gets the rule as well as ``nn.ReLU`` modules, and the model is never
modified (no hooks, no flags, no canonized copy).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ...capability import Unsupported
from ...engine.activations import (
    ELEMENTWISE_KINDS,
    RELU_KINDS,
    ClampedGradient,
    Nonlinearities,
    RectifiedGradient,
    SecantSlope,
    activation_rules,
    example_input,
    find_nonlinearities,
    rules_for,
)
from ...engine.batching import input_gradient, run_chunked, select_target
from .base import AttributionMethod, SpecOrLayer, reduce_channels, register

#: Non-linear operations that are not elementwise activations and for which the rescale rule
#: defines no multiplier; max-pooling is left out on purpose (it passes the gradient, a stated
#: simplification).
DEEPLIFT_UNDEFINED = ("attention", "softmax", "normalization", "product", "gating", "math")


def relu_rule_refusal(found: Nonlinearities, title: str) -> Optional[str]:
    """Why a ReLU rule (guided backprop, deconvnet) is undefined on the network, or None.

    Defined means: every elementwise activation the network applies is a ReLU or ReLU6 (module
    or function call; all of them get the rule), and there is at least one.
    """
    if found.scripted:
        return (f"{title} changes the backward pass of every ReLU, and nothing can reach inside a TorchScript "
                f"module ({found.describe_scripted()}); load the model from its Python code to use it")
    acts = found.activation_kinds()
    other = [k for k in acts if k not in RELU_KINDS]
    if other:
        return (f"{title} is defined for ReLU networks; this network also applies {found.describe(other)}, where "
                f"the rule is undefined (the map would be the plain gradient there)")
    if not acts:
        return f"{title} is defined at ReLUs; this network applies none, so the map would be the plain gradient"
    return None


def require_relu_rule(model: nn.Module, example: Optional[torch.Tensor], title: str) -> Nonlinearities:
    """:func:`relu_rule_refusal` as an exception (:class:`Unsupported`); the trace otherwise."""
    found = find_nonlinearities(model, example)
    reason = relu_rule_refusal(found, title)
    if reason:
        raise Unsupported(reason)
    return found


def _relu_rules(rule):
    return rules_for(RELU_KINDS, rule)


def _rule_gradients(method: AttributionMethod, x: torch.Tensor, target: torch.Tensor, rules) -> torch.Tensor:
    grads = torch.empty_like(x, dtype=torch.float32)

    def chunk(a: int, b: int) -> None:
        with activation_rules(rules):
            grads[a:b] = input_gradient(method.model, x[a:b], target[a:b], method.precision)[0]

    run_chunked(x.shape[0], method.max_batch, chunk)
    return grads


def guided_backprop_gradients(method: AttributionMethod, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Guided-backprop input gradients for any bound method (Guided Grad-CAM uses it too).

    Raises :class:`Unsupported` on a network that is not a ReLU network; the check is made once
    per method object (on the first image of the first batch) unless it was made when binding.
    """
    if not getattr(method, "_relu_rule_checked", False):
        require_relu_rule(method.model, x[:1], "guided backprop")
        method._relu_rule_checked = True  # noqa: SLF001 - a memo on the caller's method object
    return _rule_gradients(method, x, target, _relu_rules(ClampedGradient()))


class _RuleBound(AttributionMethod):
    """A method that checks, when it is bound, that its rule is defined on the model.

    With a :class:`~generator.models.spec.ModelSpec` the check traces one input of the spec's
    size at once; a TorchScript model is refused at once too (its graph is read, nothing run).
    Otherwise (or if that trace fails, e.g. the spec's size does not suit the model) the first
    image of the first batch is traced instead.
    """

    title = ""

    def __init__(self, model: nn.Module, spec_or_layer: SpecOrLayer = None, **params):
        super().__init__(model, spec_or_layer, **params)
        self._rule_checked = False
        found = None
        if isinstance(model, torch.jit.ScriptModule):
            found = find_nonlinearities(model, None)
        elif self.spec is not None:
            try:
                found = find_nonlinearities(model, example_input(model, self.spec.input_size))
            except Exception:  # noqa: BLE001 - checked on the real input instead, where errors surface
                found = None
        if found is not None:
            self._check(found)

    def refusal(self, found: Nonlinearities) -> Optional[str]:
        raise NotImplementedError

    def _check(self, found: Nonlinearities) -> None:
        reason = self.refusal(found)
        if reason:
            raise Unsupported(reason)
        self._rule_checked = True

    def _ensure_checked(self, x: torch.Tensor) -> None:
        if not self._rule_checked:
            self._check(find_nonlinearities(self.model, x[:1]))


@register
class GuidedBackprop(_RuleBound):
    """Guided backpropagation: the gradient with negative signals stopped at every ReLU.

    Springenberg et al. 2015, "Striving for Simplicity: The All Convolutional Net". The maps
    look sharp, but they largely reconstruct the image (edges) and barely change with the
    class or the weights (Adebayo et al. 2018; Nie et al. 2018). Every ReLU and ReLU6 gets the
    rule, as a module or as a function call; a network that applies any other activation
    (GELU, SiLU, sigmoid gates ...) or is TorchScript is refused as not applicable.
    Map: max over channels of |gradient|.
    """

    name = "guided_backprop"
    signed = False
    reduction = "max_abs"
    title = "guided backprop"

    def refusal(self, found: Nonlinearities) -> Optional[str]:
        return relu_rule_refusal(found, self.title)

    def _attribute(self, x, target):
        self._ensure_checked(x)
        raw = _rule_gradients(self, x, target, _relu_rules(ClampedGradient()))
        return self._result(reduce_channels(raw, "max_abs"), target, raw)


@register
class Deconvnet(_RuleBound):
    """Deconvnet: the backward pass with every ReLU applied to the backward signal instead of
    masked by the forward activation.

    Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks". Like guided
    backprop it is largely class-insensitive and mostly shows image structure. Max-pooling
    routes the signal to the maximum, as the paper's switches do. Every ReLU and ReLU6 gets
    the rule (modules and function calls); other activations and TorchScript are refused as
    not applicable. Map: max over channels of |gradient|.
    """

    name = "deconvnet"
    signed = False
    reduction = "max_abs"
    title = "deconvnet"

    def refusal(self, found: Nonlinearities) -> Optional[str]:
        return relu_rule_refusal(found, self.title)

    def _attribute(self, x, target):
        self._ensure_checked(x)
        raw = _rule_gradients(self, x, target, _relu_rules(RectifiedGradient()))
        return self._result(reduce_channels(raw, "max_abs"), target, raw)


@register
class DeepLift(_RuleBound):
    """DeepLIFT with the rescale rule: (x - reference) times multipliers that replace each
    nonlinearity's gradient by its secant slope between input and reference.

    Shrikumar, Greenside & Kundaje 2017, "Learning Important Features Through Propagating
    Activation Differences". The rules are defined for linear layers and elementwise
    activations; every elementwise activation gets the rescale rule, module or function call.
    A network with normalisation layers (LayerNorm, GroupNorm), softmax or attention, products
    of two activations (gates) or elementwise maths on activations is refused as not
    applicable, as is TorchScript. Summation-to-delta then holds up to max-pooling, which
    passes the ordinary gradient here (a simplification; the gap is reported), and the result
    depends on the reference. Map: sum over channels (signed). References as for integrated
    gradients.
    """

    name = "deeplift"
    signed = True
    reduction = "sum"
    title = "DeepLIFT"

    def refusal(self, found: Nonlinearities) -> Optional[str]:
        if found.scripted:
            return ("DeepLIFT replaces the derivative of every activation, and nothing can reach inside a "
                    f"TorchScript module ({found.describe_scripted()}); load the model from its Python code to use it")
        undefined = [k for k in found.kinds() if k in DEEPLIFT_UNDEFINED]
        if undefined:
            return ("DeepLIFT's rescale rule is defined for elementwise activations between linear layers; this "
                    f"network also applies {found.describe(undefined)}, for which it defines no multiplier "
                    "(summation-to-delta would not hold)")
        return None

    def _attribute(self, x, target):
        self._ensure_checked(x)
        ref = self.make_baseline(x, self.params["baseline"], seed=int(self.params["seed"]),
                                 blur_sigma=float(self.params["blur_sigma"]))
        raw = torch.empty_like(x, dtype=torch.float32)
        delta = torch.empty(x.shape[0], device=x.device)

        def seed(logits, tgt):
            s = torch.zeros_like(logits)
            half = logits.shape[0] // 2
            s[:half].scatter_(1, tgt[:half].view(-1, 1), 1.0)
            return s

        def chunk(a: int, b: int) -> None:
            both = torch.cat([x[a:b], ref[a:b]])
            tt = torch.cat([target[a:b], target[a:b]])
            with activation_rules(rules_for(ELEMENTWISE_KINDS, SecantSlope(batch=2 * (b - a)))):
                g, logits = input_gradient(self.model, both, tt, self.precision, grad_seed=seed)
            n = b - a
            raw[a:b] = (x[a:b] - ref[a:b]).float() * g[:n]
            delta[a:b] = select_target(logits[:n], target[a:b]) - select_target(logits[n:], target[a:b])

        run_chunked(x.shape[0], max(1, self.max_batch // 2), chunk)
        gap = (raw.flatten(1).sum(1) - delta).abs()
        return self._result(raw.sum(1), target, raw, completeness_gap=gap / delta.abs().clamp(min=1e-6), delta=delta)
