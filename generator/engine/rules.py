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
  forward is a *copy* of ``output`` and whose backward is ``rule.backward``. A copy, not a view:
  autograd forbids changing a custom function's view in place, and networks do exactly that
  after a hooked module (the ``out += identity`` of a residual block, DenseNet's
  ``F.relu(features, inplace=True)``, an ``inplace=True`` activation in MobileNet or
  EfficientNet). The copy costs one activation's memory traffic per rule, and the module's own
  output is freed at once, so peak memory does not grow.

Two situations that break other libraries are handled on purpose:

* in-place activations (``nn.ReLU(inplace=True)`` in torchvision) would overwrite the input a
  rule needs; modules with an ``inplace`` flag get it set to False for the duration and
  restored afterwards;
* one activation module called several times in one forward (torchvision's BasicBlock and
  Bottleneck call ``self.relu`` two or three times): every call has its own pre-hook/hook pair
  and its own autograd node, so nothing is keyed on the module alone.

Rules that need the module's forward again (LRP recomputes it with modified weights) call it
inside :func:`_bypassed`, which makes the hooks pass through.

A :class:`RelevanceLedger` given to :func:`rules_applied` keeps, per image, the relevance each
rule node received and passed on, and what the rule itself says went to biases; LRP uses it to
tell a map that conserves relevance from one that leaked it, and where.
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

    def backward_accounted(
        self, module: nn.Module, inputs: Tuple[torch.Tensor, ...], grad_output: torch.Tensor
    ) -> Tuple[object, Optional[Dict[str, torch.Tensor]]]:
        """``backward``'s gradients and, per image, the relevance the rule declares it does not
        pass to the inputs, by :data:`PARTS` name (None: the rule claims to pass all of it)."""
        return self.backward(module, inputs, grad_output), None

    @staticmethod
    def forward_module(module: nn.Module, *inputs: torch.Tensor, params: Optional[Dict[str, torch.Tensor]] = None):
        with _bypassed():
            if params:
                return torch.func.functional_call(module, params, inputs)
            return module(*inputs)


#: What a rule node may declare about relevance it does not pass to its inputs, per image:
#: ``bias``: given to the affine map's constant term (epsilon rule); ``stabiliser``: taken by the
#: epsilon added to denominators; ``one_sign``: lost (positive) or created (negative) by
#: alpha-beta at units whose contributions all have one sign, where ``alpha - beta = 1`` cannot
#: hold. Relevance lost anywhere else (outside rule nodes) is what the ledger cannot explain.
PARTS = ("bias", "stabiliser", "one_sign")


