"""One engine for modified-backprop rules (guided backprop, deconvnet, LRP, DeepLIFT).

A :class:`Rule` replaces the backward pass of one module *call*: the module still computes its
forward output, but the gradient that flows from its output to its inputs is whatever the rule
returns. Rules are attached to modules (usually chosen by type, see :func:`rules_by_type`)
inside :func:`rules_applied`, a context manager that removes every hook and restores every
attribute it touched even when the body raises, so the model is bit-identical afterwards.

How a call is rewired (the design follows Zennit's hooks, simplified):

* a forward pre-hook remembers the original inputs (with their autograd history) and hands
  the module *detached* inputs, so the module's own graph is never built;
* a forward hook returns ``_RuleFunction.apply(call, output, *original_inputs)``: a node whose
  forward is the identity on ``output`` and whose backward is ``rule.backward``.

Two situations that break other libraries are handled on purpose:

* in-place activations (``nn.ReLU(inplace=True)`` in torchvision) would overwrite the input a
  rule needs; modules with an ``inplace`` flag get it set to False for the duration and
  restored afterwards;
* one activation module called several times in one forward (torchvision's BasicBlock and
  Bottleneck call ``self.relu`` two or three times): every call has its own pre-hook/hook pair
  and its own autograd node, so nothing is keyed on the module alone.

Rules that need the module's forward again (LRP recomputes it with modified weights) call it
inside :func:`_bypassed`, which makes the hooks pass through.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import nn

from .hooks import hooks_removed_after

_state = threading.local()


def _is_bypassed() -> bool:
    return getattr(_state, "bypass", 0) > 0


@contextlib.contextmanager
def _bypassed() -> Iterator[None]:
    """Inside this block the rule hooks do nothing (used by rules that re-run a module)."""
    _state.bypass = getattr(_state, "bypass", 0) + 1
    try:
        yield
    finally:
        _state.bypass -= 1


class Rule:
    """Base class: how gradients pass from one module call's output to its inputs.

    ``backward`` receives the module, the detached input values of this call, and the
    gradient arriving at the output; it returns one gradient per input (None for inputs that
    do not need one). ``self.forward_module(module, *inputs)`` re-runs the module without the
    rule hooks, for rules that need its local Jacobian.
    """

    #: A rule that only transforms the gradient arriving at the module's output and then lets
    #: the module's own backward run sets this to that transform; it is then applied as a
    #: tensor hook on the native graph, without re-running the module in the backward pass.
    output_gradient: Optional[Callable[[torch.Tensor], torch.Tensor]] = None

    def backward(self, module: nn.Module, inputs: Tuple[torch.Tensor, ...], grad_output: torch.Tensor):
        raise NotImplementedError

    @staticmethod
    def forward_module(module: nn.Module, *inputs: torch.Tensor, params: Optional[Dict[str, torch.Tensor]] = None):
        with _bypassed():
            if params:
                return torch.func.functional_call(module, params, inputs)
            return module(*inputs)


class _Call:
    """One module call: the rule plus the autocast state it ran under (replayed in backward)."""

    __slots__ = ("module", "rule", "autocast")

    def __init__(self, module: nn.Module, rule: Rule, autocast):
        self.module, self.rule, self.autocast = module, rule, autocast


def _autocast_state(device_type: str):
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        enabled = torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()
    if not enabled:
        return None
    try:
        dtype = torch.get_autocast_dtype(device_type)
    except (AttributeError, TypeError):  # torch < 2.4
        dtype = torch.get_autocast_gpu_dtype() if device_type == "cuda" else torch.get_autocast_cpu_dtype()
    return (device_type, dtype)


class _RuleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, call: _Call, output: torch.Tensor, *inputs: torch.Tensor):
        ctx.call = call
        ctx.n_inputs = len(inputs)
        # Saved through autograd, so an in-place change of an input later raises instead of
        # silently giving a wrong attribution.
        ctx.save_for_backward(*inputs)
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        call: _Call = ctx.call
        inputs = tuple(t.detach() for t in ctx.saved_tensors)
        autocast = (
            torch.autocast(call.autocast[0], dtype=call.autocast[1]) if call.autocast else contextlib.nullcontext()
        )
        with torch.enable_grad(), autocast:
            grads = call.rule.backward(call.module, inputs, grad_output)
        if isinstance(grads, torch.Tensor):
            grads = (grads,)
        grads = tuple(
            None if g is None else g.detach().to(dtype=x.dtype) for g, x in zip(grads, inputs)
        )
        return (None, None) + grads


ModuleRules = Dict[nn.Module, Rule]


@contextlib.contextmanager
def rules_applied(model: nn.Module, module_rules: ModuleRules) -> Iterator[None]:
    """Attach ``module_rules`` (module -> rule) for the duration of the block.

    Hooks are removed and ``inplace`` flags restored on exit, also after an exception.
    """
    stashes: Dict[int, List[Tuple[torch.Tensor, ...]]] = {}
    inplace_changed: List[nn.Module] = []

    def pre_hook(module: nn.Module, inputs):
        if _is_bypassed() or module_rules[module].output_gradient is not None:
            return None
        if not all(isinstance(t, torch.Tensor) for t in inputs):
            stashes.setdefault(id(module), []).append(None)
            return None
        stashes.setdefault(id(module), []).append(tuple(inputs))
        return tuple(t.detach() for t in inputs)

    def make_hook(rule: Rule):
        def hook(module: nn.Module, _inputs, output):
            if _is_bypassed():
                return None
            if rule.output_gradient is not None:
                if isinstance(output, torch.Tensor) and output.requires_grad:
                    output.register_hook(rule.output_gradient)
                return None
            original = stashes[id(module)].pop()
            if original is None or not isinstance(output, torch.Tensor):
                return None
            if not torch.is_grad_enabled() or not any(t.requires_grad for t in original):
                return output
            call = _Call(module, rule, _autocast_state(output.device.type))
            return _RuleFunction.apply(call, output.detach(), *original)

        return hook

    with hooks_removed_after() as handles:
        try:
            for module, rule in module_rules.items():
                if getattr(module, "inplace", False) is True:
                    module.inplace = False
                    inplace_changed.append(module)
                handles.append(module.register_forward_pre_hook(pre_hook))
                handles.append(module.register_forward_hook(make_hook(rule)))
            yield
        finally:
            for module in inplace_changed:
                module.inplace = True
            stashes.clear()


Matcher = Union[Type[nn.Module], Tuple[Type[nn.Module], ...], Callable[[str, nn.Module], bool]]


def rules_by_type(model: nn.Module, table: Sequence[Tuple[Matcher, Optional[Rule]]]) -> ModuleRules:
    """Module -> rule for every sub-module matched by the first fitting entry of ``table``.

    A matcher is a module type (or tuple of types; subclasses match) or a callable
    ``(name, module) -> bool``. A ``None`` rule means: leave that module alone.
    """
    out: ModuleRules = {}
    for name, module in model.named_modules():
        for matcher, rule in table:
            if isinstance(matcher, (type, tuple)):
                hit = isinstance(module, matcher)
            else:
                hit = bool(matcher(name, module))
            if hit:
                if rule is not None:
                    out[module] = rule
                break
    return out


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters do not require grad inside the block (attributions need input gradients only,
    and skipping the weight gradients saves a third of the backward); flags restored on exit."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


# ----------------------------------------------------------------------------- activation rules

ACTIVATIONS: Tuple[Type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Sigmoid,
    nn.Tanh, nn.Softplus, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Mish,
)
RELU_LIKE: Tuple[Type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)


def _local_gradient(module: nn.Module, x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    """The ordinary vector-Jacobian product of an elementwise module at ``x``."""
    if type(module) is nn.ReLU:
        return grad_output * (x > 0).to(grad_output.dtype)
    xg = x.detach().requires_grad_(True)
    y = Rule.forward_module(module, xg)
    (g,) = torch.autograd.grad(y, xg, grad_output)
    return g


class PassRule(Rule):
    """Gradient passes unchanged (LRP's rule for activations: relevance flows through them)."""

    def backward(self, module, inputs, grad_output):
        return (grad_output,)


class GuidedBackpropRule(Rule):
    """Springenberg et al. 2015: the ordinary backward of the activation, applied to the
    positive part of the incoming gradient only."""

    # clamp(g) followed by the activation's own backward: a tensor hook on the output.
    output_gradient = staticmethod(lambda grad: grad.clamp(min=0))

    def backward(self, module, inputs, grad_output):
        return (_local_gradient(module, inputs[0], grad_output.clamp(min=0)),)


class DeconvnetRule(Rule):
    """Zeiler & Fergus 2014: the backward ReLU is a ReLU of the incoming signal; the forward
    activation pattern is ignored."""

    def backward(self, module, inputs, grad_output):
        return (grad_output.clamp(min=0),)


class RescaleRule(Rule):
    """DeepLIFT's rescale rule (Shrikumar et al. 2017) for elementwise nonlinearities.

    The batch holds the inputs in its first half and their references in the second half; the
    multiplier ``(f(x) - f(x_ref)) / (x - x_ref)`` replaces the local gradient (the ordinary
    gradient where ``|x - x_ref| < eps``, as in Captum).
    """

    def __init__(self, eps: float = 1e-10):
        self.eps = eps

    def backward(self, module, inputs, grad_output):
        x = inputs[0]
        half = x.shape[0] // 2
        y = self.forward_module(module, x)
        dx = x[:half] - x[half:]
        dy = y[:half] - y[half:]
        grad = _local_gradient(module, x, torch.ones_like(grad_output))
        multiplier = torch.where(dx.abs() < self.eps, grad[:half],
                                 dy / torch.where(dx.abs() < self.eps, torch.ones_like(dx), dx))
        return (grad_output * torch.cat([multiplier, multiplier]),)


# ----------------------------------------------------------------------------- LRP rules
# Convention (as in Zennit): the "gradient" that flows backwards *is* the relevance. The
# output's gradient is seeded with the target logit, every rule maps the relevance of a
# layer's output to the relevance of its inputs, and what arrives at the input is the
# relevance map itself (no final multiplication by the input).


def _stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    sign = torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))
    return z + eps * sign


