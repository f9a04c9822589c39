"""Functional calls in a forward pass: found, classified, and given rules as modules are.

Module hooks see modules only. Much of a network's computation is written as function calls in
some ``forward``: torchvision's DenseNet ends in ``F.relu(features, inplace=True)``,
``F.adaptive_avg_pool2d`` and ``torch.flatten``; MobileNetV3 and EfficientNet add their skip
connections with ``result += input`` and gate channels with ``scale * input``; a ViT calls
``softmax`` and ``matmul``. A modified-backprop method that only hooks modules lets the plain
gradient through all of those, and on a ReLU network it is then silently another method:
LRP on DenseNet-121 lost 10-12 % of the relevance at the functional ReLU and pooling.

:class:`FunctionalTrace` is a ``__torch_function__`` mode (``torch.overrides.TorchFunctionMode``)
active for one forward pass. It looks only at calls that take a *relevance-carrying* tensor:
one that requires grad while grad mode is on. Inside a hooked module the rule engine hands the
module detached inputs and parameters are frozen, so calls there carry nothing and are passed
through untouched: what the trace sees is exactly the computation no rule covers. Each such
call is classified by the operation's name:

* ``native``: the ordinary gradient already re-routes relevance exactly and conserves it
  (reshapes, ``cat``, indexing, dropout in eval mode, max pooling, which gives all relevance to
  the maximum as in Montavon et al. 2019, section 10.2);
* ``activation``: an elementwise non-linearity (``F.relu``, ``x.relu_()``, ``F.silu`` ...);
* ``linear``: linear in the relevance-carrying tensors (``x + y``, ``x * c``, average pooling,
  ``mean``): LRP's epsilon rule applies, as to a linear module;
* ``gate``: ``g * x`` with two relevance-carrying factors, ``g`` broadcast over ``x`` (squeeze-
  and-excitation): the signal-take-all rule, see :class:`~generator.engine.rules.GateRule`;
* anything else that returns a relevance-carrying tensor (``softmax``, ``matmul``,
  ``layer_norm``, a product of two same-shape activations) is *unsupported*: no rule of ours
  is defined for it, and the caller refuses instead of letting the gradient stand in for one.

With :class:`FunctionalRules` given, ``activation``, ``linear`` and ``gate`` calls are replaced by
rule nodes: the call is wrapped in a throw-away :class:`FunctionalOp` module, which is never
attached to the model, so the rules written for modules apply unchanged and the user's model
is not touched at all (nothing to restore). In-place calls (``x += y``, ``F.relu(x,
inplace=True)``) are computed out of place and copied back into ``x``, so the forward values,
and the tensor the caller holds, are what the unmodified model produces.

Custom ``torch.autograd.Function`` s are invisible to the mode (their forward runs with grad
off); :func:`custom_functions` finds them in the autograd graph of the output instead.

The design follows the idea of "canonizing" a model before LRP (Zennit's canonizers, Anders et
al. 2021), done at run time on calls instead of on module trees; no code is taken from it.
"""

from __future__ import annotations

import contextlib
import inspect
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .hooks import hooks_removed_after
from .rules import RelevanceLedger, Rule, _is_bypassed, frozen_parameters, rule_node

NATIVE, ACTIVATION, LINEAR, GATE, UNSUPPORTED = "native", "activation", "linear", "gate", "unsupported"

#: The ordinary gradient of these moves relevance without creating or losing any.
_NATIVE = frozenset("""
view view_as reshape reshape_as flatten unflatten squeeze unsqueeze permute transpose t movedim
moveaxis swapaxes swapdims contiguous clone cat concat concatenate stack hstack vstack split
split_with_sizes chunk unbind tensor_split __getitem__ __setitem__ narrow select expand expand_as
repeat to float double half bfloat16 type type_as dropout dropout1d dropout2d dropout3d
alpha_dropout feature_alpha_dropout max_pool1d max_pool2d max_pool3d max_pool1d_with_indices
max_pool2d_with_indices max_pool3d_with_indices adaptive_max_pool1d adaptive_max_pool2d
adaptive_max_pool3d adaptive_max_pool1d_with_indices adaptive_max_pool2d_with_indices
adaptive_max_pool3d_with_indices pad channel_shuffle pixel_shuffle pixel_unshuffle roll flip
where detach requires_grad_
""".split())
#: Elementwise non-linearities: the activation rule (LRP: relevance passes through unchanged).
_ACTIVATION = frozenset("""
relu relu_ relu6 hardtanh hardtanh_ leaky_relu leaky_relu_ elu elu_ selu selu_ celu celu_ gelu
silu hardswish hardsigmoid sigmoid sigmoid_ tanh tanh_ softplus mish clamp clamp_ clamp_min
clamp_min_ clip clip_ threshold threshold_
""".split())
#: Linear in every operand.
_ADDITIVE = frozenset("add add_ __add__ __radd__ __iadd__ sub sub_ __sub__ __rsub__ __isub__ subtract rsub".split())
#: Linear when one factor carries relevance; a gate when both do.
_MULTIPLY = frozenset("mul mul_ __mul__ __rmul__ __imul__ multiply".split())
#: Linear in the first operand only (the divisor, the pooled input ... must be constant).
_LINEAR_IN_FIRST = frozenset("""
div div_ __truediv__ __itruediv__ true_divide divide neg __neg__ negative avg_pool1d avg_pool2d
avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d mean sum interpolate
upsample upsample_nearest upsample_bilinear
""".split())


