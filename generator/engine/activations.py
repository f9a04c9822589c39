"""Every non-linearity a network applies, and activation rules that reach all of them.

Modified-backprop methods are defined by what they do at each non-linearity: guided
backpropagation (Springenberg et al. 2015) and deconvnet (Zeiler & Fergus 2014) change the
backward pass of every ReLU, DeepLIFT's rescale rule (Shrikumar et al. 2017) replaces the
derivative of every elementwise activation by a secant slope. Attaching a rule to ``nn.ReLU``
*modules* misses every activation that is a function call (``F.relu`` at the end of
torchvision's DenseNet, ``x.sigmoid()`` in a gate, timm's own GELU class) and says nothing
about activations the rule is not defined for (GELU, SiLU ...): the method then silently
returns the plain gradient there. This module does two things instead:

* :func:`find_nonlinearities` runs one forward pass of an example input under a
  :class:`torch.overrides.TorchFunctionMode` that sees every torch call, whether made by a
  module's ``forward`` or written inline, and records each non-linear one with the innermost
  module it happened in (a stack kept by forward pre-hooks and hooks, all removed afterwards).
  It records elementwise activations and the other non-linear operations that matter to
  DeepLIFT (normalisation, softmax and attention, products of two input-dependent tensors,
  max-pooling, elementwise maths). Only calls on tensors that depend on the input count: a
  ``sigmoid`` of a parameter is a constant of the forward pass.
* :func:`activation_rules` applies an :class:`ActivationRule` to every call of the chosen
  activation kinds during a forward pass, by the same interception: modules and function calls
  alike, in-place calls included, and nothing on the model is changed (no hooks, no flags), so
  there is nothing to restore.

A TorchScript module runs its own interpreter: neither hooks nor the interception reach inside
it. Its activations are read from its inlined graph instead, so a method can say what it would
have had to modify.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..capability import Unsupported
from .hooks import StopForward, hooks_removed_after

# ----------------------------------------------------------------------------- what is a non-linearity

#: Elementwise activations by the name of the torch function (without leading/trailing
#: underscores: ``relu_`` and ``F._threshold`` are ``relu`` and ``threshold``).
ELEMENTWISE: Dict[str, str] = {
    name: name for name in (
        "relu", "relu6", "hardtanh", "leaky_relu", "prelu", "rrelu", "elu", "selu", "celu", "gelu", "silu",
        "mish", "sigmoid", "tanh", "softplus", "softsign", "hardswish", "hardsigmoid", "logsigmoid",
        "tanhshrink", "threshold", "hardshrink", "softshrink",
    )
}
ELEMENTWISE["log_sigmoid"] = "logsigmoid"
#: Kinds that are elementwise activations (what :class:`SecantSlope` may be applied to).
ELEMENTWISE_KINDS: Tuple[str, ...] = tuple(sorted({*ELEMENTWISE.values(), "relu6"}))
#: What guided backprop and deconvnet are defined on.
RELU_KINDS: Tuple[str, ...] = ("relu", "relu6")

#: Non-elementwise non-linear operations, by function name.
_STRUCTURAL: Dict[str, str] = {
    **{n: "softmax" for n in ("softmax", "log_softmax", "softmin")},
    **{n: "attention" for n in ("scaled_dot_product_attention", "multi_head_attention_forward")},
    **{n: "normalization" for n in ("layer_norm", "group_norm", "instance_norm", "rms_norm", "normalize",
                                    "local_response_norm")},
    **{n: "max_pool" for n in ("max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices",
                               "max_pool2d_with_indices", "max_pool3d_with_indices", "adaptive_max_pool1d",
                               "adaptive_max_pool2d", "adaptive_max_pool3d", "adaptive_max_pool1d_with_indices",
                               "adaptive_max_pool2d_with_indices", "adaptive_max_pool3d_with_indices",
                               "fractional_max_pool2d", "fractional_max_pool3d")},
    **{n: "gating" for n in ("glu",)},
}
#: Products: non-linear when two or more operands depend on the input (gates, attention).
_PRODUCTS = frozenset(("mul", "multiply", "rmul", "imul", "matmul", "rmatmul", "bmm", "mm", "einsum", "baddbmm",
                       "addcmul", "addcdiv", "bilinear", "cosine_similarity"))
_DIVISIONS = frozenset(("div", "divide", "true_divide", "truediv", "itruediv", "floor_divide"))
_REVERSED_DIVISIONS = frozenset(("rdiv", "rtruediv"))
#: Elementwise maths on an input-dependent tensor (e.g. a hand-written LayerNorm or GELU).
_MATH = frozenset(("exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "erf", "erfc", "sqrt", "rsqrt", "pow",
                   "square", "reciprocal", "abs", "sin", "cos", "sinh", "cosh", "atan", "sign", "clamp", "clip",
                   "clamp_min", "clamp_max", "maximum", "minimum", "fmax", "fmin"))

#: How kinds are written in reasons.
DISPLAY: Dict[str, str] = {
    "relu": "ReLU", "relu6": "ReLU6", "leaky_relu": "LeakyReLU", "prelu": "PReLU", "rrelu": "RReLU", "elu": "ELU",
    "selu": "SELU", "celu": "CELU", "gelu": "GELU", "silu": "SiLU (swish)", "mish": "Mish", "sigmoid": "sigmoid",
    "tanh": "tanh", "softplus": "softplus", "hardswish": "hardswish", "hardsigmoid": "hardsigmoid",
    "hardtanh": "hardtanh", "softmax": "softmax", "attention": "attention", "normalization": "normalization",
    "max_pool": "max-pooling", "product": "product of two activations", "math": "elementwise maths",
    "gating": "GLU gating",
}


def _display(kind: str) -> str:
    return DISPLAY.get(kind, kind)


def _name(func: Any) -> str:
    return str(getattr(func, "__name__", "")).strip("_")


def _arg(args: Sequence[Any], kwargs: Mapping[str, Any], index: int, key: str, default: Any = None) -> Any:
    if key in kwargs:
        return kwargs[key]
    return args[index] if len(args) > index else default


def _depends(t: Any) -> bool:
    """Whether ``t`` carries the input's autograd history (parameters are frozen in a trace)."""
    return isinstance(t, torch.Tensor) and t.requires_grad