def _param_dict(module: nn.Module, weight_fn=None, bias_fn=None, zero_bias: bool = False):
    params: Dict[str, torch.Tensor] = {}
    w = getattr(module, "weight", None)
    if isinstance(w, torch.Tensor):
        params["weight"] = weight_fn(w) if weight_fn else w
    b = getattr(module, "bias", None)
    if isinstance(b, torch.Tensor):
        params["bias"] = torch.zeros_like(b) if zero_bias else (bias_fn(b) if bias_fn else b)
    return params


class EpsilonRule(Rule):
    """LRP-epsilon (Bach et al. 2015): ``R_i = x_i * sum_j w_ij R_j / (z_j + eps sign(z_j))``.

    Works for any module that is linear (or affine) in its inputs: conv, linear, average
    pooling, an unfolded BatchNorm and :class:`~generator.engine.canonizers.ResidualAdd`
    (there it splits relevance between the summands in proportion to their values).
    ``zero_bias`` leaves biases out of the denominator, which makes the rule conserve relevance.
    """

    def __init__(self, epsilon: float = 1e-6, zero_bias: bool = False):
        self.epsilon, self.zero_bias = epsilon, zero_bias

    def backward(self, module, inputs, grad_output):
        xs = tuple(x.requires_grad_(True) for x in (t.detach() for t in inputs))
        params = _param_dict(module, zero_bias=self.zero_bias)
        z = self.forward_module(module, *xs, params=params or None)
        s = grad_output / _stabilize(z, self.epsilon)
        grads = torch.autograd.grad(z, xs, s)
        return tuple(x * g for x, g in zip(xs, grads))