class RelevanceLedger:
    """Where relevance went in one backward pass, per image (batch dimension 0).

    Every rule node reports the relevance it received (``sum R_out``), what it passed to its
    inputs (``sum R_in``), and the :data:`PARTS` of the difference its rule accounts for. The
    totals tell a conserving propagation from one that leaks, and the nodes say where. Sums
    are float64 so that rounding does not dominate when positive and negative relevance cancel.
    Recording never waits for the device (no ``.item()`` in the backward pass); the queries
    after it do, once. Call :meth:`start` before each backward pass.
    """

    def __init__(self) -> None:
        self.start(0)

    def start(self, batch: int) -> None:
        self.batch = batch
        self.totals: Dict[str, torch.Tensor] = {}
        # (node name, rule type, parts, received sum, passed sum), in backward order
        self.nodes: List[Tuple[str, str, Dict[str, torch.Tensor], torch.Tensor, torch.Tensor]] = []

    def _per_image(self, t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if t is None or t.dim() == 0 or t.shape[0] != self.batch:
            return None
        return t.detach().double().flatten(1).sum(1)

    def record(self, name: str, rule: "Rule", grad_output: torch.Tensor,
               grads: Sequence[Optional[torch.Tensor]], parts: Optional[Dict[str, torch.Tensor]]) -> None:
        out = self._per_image(grad_output)
        ins = [self._per_image(g) for g in grads if g is not None]
        if out is None or any(v is None for v in ins):
            return  # not batch-shaped (a rule on a reduction over images): not accounted here
        total_in = sum(ins, torch.zeros_like(out))
        entry = {k: v.detach().double().to(out.device) for k, v in (parts or {}).items()}
        for k, v in entry.items():
            self.totals[k] = v if k not in self.totals else self.totals[k] + v
        self.nodes.append((name, type(rule).__name__, entry, out, total_in))

    def total(self, part: str, device: torch.device) -> torch.Tensor:
        """Per image: the sum of one of :data:`PARTS` over all nodes (zeros when none had it)."""
        if part not in self.totals:
            return torch.zeros(self.batch, dtype=torch.float64, device=device)
        return self.totals[part].to(device)

    def first_nonfinite(self) -> Optional[str]:
        """The first node (in backward order) that received finite relevance and passed on a
        NaN or an infinity: where the propagation broke down."""
        if not self.nodes:
            return None
        out = torch.stack([n[3] for n in self.nodes]).cpu()
        passed = torch.stack([n[4] for n in self.nodes]).cpu()
        broke = (torch.isfinite(out).all(1) & ~torch.isfinite(passed).all(1)).nonzero().flatten()
        return self.nodes[int(broke[0])][0] if broke.numel() else None

    def by_node(self, part: str) -> Tuple[List[str], torch.Tensor]:
        """Node names and a (nodes, images) CPU tensor of ``part`` at each node that has it."""
        rows = [(name, entry[part]) for name, _rule, entry, _o, _i in self.nodes if part in entry]
        if not rows:
            return [], torch.zeros(0, self.batch, dtype=torch.float64)
        return [r[0] for r in rows], torch.stack([r[1] for r in rows]).cpu()


def largest(names: Sequence[str], amounts: torch.Tensor, image: int, k: int = 2) -> List[str]:
    """The ``k`` names with the largest absolute ``amounts[:, image]`` (a name that occurs more
    than once, a module called several times, counts its sum)."""
    per: Dict[str, float] = {}
    for name, v in zip(names, amounts[:, image].tolist()):
        per[name] = per.get(name, 0.0) + v
    ranked = sorted(per.items(), key=lambda kv: -abs(kv[1]))
    return [n for n, v in ranked[:k] if v]


class _Call:
    """One module call: the rule, the autocast state it ran under (replayed in backward), a name
    for the ledger, and whether the inputs must be saved as copies (they are changed in place
    after the call, as by a functional ``x += y``)."""

    __slots__ = ("module", "rule", "autocast", "name", "ledger", "snapshot")

    def __init__(self, module: nn.Module, rule: Rule, autocast, name: str = "",
                 ledger: Optional[RelevanceLedger] = None, snapshot: bool = False):
        self.module, self.rule, self.autocast = module, rule, autocast
        self.name, self.ledger, self.snapshot = name, ledger, snapshot


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
        if call.snapshot:
            # The caller changes an input in place right after this node (a functional
            # ``x += y``): keep copies of the values the rule needs.
            ctx.values = tuple(t.detach().clone() for t in inputs)
        else:
            # Saved through autograd, so an in-place change of an input later raises instead of
            # silently giving a wrong attribution.
            ctx.values = None
            ctx.save_for_backward(*inputs)
        # A fresh tensor, not ``output.view_as(output)``: in-place operations after the module
        # (``out += identity``, ``F.relu(x, inplace=True)``) are legal on it.
        return output.clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        call: _Call = ctx.call
        saved = ctx.values if ctx.values is not None else ctx.saved_tensors
        inputs = tuple(t.detach() for t in saved)
        autocast = (
            torch.autocast(call.autocast[0], dtype=call.autocast[1]) if call.autocast else contextlib.nullcontext()
        )
        with torch.enable_grad(), autocast:
            grads, parts = call.rule.backward_accounted(call.module, inputs, grad_output)
        if isinstance(grads, torch.Tensor):
            grads = (grads,)
        grads = tuple(
            None if g is None else g.detach().to(dtype=x.dtype) for g, x in zip(grads, inputs)
        )
        if call.ledger is not None:
            call.ledger.record(call.name, call.rule, grad_output, grads, parts)
        return (None, None) + grads


ModuleRules = Dict[nn.Module, Rule]


@contextlib.contextmanager
def rules_applied(
    model: nn.Module, module_rules: ModuleRules, ledger: Optional[RelevanceLedger] = None
) -> Iterator[None]:
    """Attach ``module_rules`` (module -> rule) for the duration of the block.

    Hooks are removed and ``inplace`` flags restored on exit, also after an exception.
    ``ledger``: where every rule node accounts for the relevance it passes (see
    :class:`RelevanceLedger`); its entries are named by the modules' names in ``model``.
    """
    stashes: Dict[int, List[Tuple[torch.Tensor, ...]]] = {}
    inplace_changed: List[nn.Module] = []
    names = {id(m): (n or type(m).__name__) for n, m in model.named_modules()} if ledger is not None else {}

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
            call = _Call(module, rule, _autocast_state(output.device.type),
                         name=names.get(id(module), ""), ledger=ledger)
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


def rule_node(module: nn.Module, rule: Rule, output: torch.Tensor, inputs: Sequence[torch.Tensor], *,
              name: str = "", ledger: Optional[RelevanceLedger] = None, snapshot: bool = False) -> torch.Tensor:
    """``output`` (computed by ``module(*inputs)`` without autograd) as a node whose backward is
    ``rule``: how :mod:`generator.engine.functional` gives a functional call (``F.relu``,
    ``x + y``) the rule a module of the same kind would get. ``snapshot``: the caller will
    change an input in place afterwards, so its values are copied now."""
    call = _Call(module, rule, _autocast_state(output.device.type), name=name, ledger=ledger, snapshot=snapshot)
    return _RuleFunction.apply(call, output.detach(), *inputs)


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
        return self.backward_accounted(module, inputs, grad_output)[0]

    def backward_accounted(self, module, inputs, grad_output):
        """Also declares, per image, what the bias term takes, ``sum_j b_j s_j`` with
        ``s = R / (z + eps sign z)``, computed as ``sum_j z_j s_j - sum_i R_i`` (``z`` is affine in
        the inputs, so the difference is the constant term's share; no need to know where the
        module keeps its bias: a folded BatchNorm, an unfolded one, ``x + c`` in a functional
        call), and what the stabiliser takes, ``sum_j R_j - z_j s_j``."""
        xs = tuple(x.requires_grad_(True) for x in (t.detach() for t in inputs))
        params = _param_dict(module, zero_bias=self.zero_bias)
        z = self.forward_module(module, *xs, params=params or None)
        s = grad_output / _stabilize(z, self.epsilon)
        grads = torch.autograd.grad(z, xs, s)
        rel = tuple(x * g for x, g in zip(xs, grads))
        parts = None
        if _batch_shaped(z, grad_output, *rel):
            zs = _image_sums(s.detach() * z.detach())
            parts = {"bias": zs - sum(_image_sums(r) for r in rel),
                     "stabiliser": _image_sums(grad_output) - zs}
        return rel, parts


def _batch_shaped(*ts: torch.Tensor) -> bool:
    return all(t.dim() > 0 for t in ts) and len({t.shape[0] for t in ts}) == 1


def _image_sums(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double().flatten(1).sum(1)


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
        """The relevance this part gives the input, and the per-unit fraction ``z / (z + eps)``
        of ``R_j`` it passes on (1 where the part has contributions, 0 where it has none)."""
        xp = xp.detach().requires_grad_(True)
        xn = xn.detach().requires_grad_(True)
        z1 = self.forward_module(module, xp, params=_param_dict(module, weight_fn=w_for_xp, zero_bias=True))
        z2 = self.forward_module(module, xn, params=_param_dict(module, weight_fn=w_for_xn, zero_bias=True))
        z = z1 + z2
        stab = _stabilize(z, self.epsilon)
        s = grad_output / stab
        g1, g2 = torch.autograd.grad((z1, z2), (xp, xn), (s, s))
        return xp * g1 + xn * g2, z.detach()

    def backward(self, module, inputs, grad_output):
        return self.backward_accounted(module, inputs, grad_output)[0]

    def backward_accounted(self, module, inputs, grad_output):
        """Also declares, per image, the relevance lost (or, negative, created) at units whose
        contributions all have one sign: there the unit passes ``alpha [z+ != 0] - beta [z- != 0]``
        times its relevance instead of once (``one_sign``), and what the stabiliser takes."""
        x = inputs[0]
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        pos = lambda w: w.clamp(min=0)  # noqa: E731
        neg = lambda w: w.clamp(max=0)  # noqa: E731
        r_pos, z_pos = self._part(module, xp, xn, pos, neg, grad_output)
        r = self.alpha * r_pos
        passed = self.alpha * (z_pos / _stabilize(z_pos, self.epsilon))  # fraction of R_j passed on
        nominal = self.alpha * (z_pos != 0).to(z_pos.dtype)  # ... if the stabiliser took nothing
        if self.beta:
            r_neg, z_neg = self._part(module, xp, xn, neg, pos, grad_output)
            r = r - self.beta * r_neg
            passed = passed - self.beta * (z_neg / _stabilize(z_neg, self.epsilon))
            nominal = nominal - self.beta * (z_neg != 0).to(z_neg.dtype)
        parts = None
        if _batch_shaped(grad_output, r):
            parts = {"one_sign": _image_sums(grad_output * (1 - nominal)),
                     "stabiliser": _image_sums(grad_output * (nominal - passed))}
        return (r,), parts


class GateRule(Rule):
    """A multiplicative gate ``y = g * x`` (squeeze-and-excitation, spatial attention): all of
    ``y``'s relevance goes to the signal ``x``, none to the gate ``g``, which is treated as a
    constant weighting, the "signal-take-all" rule of Arras et al. 2017 ("Explaining Recurrent
    Neural Network Predictions in Sentiment Analysis") that LRP uses for LSTM gates. It conserves
    relevance exactly. ``module.signal`` is the index of the signal among the inputs."""

    def backward(self, module, inputs, grad_output):
        signal = int(module.signal)
        return tuple(grad_output if i == signal else None for i in range(len(inputs)))


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