def _tensors(args: Sequence[Any]) -> List[torch.Tensor]:
    out: List[torch.Tensor] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(t for t in a if isinstance(t, torch.Tensor))
    return out


def activation_kind(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Optional[str]:
    """The elementwise activation kind of one torch call (``'relu'``, ``'gelu'`` ...), or None.

    ``hardtanh`` between 0 and 6 is ``relu6`` (that is how ``nn.ReLU6`` computes it).
    """
    name = _name(func)
    kind = ELEMENTWISE.get(name)
    if kind == "hardtanh":
        low, high = _arg(args, kwargs, 1, "min_val", -1.0), _arg(args, kwargs, 2, "max_val", 1.0)
        if low == 0 and high == 6:
            return "relu6"
    return kind


def nonlinear_kind(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Optional[str]:
    """The kind of non-linearity of one torch call in a trace, or None when it is linear in
    the input (or does not touch it). Elementwise activations give their own kind."""
    first = args[0] if args else kwargs.get("input")
    kind = activation_kind(func, args, kwargs)
    if kind is not None:
        return kind if _depends(first) else None
    name = _name(func)
    if name in _STRUCTURAL:
        return _STRUCTURAL[name] if any(_depends(t) for t in _tensors(args)) else None
    if name == "batch_norm":  # affine with running statistics; batch statistics are not
        return "normalization" if _arg(args, kwargs, 5, "training", False) and _depends(first) else None
    if name in _PRODUCTS:
        operands = _tensors([*args, *kwargs.values()])
        return "product" if sum(_depends(t) for t in operands) >= 2 else None
    if name in _DIVISIONS or name in _REVERSED_DIVISIONS:
        a, b = first, _arg(args, kwargs, 1, "other")
        dividend, divisor = (a, b) if name in _DIVISIONS else (b, a)
        if _depends(divisor):
            return "product" if _depends(dividend) else "math"
        return None
    if name == "rpow":  # scalar ** tensor
        return "math" if _depends(first) else None
    if name in _MATH:
        return "math" if _depends(first) else None
    return None


# ----------------------------------------------------------------------------- the trace


@dataclass(frozen=True)
class NonlinearCall:
    """One non-linear call in the traced forward pass.

    ``module``: dotted name of the innermost module whose ``forward`` made the call ('' for the
    root); ``in_leaf``: that module has no children, so the call *is* its forward (an activation
    module such as ``nn.GELU`` or timm's ``GELU``), as opposed to a function call written inside
    a block's ``forward``.
    """

    kind: str
    function: str
    module: str
    module_type: str
    in_leaf: bool


@dataclass
class Nonlinearities:
    """What :func:`find_nonlinearities` found.

    ``calls``: every non-linear call of the traced forward pass, in order. ``scripted``: dotted
    names of TorchScript modules (``''`` when the whole model is one) with the activation kinds
    their inlined graphs apply, counted; neither hooks nor call interception reach inside them.
    """

    calls: Tuple[NonlinearCall, ...] = ()
    scripted: Dict[str, Counter] = field(default_factory=dict)

    def kinds(self) -> Counter:
        """Calls per kind."""
        return Counter(c.kind for c in self.calls)

    def activation_kinds(self) -> Counter:
        """Calls per elementwise activation kind."""
        return Counter(c.kind for c in self.calls if c.kind in ELEMENTWISE_KINDS)

    def describe(self, kinds: Iterable[str]) -> str:
        """One phrase naming the calls of ``kinds`` and where they happen, e.g.
        ``GELU (18 calls in 18 nn.GELU modules) and ReLU (1 functional call in DenseNet.forward)``."""
        parts = []
        for kind in sorted(set(kinds), key=lambda k: (-self.kinds()[k], k)):
            calls = [c for c in self.calls if c.kind == kind]
            if not calls:
                continue
            pieces = []
            leaf = [c for c in calls if c.in_leaf]
            if leaf:
                modules = {c.module for c in leaf}
                types = "/".join(sorted({c.module_type for c in leaf}))
                n = len(leaf)
                pieces.append(f"{n} call{'s' * (n != 1)} in {len(modules)} {types} module{'s' * (len(modules) != 1)}")
            inline = [c for c in calls if not c.in_leaf]
            if inline:
                where = ", ".join(sorted({f"{c.module_type}.forward" for c in inline})[:3])
                n = len(inline)
                pieces.append(f"{n} functional call{'s' * (n != 1)} in {where}")
            parts.append(f"{_display(kind)} ({'; '.join(pieces)})")
        return _join(parts)

    def describe_scripted(self) -> str:
        """E.g. ``the TorchScript model applies ReLU x17``."""
        found: Counter = Counter()
        for counts in self.scripted.values():
            found.update(counts)
        what = _join([f"{_display(k)} x{n}" for k, n in found.most_common()]) or "no activation we recognise"
        if list(self.scripted) == [""]:
            return f"the TorchScript model applies {what}"
        names = ", ".join(repr(n) for n in self.scripted)
        return f"TorchScript module{'s' * (len(self.scripted) > 1)} {names} apply {what}"


def _join(parts: Sequence[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _module_type(module: nn.Module) -> str:
    cls = type(module)
    if isinstance(module, torch.jit.ScriptModule):
        return str(getattr(module, "original_name", cls.__name__))
    return f"nn.{cls.__name__}" if cls.__module__.startswith("torch.nn.") else cls.__name__


def scripted_modules(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The outermost TorchScript modules in ``model`` (the model itself when it is one)."""
    out: List[Tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, torch.jit.ScriptModule) and not any(name.startswith(p + ".") or p == ""
                                                                  for p, _ in out):
            out.append((name, module))
    return out


def _graph_activations(module: nn.Module) -> Counter:
    """Activation kinds counted from a TorchScript module's inlined graph (``aten::relu`` ...)."""
    counts: Counter = Counter()
    try:
        graph = module.inlined_graph
    except (AttributeError, RuntimeError):
        return counts

    def walk(block) -> None:
        for node in block.nodes():
            kind = node.kind()
            if kind.startswith("aten::"):
                found = ELEMENTWISE.get(kind[len("aten::"):].strip("_"))
                if found == "hardtanh" and _constants(node)[1:3] == [0, 6]:
                    found = "relu6"  # how nn.ReLU6 compiles
                if found:
                    counts[found] += 1
            for sub in node.blocks():
                walk(sub)

    walk(graph)
    return counts


def _constants(node) -> List[Any]:
    """The constant inputs of a TorchScript graph node (None where an input is not constant)."""
    out: List[Any] = []
    for value in node.inputs():
        try:
            out.append(value.toIValue())
        except RuntimeError:
            out.append(None)
    return out


class _Recorder(TorchFunctionMode):
    """Records non-linear calls together with the innermost running module."""

    def __init__(self, stack: List[Tuple[str, nn.Module]]):
        super().__init__()
        self.stack = stack
        self.calls: List[NonlinearCall] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = nonlinear_kind(func, args, kwargs)
        if kind is not None:
            name, module = self.stack[-1]
            leaf = next(iter(module.children()), None) is None
            self.calls.append(NonlinearCall(kind, _name(func), name, _module_type(module), leaf))
        return func(*args, **kwargs)


def find_nonlinearities(model: nn.Module, example: Optional[torch.Tensor],
                        stop_at: Optional[nn.Module] = None) -> Nonlinearities:
    """Every non-linearity ``model`` applies to ``example`` (one forward pass, eval mode); with
    ``stop_at``, only those applied up to that module's output (what lies below a layer).

    Nothing of the model changes: hooks are removed, train/eval flags and ``requires_grad``
    restored, even when the forward raises. ``example`` may be None for a model that is
    entirely TorchScript (then only its graph is read).
    """
    from .batching import eval_mode
    from .rules import frozen_parameters

    scripted = scripted_modules(model)
    found = Nonlinearities(scripted={name: _graph_activations(m) for name, m in scripted})
    if any(name == "" for name, _ in scripted) or example is None:
        return found
    inside = tuple(name + "." for name, _ in scripted)
    stack: List[Tuple[str, nn.Module]] = [("", model)]

    def push(name: str):
        def hook(module: nn.Module, _inputs) -> None:
            stack.append((name, module))
        return hook

    def pop(_module: nn.Module, _inputs, _output) -> None:
        if len(stack) > 1:
            stack.pop()

    recorder = _Recorder(stack)
    with hooks_removed_after() as handles, eval_mode(model), frozen_parameters(model):
        for name, module in model.named_modules():
            if not name or name.startswith(inside) or isinstance(module, torch.jit.ScriptModule):
                continue
            handles.append(module.register_forward_pre_hook(push(name)))
            handles.append(module.register_forward_hook(pop, always_call=True))
        if stop_at is not None:
            def stop(_module: nn.Module, _inputs: Any, _output: Any) -> None:
                raise StopForward
            handles.append(stop_at.register_forward_hook(stop))
        x = example.detach().clone().requires_grad_(True)
        with torch.enable_grad(), recorder:
            try:
                model(x)
            except StopForward:
                pass
    found.calls = tuple(recorder.calls)
    return found


def example_input(model: nn.Module, input_size: Sequence[int]) -> torch.Tensor:
    """One deterministic input of ``input_size`` (C,H,W) on the model's device and dtype."""
    param = next(iter(model.parameters()), None)
    if param is None:
        param = next(iter(model.buffers()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, *(int(v) for v in input_size), generator=g).to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------- applying rules


class ActivationCall:
    """One intercepted activation call: its input ``x`` and how to compute it.

    ``native()`` runs the call exactly as written (in place when it was in place);
    ``pure(t)`` computes the same activation of ``t`` without touching ``t``.
    """

    __slots__ = ("func", "args", "kwargs", "kind", "mode")

    def __init__(self, func, args: Tuple[Any, ...], kwargs: Dict[str, Any], kind: str, mode: "_RuleMode"):
        self.func, self.args, self.kwargs, self.kind, self.mode = func, args, kwargs, kind, mode

    @property
    def x(self) -> torch.Tensor:
        return self.args[0]

    @property
    def maybe_inplace(self) -> bool:
        name = str(getattr(self.func, "__name__", ""))
        return (name.endswith("_") and not name.endswith("__")) or self.kwargs.get("inplace") is True \
            or any(a is True for a in self.args[1:])

    def native(self) -> torch.Tensor:
        return self.func(*self.args, **self.kwargs)

    def pure(self, t: torch.Tensor) -> torch.Tensor:
        if self.maybe_inplace:
            t = t.clone()  # an in-place call on a copy is the out-of-place result
        with self.mode.bypassed():
            return self.func(t, *self.args[1:], **self.kwargs)


class ActivationRule:
    """How the backward pass of one activation call is replaced. ``apply`` computes the
    forward output (``call.native()``) and attaches the rule's backward to it."""

    def apply(self, call: ActivationCall) -> torch.Tensor:
        raise NotImplementedError


class _RuleMode(TorchFunctionMode):
    def __init__(self, rules: Mapping[str, ActivationRule]):
        super().__init__()
        self.rules = dict(rules)
        self._bypass = 0
        self.applied: Counter = Counter()

    @contextlib.contextmanager
    def bypassed(self) -> Iterator[None]:
        """Calls pass untouched (a rule's own backward computation runs inside this)."""
        self._bypass += 1
        try:
            yield
        finally:
            self._bypass -= 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._bypass:
            return func(*args, **kwargs)
        kind = activation_kind(func, args, kwargs)
        rule = self.rules.get(kind) if kind else None
        if rule is None or not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
            return func(*args, **kwargs)
        self.applied[kind] += 1
        return rule.apply(ActivationCall(func, tuple(args), dict(kwargs), kind, self))


@contextlib.contextmanager
def activation_rules(rules: Mapping[str, ActivationRule]) -> Iterator[Counter]:
    """Inside the block every call of an activation kind in ``rules`` (``'relu'``, ``'gelu'``
    ...) gets that rule, wherever it is made. Yields a counter of the calls ruled, by kind.

    Run only the model's forward and backward inside: the interception is per thread, not per
    model.
    """
    mode = _RuleMode(rules)
    with mode:
        yield mode.applied


def _dirty(ctx, x: torch.Tensor, y: torch.Tensor) -> None:
    """An in-place call returned its input: tell autograd the input was modified."""
    if y is x:
        ctx.mark_dirty(x)


class ClampedGradient(ActivationRule):
    """The activation's own backward applied to the positive part of the gradient arriving at
    its output: guided backpropagation's rule for ReLU (Springenberg et al. 2015). A tensor hook
    on the output, so the forward (in place or not) is untouched."""

    def apply(self, call: ActivationCall) -> torch.Tensor:
        y = call.native()
        if isinstance(y, torch.Tensor) and y.requires_grad:
            y.register_hook(lambda g: g.clamp(min=0))
        return y


class _Rectify(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, call: ActivationCall) -> torch.Tensor:
        y = call.native()
        _dirty(ctx, x, y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.clamp(min=0), None


class RectifiedGradient(ActivationRule):
    """The backward signal rectified, the forward activation pattern ignored: deconvnet's rule
    for ReLU (Zeiler & Fergus 2014)."""

    def apply(self, call: ActivationCall) -> torch.Tensor:
        return _Rectify.apply(call.x, call)


class _Rescale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, call: ActivationCall, eps: float) -> torch.Tensor:
        ctx.call, ctx.eps = call, eps
        if call.maybe_inplace:
            ctx.x0 = x.detach().clone()  # the call will overwrite x; keep its input
        else:
            ctx.x0 = None
            ctx.save_for_backward(x)  # through autograd: a later in-place change raises
        y = call.native()
        _dirty(ctx, x, y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        call: ActivationCall = ctx.call
        x = ctx.x0 if ctx.x0 is not None else ctx.saved_tensors[0]
        x = x.detach()
        with torch.enable_grad():
            xg = x.clone().requires_grad_(True)
            y = call.pure(xg)
            (local,) = torch.autograd.grad(y, xg, torch.ones_like(y))
        y = y.detach()
        half = x.shape[0] // 2
        dx, dy = x[:half] - x[half:], y[:half] - y[half:]
        small = dx.abs() < ctx.eps
        # the secant slope; the ordinary derivative where input and reference (nearly) agree
        slope = torch.where(small, local[:half], dy / torch.where(small, torch.ones_like(dx), dx))
        return (grad * torch.cat([slope, slope]).to(grad.dtype)), None, None


class SecantSlope(ActivationRule):
    """DeepLIFT's rescale rule (Shrikumar et al. 2017): the derivative of an elementwise
    activation replaced by ``(f(x) - f(x')) / (x - x')``. The batch holds the inputs in its first
    half and their references in the second half (as :class:`~generator.methods.attribution
    .modified.DeepLift` arranges it)."""

    def __init__(self, eps: float = 1e-10, batch: Optional[int] = None):
        self.eps, self.batch = eps, batch

    def apply(self, call: ActivationCall) -> torch.Tensor:
        # Input and reference are paired by batch position: an activation applied to a tensor
        # whose first dimension is not the batch (tokens or windows folded into it) would pair
        # the wrong values, so it stops the pass instead of giving a wrong multiplier.
        if self.batch is not None and (call.x.dim() == 0 or call.x.shape[0] != self.batch):
            raise Unsupported(f"DeepLIFT pairs each input with its reference by batch position; this network "
                              f"applies {_display(call.kind)} to a tensor of shape {tuple(call.x.shape)} whose "
                              f"first dimension is not the batch of {self.batch}")
        return _Rescale.apply(call.x, call, self.eps)



def rules_for(kinds: Iterable[str], rule: ActivationRule) -> Dict[str, ActivationRule]:
    return {k: rule for k in kinds}


__all__ = [
    "ActivationCall", "ActivationRule", "ClampedGradient", "ELEMENTWISE_KINDS", "NonlinearCall", "Nonlinearities",
    "RELU_KINDS", "RectifiedGradient", "SecantSlope", "activation_kind", "activation_rules", "example_input",
    "find_nonlinearities", "nonlinear_kind", "rules_for", "scripted_modules",
]