def op_name(func: Callable) -> str:
    """The operation's name as the tables above use it (``F.relu`` and ``x.relu()``: ``relu``)."""
    name = getattr(func, "__name__", "")
    if name in ("__get__", "__set__"):  # a property such as ``x.mT``: name it by the property
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return name


def op_label(func: Callable) -> str:
    """A readable full name: ``torch.nn.functional.relu``, ``Tensor.add_``, ``torch.flatten``."""
    name = op_name(func)
    if isinstance(func, types.FunctionType):
        return f"{func.__module__}.{func.__qualname__}"
    owner = getattr(func, "__self__", None)
    if isinstance(func, types.BuiltinFunctionType) and owner is not None and not isinstance(owner, torch.Tensor):
        return f"torch.{name}"  # torch.flatten, torch.relu_ (bound to torch's function table)
    return f"Tensor.{name}"  # methods and properties of tensors


def _carries(v: Any) -> bool:
    return isinstance(v, torch.Tensor) and v.requires_grad


def _carries_any(v: Any) -> bool:
    if isinstance(v, (list, tuple)):
        return any(_carries_any(e) for e in v)
    return _carries(v)


Slot = Union[int, str]


class FunctionalOp(nn.Module):
    """One functional call as a module: ``forward(*tensors)`` calls ``func`` with the
    relevance-carrying arguments (at ``slots``: positions or keyword names) replaced by
    ``tensors`` and every other argument as it was. It owns no parameters, so a rule's
    recomputation (``Rule.forward_module``) simply calls it. ``signal``: for a gate, which of
    the tensors is the signal."""

    def __init__(self, func: Callable, args: Sequence[Any], kwargs: Dict[str, Any], slots: Sequence[Slot],
                 label: str, signal: Optional[int] = None):
        super().__init__()
        # The carried tensors are dropped here: the rule node keeps what backward needs.
        self.func, self.slots, self.label, self.signal = func, list(slots), label, signal
        self.args = [None if i in self.slots else a for i, a in enumerate(args)]
        self.kwargs = {k: (None if k in self.slots else v) for k, v in kwargs.items()}

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        args, kwargs = list(self.args), dict(self.kwargs)
        for slot, t in zip(self.slots, tensors):
            if isinstance(slot, int):
                args[slot] = t
            else:
                kwargs[slot] = t
        return self.func(*args, **kwargs)

    def extra_repr(self) -> str:
        return self.label


@dataclass
class FunctionalRules:
    """The rule for each kind of functional call (a composite's answer for calls, as its
    module table is for modules)."""

    activation: Rule
    linear: Rule
    gate: Rule


@dataclass
class FunctionalCall:
    """One call the trace classified: the operation, where (the innermost module running, by
    name and type; "" for the model's own ``forward``), its kind and, when unsupported, why."""

    op: str
    where: str
    module_type: str
    kind: str
    reason: str = ""

    def describe(self) -> str:
        place = f"in {self.where} ({self.module_type})" if self.where else f"in {self.module_type}.forward"
        return f"{self.op} {place}" + (f": {self.reason}" if self.reason else "")


_SIGNATURES: Dict[Callable, Optional[inspect.Signature]] = {}


def _signature(func: Callable) -> Optional[inspect.Signature]:
    if func not in _SIGNATURES:
        try:
            _SIGNATURES[func] = inspect.signature(func) if isinstance(func, types.FunctionType) else None
        except (TypeError, ValueError):
            _SIGNATURES[func] = None
    return _SIGNATURES[func]