class AlphaBetaRule(Rule):
    """LRP-alpha-beta (Bach et al. 2015; Montavon et al. 2019), biases left out.

    Positive contributions ``x+ w+`` and ``x- w-`` get weight alpha, negative ones ``x+ w-`` and
    ``x- w+`` weight beta; ``alpha - beta = 1`` keeps relevance conserved. ``AlphaBetaRule(1, 0)``
    is the z-plus rule.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, epsilon: float = 1e-6):
        if abs(alpha - beta - 1.0) > 1e-9:
            raise ValueError(f"alpha - beta must be 1 (got alpha={alpha}, beta={beta})")
        self.alpha, self.beta, self.epsilon = alpha, beta, epsilon

    def _part(self, module, xp, xn, w_for_xp, w_for_xn, grad_output):
        xp = xp.detach().requires_grad_(True)
        xn = xn.detach().requires_grad_(True)
        z1 = self.forward_module(module, xp, params=_param_dict(module, weight_fn=w_for_xp, zero_bias=True))
        z2 = self.forward_module(module, xn, params=_param_dict(module, weight_fn=w_for_xn, zero_bias=True))
        z = z1 + z2
        s = grad_output / _stabilize(z, self.epsilon)
        g1, g2 = torch.autograd.grad((z1, z2), (xp, xn), (s, s))
        return xp * g1 + xn * g2

    def backward(self, module, inputs, grad_output):
        x = inputs[0]
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        pos = lambda w: w.clamp(min=0)  # noqa: E731
        neg = lambda w: w.clamp(max=0)  # noqa: E731
        r = self.alpha * self._part(module, xp, xn, pos, neg, grad_output)
        if self.beta:
            r = r - self.beta * self._part(module, xp, xn, neg, pos, grad_output)
        return (r,)


class FlatRule(Rule):
    """Flat rule (Lapuschkin et al. 2019): relevance spread uniformly over the receptive field,
    independent of input and weights; used for the pixel layer, where inputs are not
    activations."""

    def __init__(self, epsilon: float = 1e-6):
        self.epsilon = epsilon

    def backward(self, module, inputs, grad_output):
        ones = torch.ones_like(inputs[0]).requires_grad_(True)
        params = _param_dict(module, weight_fn=torch.ones_like, zero_bias=True)
        z = self.forward_module(module, ones, params=params)
        s = grad_output / _stabilize(z, self.epsilon)
        (g,) = torch.autograd.grad(z, ones, s)
        return (g,)