def _out_of_place(func: Callable, name: str, args: Tuple, kwargs: Dict[str, Any]):
    """``(func, args, kwargs, in_place)`` computing the same value without changing an input."""
    sig = _signature(func)
    if sig is not None and "inplace" in sig.parameters:
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError:
            return func, args, kwargs, False
        if bound.arguments.get("inplace"):
            bound.arguments["inplace"] = False
            return func, tuple(bound.args), dict(bound.kwargs), True
        return func, args, kwargs, False
    if name.startswith("__i") and name.endswith("__"):  # __iadd__ -> __add__
        return getattr(torch.Tensor, "__" + name[3:]), args, kwargs, True
    if name.endswith("_") and not name.endswith("__") and hasattr(torch.Tensor, name[:-1]):  # add_ -> add
        return getattr(torch.Tensor, name[:-1]), args, kwargs, True
    return func, args, kwargs, False


def classify(name: str, args: Tuple, kwargs: Dict[str, Any]) -> Tuple[str, str, Optional[int]]:
    """``(kind, reason, signal)`` of a call on relevance-carrying tensors (see the module doc).
    ``signal``: for a gate, the index (among the carrying arguments) of the signal."""
    slots = [i for i, a in enumerate(args) if _carries(a)] + [k for k, v in kwargs.items() if _carries(v)]
    if name in _NATIVE:
        return NATIVE, "", None
    nested = any(isinstance(a, (list, tuple)) and _carries_any(a) for a in list(args) + list(kwargs.values()))
    if nested:
        return UNSUPPORTED, "no LRP rule for this operation on a list of activations", None
    if name in _ACTIVATION:
        if slots == [0]:
            return ACTIVATION, "", None
        return UNSUPPORTED, "an activation whose parameters carry relevance", None
    if name in _ADDITIVE:
        return LINEAR, "", None
    if name in _MULTIPLY:
        if len(slots) == 1:
            return LINEAR, "", None
        a, b = (kwargs[s] if isinstance(s, str) else args[s] for s in slots[:2])
        try:
            shape = torch.broadcast_shapes(a.shape, b.shape)
        except RuntimeError:
            return UNSUPPORTED, "operands do not broadcast", None
        a_full, b_full = tuple(a.shape) == tuple(shape), tuple(b.shape) == tuple(shape)
        if a_full and not b_full:
            return GATE, "", 0
        if b_full and not a_full:
            return GATE, "", 1
        return UNSUPPORTED, ("a product of two activations of the same shape (neither is a gate "
                             "broadcast over the other); LRP has no general rule for it"), None
    if name in _LINEAR_IN_FIRST:
        if slots == [0]:
            return LINEAR, "", None
        return UNSUPPORTED, "not linear in its relevance-carrying operands (e.g. a division by an activation)", None
    return UNSUPPORTED, "", None


class FunctionalTrace(TorchFunctionMode):
    """The ``__torch_function__`` mode behind :func:`functional_rules` (see the module doc).

    ``calls``: every non-native call on relevance-carrying tensors, in call order;
    :attr:`unsupported`: those without a rule. ``rules=None`` only records and changes nothing.
    """

    def __init__(self, rules: Optional[FunctionalRules] = None, ledger: Optional[RelevanceLedger] = None):
        super().__init__()
        self.rules, self.ledger = rules, ledger
        self.calls: List[FunctionalCall] = []
        self.stack: List[Tuple[str, str]] = []  # (module name, type) of the modules running
        self.opaque = 0  # > 0 while a module whose calls are not looked at is running

    @property
    def unsupported(self) -> List[FunctionalCall]:
        return [c for c in self.calls if c.kind == UNSUPPORTED]

    def _record(self, func: Callable, kind: str, reason: str = "") -> FunctionalCall:
        where, mtype = self.stack[-1] if self.stack else ("", "model")
        call = FunctionalCall(op_label(func), where, mtype, kind, reason)
        self.calls.append(call)
        return call

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        # Inside rule nodes, no_grad blocks and rule recomputations nothing carries relevance.
        if self.opaque or not torch.is_grad_enabled() or _is_bypassed() or not (
                any(_carries_any(a) for a in args) or any(_carries_any(v) for v in kwargs.values())):
            return func(*args, **kwargs)
        name = op_name(func)
        kind, reason, signal = classify(name, tuple(args), kwargs)
        if kind == NATIVE:
            return func(*args, **kwargs)
        if kind == UNSUPPORTED:
            out = func(*args, **kwargs)
            if _carries_any(out):  # shape queries, comparisons, argmax ... carry nothing on
                self._record(func, kind, reason)
            return out
        call = self._record(func, kind)
        if self.rules is None:
            return func(*args, **kwargs)
        return self._rule_call(func, name, tuple(args), kwargs, kind, signal, call)

    def _rule_call(self, func, name, args, kwargs, kind, signal, record: FunctionalCall):
        func2, args2, kwargs2, in_place = _out_of_place(func, name, args, kwargs)
        slots: List[Slot] = [i for i, a in enumerate(args2) if _carries(a)]
        slots += [k for k, v in kwargs2.items() if _carries(v)]
        carried = [kwargs2[s] if isinstance(s, str) else args2[s] for s in slots]
        op = FunctionalOp(func2, args2, kwargs2, slots, record.op, signal)
        rule = {ACTIVATION: self.rules.activation, LINEAR: self.rules.linear, GATE: self.rules.gate}[kind]
        with torch.no_grad():
            value = op(*[t.detach() for t in carried])
        out = rule_node(op, rule, value, carried, name=record.describe(), ledger=self.ledger, snapshot=in_place)
        if in_place:
            # The caller may keep using the tensor it changed in place (``x.relu_()`` as a
            # statement): write the value into it, so it also carries the rule node's history.
            target = args[0]
            target.copy_(out)
            return target
        return out


@contextlib.contextmanager
def functional_rules(
    model: nn.Module, rules: Optional[FunctionalRules] = None, ledger: Optional[RelevanceLedger] = None,
    opaque: Tuple[type, ...] = (),
) -> Iterator[FunctionalTrace]:
    """Run the forward passes inside the block under a :class:`FunctionalTrace`.

    Exit the block before the backward pass: rules recompute their modules there, and those
    calls must not be traced. Hooks that name the running module are on every sub-module for
    the block only (always removed, as the rule hooks are). Calls inside modules of the
    ``opaque`` types are not looked at.
    """
    trace = FunctionalTrace(rules, ledger)
    names = {id(m): n for n, m in model.named_modules()}

    def push(module, _inputs):
        trace.stack.append((names.get(id(module), ""), type(module).__name__))
        if isinstance(module, opaque):
            trace.opaque += 1

    def pop(module, _inputs, _output):
        if trace.stack:
            trace.stack.pop()
        if isinstance(module, opaque):
            trace.opaque -= 1

    with hooks_removed_after() as handles:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(push))
            handles.append(module.register_forward_hook(pop, always_call=True))
        with trace:
            yield trace


def custom_functions(output: torch.Tensor, allowed: Sequence[type] = ()) -> List[str]:
    """Names of custom ``torch.autograd.Function`` s in the autograd graph of ``output``, other
    than ``allowed``: their backward is whatever their author wrote, and the trace cannot see
    inside them (memory-efficient Swish implementations are the usual case)."""
    from .rules import _RuleFunction

    ok = (_RuleFunction,) + tuple(allowed)
    found: List[str] = []
    seen = set()
    todo = [output.grad_fn] if output.grad_fn is not None else []
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        cls = getattr(node, "_forward_cls", None)
        if cls is not None and not issubclass(cls, ok):
            label = f"{cls.__module__}.{cls.__qualname__}"
            if label not in found:
                found.append(label)
        todo.extend(nxt for nxt, _ in node.next_functions)
    return found


@dataclass
class TraceResult:
    """What :func:`trace_functional_calls` found."""

    calls: List[FunctionalCall] = field(default_factory=list)
    custom_functions: List[str] = field(default_factory=list)

    @property
    def unsupported(self) -> List[FunctionalCall]:
        return [c for c in self.calls if c.kind == UNSUPPORTED]


#: Layers whose own calls (``conv2d``, ``linear``, ``batch_norm``) are what they are: not listed.
LAYERS: Tuple[type, ...] = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)


def trace_functional_calls(model: nn.Module, example: torch.Tensor, opaque: Tuple[type, ...] = LAYERS) -> TraceResult:
    """The non-native calls on relevance-carrying tensors in one forward pass of ``example``,
    with no rules attached: the calls of activation modules and of ``forward`` code alike
    (``module_type`` and ``where`` tell them apart); calls inside ``opaque`` modules are not
    listed. For methods that want to know which non-linearities a model has and where."""
    x = example.detach().requires_grad_(True)
    # Frozen parameters: otherwise every convolution would carry relevance through its weight.
    with frozen_parameters(model), torch.enable_grad(), functional_rules(model, opaque=opaque) as trace:
        out = model(x)
    outs = out if isinstance(out, (list, tuple)) else [out]
    customs: List[str] = []
    for o in outs:
        if isinstance(o, torch.Tensor):
            customs += [c for c in custom_functions(o) if c not in customs]
    return TraceResult(trace.calls, customs)
