"""LRP rules for transformers (AttnLRP), as a modified gradient: relevance = input * gradient.

Achtibat et al. 2024, "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
Transformers" (ICML). Written from the paper's equations; no code is taken from its library.

Relevance of a tensor ``a`` is ``R(a) = a * g(a)``, with ``g`` the gradient of the backward pass
below, seeded at the target logit with ``f_t`` (so ``R(logits) = f_t`` at the target). An
operation ``y = h(x_1, ..., x_n)`` conserves relevance, ``sum R(y) = sum_k sum R(x_k)``, when the
gradient it passes back satisfies Euler's relation ``sum_k J_k x_k = y`` (its backward is that of
a function homogeneous of degree 1 in its relevance-carrying inputs). Each rule below is such a
backward, or says what it absorbs:

* linear layers and convolutions, ``z = W x + b``: LRP-epsilon,
  ``R(x_i) = sum_j x_i w_ij R(z_j) / (z_j + eps sign z_j)``, i.e. the gradient of ``W x`` with
  ``g(z)`` scaled by ``z / (z + eps sign z)``; the bias absorbs ``b * g``, epsilon the rest;
* LayerNorm / RMSNorm: the identity rule on the normalisation, the denominator ``sigma`` held
  constant: ``y = (x - mean x) / sigma * w + b`` becomes linear in ``x`` (paper, section 3.3);
* elementwise activations with ``f(0) = 0`` (GELU, SiLU, ReLU, tanh ...): the identity rule
  ``R(x) = R(y)``, i.e. ``g(x) = g(y) f(x) / x`` (0 where ``x = 0``);
* softmax ``s = softmax(x)``: the paper's Proposition 3.1, a first-order Taylor expansion at
  ``x``: ``R(x_i) = x_i (R(s_i) - s_i sum_j R(s_j))``, which is the ordinary gradient times input;
  it is not conservative: the expansion's bias term ``sum_i g_i s_i (1 - x_i + sum_j s_j x_j)``
  is what the softmax absorbs, recorded per image;
* products of two (or n) relevance-carrying tensors (``q k^T``, ``A v``, gates): the uniform
  rule of Proposition 3.2, each factor gets ``1/n`` of the relevance: ``g(a) = (1/n) dy/da``;
* additive constants (biases, position embeddings, class / register / distillation tokens
  concatenated to the tokens): the ordinary gradient; the constant ``c`` absorbs ``c * g``;
* ``F.scaled_dot_product_attention`` and ``F.multi_head_attention_forward`` are decomposed into
  the operations above (``softmax(q k^T * scale + mask) v``) so the rules apply inside them;
* reshapes, indexing, concatenation, mean pooling, scaling by constants: the ordinary gradient,
  which conserves exactly.

Forward values are those of the unmodified model: each rule is a ``torch.autograd.Function``
whose forward calls the model's own operation (``F.multi_head_attention_forward`` is the one
exception: it is recomputed from its parts, equal up to rounding). Calls are found by a
``__torch_function__`` mode during one forward pass, as :mod:`generator.engine.functional` does
for CNN LRP; the model itself is never modified. A call on relevance-carrying tensors that no
rule covers is recorded, and the caller refuses the model.

Per image, the :class:`Ledger` holds what each kind of rule absorbed: ``bias`` (biases, masks,
position embeddings, constant tokens), ``softmax`` (the Taylor bias term), ``stabiliser``
(epsilon) and ``other`` (rounding, activations at ``x = 0`` with ``f(0) != 0``). Then
``sum R(input) + bias + softmax + stabiliser + other = f_t`` up to what was lost outside the rules.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .functional import _NATIVE, _out_of_place, op_label, op_name
from .hooks import hooks_removed_after

#: Parts of the relevance the rules absorb, by kind (see the module doc).
PARTS = ("bias", "softmax", "stabiliser", "other")

#: Elementwise activations with f(0) = 0: the identity rule applies.
IDENTITY_ACTIVATIONS = frozenset("""
gelu silu relu relu_ relu6 leaky_relu leaky_relu_ elu elu_ selu selu_ celu celu_ hardswish mish
tanh tanh_ hardtanh hardtanh_
""".split())
#: Activations the identity rule cannot express (f(0) != 0: the ratio f(x)/x is unbounded).
_GATING = frozenset("sigmoid sigmoid_ hardsigmoid softplus log_softmax logsigmoid".split())
_MATMUL = frozenset("matmul __matmul__ __rmatmul__ mm bmm einsum".split())
_MUL = frozenset("mul mul_ __mul__ __rmul__ __imul__ multiply".split())
_ADD = frozenset("add add_ __add__ __radd__ __iadd__ sub sub_ __sub__ __rsub__ __isub__ subtract rsub".split())
_LINEAR = {"linear": 2, "conv1d": 2, "conv2d": 2, "conv3d": 2}  # name -> position of the bias
_NORMS = frozenset("layer_norm rms_norm".split())
#: Linear and homogeneous in the first (only relevance-carrying) operand: the ordinary gradient conserves.
_HOMOGENEOUS = frozenset("""
div div_ __truediv__ __itruediv__ true_divide divide neg __neg__ negative avg_pool1d avg_pool2d
avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d mean sum interpolate
upsample upsample_nearest upsample_bilinear
""".split())
_CONCAT = frozenset("cat concat concatenate stack hstack vstack".split())
#: Tensor properties that only re-view the tensor (``k.mT``).
_PROPERTIES = frozenset("T mT H mH".split())
#: What makes a network a transformer for these rules: without any of them, a CNN's LRP applies.
TRANSFORMER_OPS = frozenset({"layer_norm", "rms_norm", "softmax", "scaled_dot_product_attention",
                             "multi_head_attention_forward", "uniform"})


def _carries(v: Any) -> bool:
    return isinstance(v, torch.Tensor) and v.requires_grad


def _carries_any(v: Any) -> bool:
    if isinstance(v, (list, tuple)):
        return any(_carries(e) for e in v)
    return _carries(v)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sum of ``a * b`` over all but dim 0, in float64; ``inf * 0`` (a masked score with no
    gradient) counts 0, as the relevance of a position that takes no part."""
    p = a.double() * b.double()
    p = torch.where(b == 0, torch.zeros_like(p), p)
    return p.reshape(p.shape[0], -1).sum(1) if p.dim() else p.reshape(1)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 at least (float64 stays float64): the rules' sums in a safe precision."""
    return t if t.dtype == torch.float64 else t.float()


class Ledger:
    """Per image: what the rules absorbed, by :data:`PARTS`, and the names of the rule calls."""

    def __init__(self) -> None:
        self.start(0)

    def start(self, batch: int) -> None:
        self.batch = batch
        self.totals: Dict[str, torch.Tensor] = {}

    def per_image(self, amount: torch.Tensor) -> torch.Tensor:
        """``amount`` (one value per row of dim 0) summed per image. A dim 0 that is a multiple
        of the batch holds rows of each image together, batch-major (Swin's windows, flattened
        tokens); any other is shared evenly, so the sum over images stays right."""
        amount = amount.detach().double().reshape(-1)
        if amount.numel() == self.batch:
            return amount
        if self.batch and amount.numel() % self.batch == 0:
            return amount.view(self.batch, -1).sum(1)
        return amount.sum().expand(self.batch) / max(self.batch, 1)

    def add(self, part: str, amount: torch.Tensor) -> None:
        amount = self.per_image(amount)
        self.totals[part] = amount if part not in self.totals else self.totals[part] + amount

    def total(self, part: str, device: torch.device) -> torch.Tensor:
        if part not in self.totals:
            return torch.zeros(self.batch, dtype=torch.float64, device=device)
        return self.totals[part].to(device)


# ----------------------------------------------------------------------------- rule functions

Backward = Callable[[torch.Tensor, Sequence[torch.Tensor]], Tuple[Sequence[Optional[torch.Tensor]], Dict[str, Any]]]


class _RuleCall(torch.autograd.Function):
    """Forward: the model's own operation on the relevance-carrying tensors (constants are in
    the closure). Backward: the rule's gradient, and what the rule absorbed into the ledger."""

    @staticmethod
    def forward(ctx: Any, native: Callable, backward: Backward, ledger: Optional[Ledger],
                *xs: torch.Tensor) -> torch.Tensor:
        ctx.native, ctx.rule_backward, ctx.ledger = native, backward, ledger
        # the backward recomputes the operation: under the forward's autocast, so that a bf16
        # activation meets the float32 weight as it did in the forward
        device = xs[0].device.type if xs else "cpu"
        ctx.autocast = (device, torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else None
        ctx.save_for_backward(*xs)
        with torch.no_grad():
            return native(*xs)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        xs = ctx.saved_tensors
        autocast = torch.autocast(*ctx.autocast) if ctx.autocast else contextlib.nullcontext()
        with autocast:
            grads, parts = ctx.rule_backward(g, xs)
        if ctx.ledger is not None:
            parts = dict(parts)
            if "rest" in parts:
                # the rule's absorption not declared otherwise: sum R(y) - sum R(x) - declared
                with torch.no_grad(), autocast:
                    out = ctx.native(*xs)
                fold = ctx.ledger.per_image
                total = fold(_dot(out, g)) - sum((fold(_dot(x, gx)) for x, gx in zip(xs, grads) if gx is not None),
                                                 torch.zeros((), dtype=torch.float64, device=g.device))
                declared = sum((fold(v) for k, v in parts.items() if k != "rest"), torch.zeros_like(total))
                parts[parts.pop("rest")] = total - declared
            for part, amount in parts.items():
                ctx.ledger.add(part, amount)
        return (None, None, None) + tuple(grads)


def _vjp(fn: Callable, xs: Sequence[torch.Tensor], g: torch.Tensor) -> List[Optional[torch.Tensor]]:
    """The ordinary vector-Jacobian product of ``fn`` at ``xs``."""
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_(True) for x in xs]
        y = fn(*leaves)
        return list(torch.autograd.grad(y, leaves, g.to(y.dtype), allow_unused=True))


def apply_rule(native: Callable, backward: Backward, xs: Sequence[torch.Tensor],
               ledger: Optional[Ledger] = None) -> torch.Tensor:
    """``native(*xs)``, with ``backward(g, xs) -> (gradients, absorbed parts)`` as its backward."""
    return _RuleCall.apply(native, backward, ledger, *xs)


def linear_rule(func: Callable, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                rest: Tuple = (), kwargs: Optional[Dict[str, Any]] = None, epsilon: float = 0.0,
                ledger: Optional[Ledger] = None) -> torch.Tensor:
    """``func(x, weight, bias, *rest, **kwargs)`` (``F.linear``, ``F.conv2d`` ...) with LRP-epsilon:
    the gradient of ``func(x, weight, None)`` at ``g * z / (z + eps sign z)``; the bias absorbs
    ``b * g * z / (z + eps sign z)`` and epsilon ``g z eps / (z + eps sign z)``."""
    kwargs = kwargs or {}

    def native(a):
        return func(a, weight, bias, *rest, **kwargs)

    def backward(g, xs):
        (a,) = xs
        with torch.no_grad():
            z, gw = _wide(native(a)), _wide(g)
            if epsilon > 0:
                sign = torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))
                scaled = gw * z / (z + epsilon * sign)
            else:
                scaled = gw
        (gx,) = _vjp(lambda t: func(t, weight, None, *rest, **kwargs), [a], scaled)
        parts: Dict[str, Any] = {"rest": "bias"}
        if epsilon > 0:
            parts["stabiliser"] = _dot(z, gw - scaled)
        return [gx], parts

    return apply_rule(native, backward, [x], ledger)


def layer_norm_rule(x: torch.Tensor, normalized_shape: Sequence[int], weight: Optional[torch.Tensor] = None,
                    bias: Optional[torch.Tensor] = None, eps: float = 1e-5, ledger: Optional[Ledger] = None,
                    rms: bool = False) -> torch.Tensor:
    """LayerNorm (or RMSNorm with ``rms``) with the identity rule on the normalisation: the
    gradient of ``(x - mean x) / sigma * w`` (RMS: ``x / rms(x) * w``) with ``sigma`` constant.
    The map is then linear in ``x`` and conserves; the bias absorbs ``b * g``."""
    dims = tuple(range(-len(normalized_shape), 0))
    shape = list(normalized_shape)

    def native(a):
        if rms:
            return F.rms_norm(a, shape, weight, eps=eps)
        return F.layer_norm(a, shape, weight, bias, eps)

    def backward(g, xs):
        (a,) = xs
        a32 = _wide(a)
        with torch.no_grad():
            if rms:
                denom = (a32.pow(2).mean(dims, keepdim=True) + (eps or 0.0)).sqrt()
            else:
                denom = (a32.var(dims, unbiased=False, keepdim=True) + eps).sqrt()

        def surrogate(t):
            t = _wide(t)
            centred = t if rms else t - t.mean(dims, keepdim=True)
            y = centred / denom
            return y * _wide(weight) if weight is not None else y

        (gx,) = _vjp(surrogate, [a], g)
        return [None if gx is None else gx.to(a.dtype)], {"rest": "bias"}

    return apply_rule(native, backward, [x], ledger)


def identity_activation_rule(func: Callable, x: torch.Tensor, args: Tuple = (), kwargs: Optional[Dict] = None,
                             ledger: Optional[Ledger] = None) -> torch.Tensor:
    """An elementwise activation ``y = f(x)`` with the identity rule ``R(x) = R(y)``:
    ``g(x) = g(y) f(x) / x`` (0 where ``x = 0``, where ``f(0) = 0`` leaves nothing to pass)."""
    kwargs = kwargs or {}

    def native(a):
        return func(a, *args, **kwargs)

    def backward(g, xs):
        (a,) = xs
        with torch.no_grad():
            y = native(a)
            ratio = torch.where(a != 0, y / torch.where(a != 0, a, torch.ones_like(a)), torch.zeros_like(y))
        return [(g * ratio).to(a.dtype)], {"rest": "other"}

    return apply_rule(native, backward, [x], ledger)


def softmax_backward(s: torch.Tensor, g: torch.Tensor, dim: int) -> torch.Tensor:
    """The softmax rule of AttnLRP (Proposition 3.1): ``R(x_i) = x_i (R(s_i) - s_i sum_j R(s_j))``
    with ``R(s) = s g``, i.e. ``g(x) = s (g - sum_j s_j g_j)``, the ordinary gradient."""
    return s * (g - (s * g).sum(dim, keepdim=True))


def softmax_rule(x: torch.Tensor, dim: int, dtype: Optional[torch.dtype] = None,
                 ledger: Optional[Ledger] = None) -> torch.Tensor:
    """Softmax with the rule of :func:`softmax_backward`; what it does not pass on (the bias term
    of its Taylor expansion) is recorded as ``softmax``."""

    def native(a):
        return F.softmax(a, dim=dim, dtype=dtype)

    def backward(g, xs):
        (a,) = xs
        with torch.no_grad():
            s = _wide(native(a))
            gx = softmax_backward(s, _wide(g), dim)
        return [gx.to(a.dtype)], {"rest": "softmax"}

    return apply_rule(native, backward, [x], ledger)


def uniform_rule(native: Callable, xs: Sequence[torch.Tensor], ledger: Optional[Ledger] = None) -> torch.Tensor:
    """A product of ``n`` relevance-carrying factors (``a @ b``, ``a * b``, ``einsum``) with the
    uniform rule (Proposition 3.2): each factor receives ``1/n`` of the relevance,
    ``g(a_k) = (1/n) dy/da_k``; multilinear of degree ``n``, so the halves (thirds ...) add up."""
    n = len(xs)

    def backward(g, ts):
        grads = _vjp(native, ts, g)
        return [None if gr is None else gr / n for gr in grads], {"rest": "other"}

    return apply_rule(native, backward, list(xs), ledger)


def plain_rule(native: Callable, xs: Sequence[torch.Tensor], part: str = "bias",
               ledger: Optional[Ledger] = None) -> torch.Tensor:
    """The ordinary gradient; what constants in ``native`` (an added bias, a concatenated token)
    take is recorded as ``part``."""

    def backward(g, ts):
        return _vjp(native, ts, g), {"rest": part}

    return apply_rule(native, backward, list(xs), ledger)


def attention_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                       scale: float, g: torch.Tensor):
    """Rules for ``O = softmax(q k^T * scale + mask) v`` (decomposed): the uniform rule on ``A v``
    and on ``q k^T``, the softmax rule between. ``mask``: additive (``-inf`` where masked) or
    None. Returns ``(gq, gk, gv, absorbed by the softmax, absorbed by the mask)`` per image."""
    qf, kf, vf, gf = _wide(q), _wide(k), _wide(v), _wide(g)
    qk = qf @ kf.transpose(-2, -1) * scale
    scores = qk if mask is None else qk + mask.to(qk.dtype)
    a = torch.softmax(scores, dim=-1)
    ga = 0.5 * gf @ vf.transpose(-2, -1)            # uniform rule on A v: half to A ...
    gv = 0.5 * a.transpose(-2, -1) @ gf             # ... and half to v
    gs = softmax_backward(a, ga, -1)
    gq = 0.5 * scale * gs @ kf                       # uniform rule on q k^T
    gk = 0.5 * scale * gs.transpose(-2, -1) @ qf
    absorbed_softmax = _dot(a, ga) - _dot(scores, gs)
    absorbed_mask = _dot(mask.to(gs.dtype).expand_as(gs), gs) if mask is not None \
        else torch.zeros_like(absorbed_softmax)
    return gq.to(q.dtype), gk.to(k.dtype), gv.to(v.dtype), absorbed_softmax, absorbed_mask


def _additive_mask(q: torch.Tensor, k: torch.Tensor, attn_mask: Optional[torch.Tensor],
                   is_causal: bool) -> Optional[torch.Tensor]:
    mask = None
    if is_causal:
        L, S = q.shape[-2], k.shape[-2]
        causal = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
        mask = torch.zeros(L, S, device=q.device).masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        m = attn_mask
        if m.dtype == torch.bool:
            m = torch.zeros(m.shape, device=q.device).masked_fill(~m, float("-inf"))
        mask = m if mask is None else mask + m
    return mask


def sdpa_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
              dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None,
              enable_gqa: bool = False, ledger: Optional[Ledger] = None) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` with its forward as is and the backward of its
    decomposition (:func:`attention_backward`). Only relevance-carrying ``q, k, v`` are
    arguments; a mask carries none."""
    if dropout_p:
        raise ValueError("attention dropout is random; AttnLRP needs the model in eval mode (dropout_p=0)")
    s = (1.0 / q.shape[-1] ** 0.5) if scale is None else float(scale)

    def native(a, b, c):
        kw = {"enable_gqa": True} if enable_gqa else {}
        return F.scaled_dot_product_attention(a, b, c, attn_mask=attn_mask, is_causal=is_causal, scale=scale, **kw)

    def backward(g, xs):
        a, b, c = xs
        heads, kv_heads = a.shape[-3] if a.dim() > 2 else 1, b.shape[-3] if b.dim() > 2 else 1
        rep = heads // kv_heads if enable_gqa and kv_heads != heads else 1
        bb, cc = (b.repeat_interleave(rep, dim=-3), c.repeat_interleave(rep, dim=-3)) if rep > 1 else (b, c)
        with torch.no_grad():
            mask = _additive_mask(a, bb, attn_mask, is_causal)
            gq, gk, gv, soft, masked = attention_backward(a, bb, cc, mask, s, g)
            if rep > 1:  # key/value heads shared by ``rep`` query heads: their gradients add up
                gk = gk.unflatten(-3, (kv_heads, rep)).sum(-3)
                gv = gv.unflatten(-3, (kv_heads, rep)).sum(-3)
        return [gq, gk, gv], {"softmax": soft, "bias": masked, "rest": "other"}

    return apply_rule(native, backward, [q, k, v], ledger)


# ----------------------------------------------------------------------------- the trace


@dataclass
class RuleCall:
    """One call on relevance-carrying tensors: the operation, where (module name and type),
    and which rule took it (``"unsupported"`` when none did, with why)."""

    op: str
    where: str
    module_type: str
    rule: str
    reason: str = ""

    def describe(self) -> str:
        place = f"in {self.where} ({self.module_type})" if self.where else f"in {self.module_type}.forward"
        return f"{self.op} {place}" + (f": {self.reason}" if self.reason else "")


@dataclass
class _Slots:
    """Where the relevance-carrying tensors of a call are: ``(arg index, list index or None)``
    or a keyword name; :meth:`fill` rebuilds the arguments with other tensors there."""

    args: Tuple
    kwargs: Dict[str, Any]
    where: List[Tuple[Any, Optional[int]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i, a in enumerate(self.args):
            if isinstance(a, (list, tuple)):
                self.where += [(i, j) for j, e in enumerate(a) if _carries(e)]
            elif _carries(a):
                self.where.append((i, None))
        self.where += [(k, None) for k, v in self.kwargs.items() if _carries(v)]

    def carried(self) -> List[torch.Tensor]:
        out = []
        for key, j in self.where:
            v = self.kwargs[key] if isinstance(key, str) else self.args[key]
            out.append(v if j is None else v[j])
        return out

    def fill(self, tensors: Sequence[torch.Tensor]) -> Tuple[Tuple, Dict[str, Any]]:
        args = [list(a) if isinstance(a, (list, tuple)) else a for a in self.args]
        kwargs = dict(self.kwargs)
        for (key, j), t in zip(self.where, tensors):
            if isinstance(key, str):
                kwargs[key] = t
            elif j is None:
                args[key] = t
            else:
                args[key][j] = t
        return tuple(args), kwargs


def _has_constant(args: Tuple, kwargs: Dict[str, Any], numbers: bool) -> bool:
    """Does an additive call take a constant: a tensor without relevance or (``numbers``, for
    sums) a nonzero number? ``alpha`` (a factor) and ``dim`` are not constants."""
    values = list(args) + [v for k, v in kwargs.items() if k not in ("alpha", "dim", "out")]
    for v in values:
        for e in (v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(e, torch.Tensor) and not e.requires_grad and e.is_floating_point():
                return True
            if numbers and isinstance(e, (int, float)) and not isinstance(e, bool) and e != 0:
                return True
    return False


class AttnLRPMode(TorchFunctionMode):
    """The ``__torch_function__`` mode that gives every call on relevance-carrying tensors its
    rule during one forward pass (see the module doc). ``calls``: every non-native call, in order;
    :attr:`unsupported`: those without a rule."""

    def __init__(self, epsilon: float = 0.0, ledger: Optional[Ledger] = None):
        super().__init__()
        self.epsilon, self.ledger = float(epsilon), ledger
        self.calls: List[RuleCall] = []
        self.stack: List[Tuple[str, str]] = []

    @property
    def unsupported(self) -> List[RuleCall]:
        return [c for c in self.calls if c.rule == "unsupported"]

    def rules_used(self) -> set:
        return {c.rule for c in self.calls}

    def _record(self, func: Callable, rule: str, reason: str = "") -> None:
        where, mtype = self.stack[-1] if self.stack else ("", "model")
        self.calls.append(RuleCall(op_label(func), where, mtype, rule, reason))

    def __torch_function__(self, func: Callable, types_: Any, args: Tuple = (),
                           kwargs: Optional[Dict[str, Any]] = None) -> Any:
        kwargs = kwargs or {}
        if not torch.is_grad_enabled() or not (any(_carries_any(a) for a in args)
                                               or any(_carries_any(v) for v in kwargs.values())):
            return func(*args, **kwargs)
        name = op_name(func)
        if (name in _NATIVE or name in _PROPERTIES) and name not in _CONCAT:
            return func(*args, **kwargs)
        func2, args2, kwargs2, in_place = _out_of_place(func, name, tuple(args), kwargs)
        out, rule, reason = self._dispatch(op_name(func2), func2, tuple(args2), dict(kwargs2))
        if rule == "unsupported":
            out = func(*args, **kwargs)
            if _carries_any(out):  # shape queries, comparisons ... carry nothing on
                self._record(func, rule, reason)
            return out
        if rule != "native":
            self._record(func, rule)
        if in_place:
            args[0].copy_(out)  # the caller may keep using the tensor it changed in place
            return args[0]
        return out

    def _dispatch(self, name: str, func: Callable, args: Tuple, kwargs: Dict[str, Any]) -> Tuple[Any, str, str]:
        """``(output, rule name, reason)``; output None when unsupported."""
        slots = _Slots(args, kwargs)
        carried = slots.carried()
        n = len(carried)
        led = self.ledger

        def call(*ts):
            a, kw = slots.fill(ts)
            return func(*a, **kw)

        if name in _CONCAT:
            if _has_constant(args, kwargs, numbers=False):
                return plain_rule(call, carried, "bias", led), "constant", ""
            return func(*args, **kwargs), "native", ""
        if name in _LINEAR:
            if slots.where != [(0, None)]:
                return None, "unsupported", "a weight that carries relevance"
            pos = _LINEAR[name]
            bias = args[pos] if len(args) > pos else kwargs.get("bias")
            rest = args[pos + 1:]
            kw = {k: v for k, v in kwargs.items() if k not in ("bias", "input", "weight")}
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            return linear_rule(func, args[0], weight, bias, rest, kw, self.epsilon, led), "epsilon", ""
        if name in _NORMS:
            if slots.where != [(0, None)]:
                return None, "unsupported", "a normalisation whose weight carries relevance"
            rms = name == "rms_norm"
            norm_args = ("normalized_shape", "weight", "eps") if rms else ("normalized_shape", "weight", "bias", "eps")
            bound = dict(zip(norm_args, args[1:]))
            bound.update({k: v for k, v in kwargs.items() if k in norm_args})
            eps = bound.get("eps")
            eps = (torch.finfo(args[0].dtype).eps if rms else 1e-5) if eps is None else eps
            out = layer_norm_rule(args[0], bound["normalized_shape"], bound.get("weight"), bound.get("bias"),
                                  eps, led, rms=rms)
            return out, name, ""
        if name in IDENTITY_ACTIVATIONS:
            if slots.where != [(0, None)]:
                return None, "unsupported", "an activation whose parameters carry relevance"
            return identity_activation_rule(func, args[0], args[1:], kwargs, led), "identity", ""
        if name in _GATING:
            return None, "unsupported", "f(0) != 0: the identity rule cannot pass its relevance"
        if name == "softmax":
            if slots.where != [(0, None)]:
                return None, "unsupported", ""
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            dtype = kwargs.get("dtype", args[3] if len(args) > 3 else None)
            if dim is None:
                return None, "unsupported", "softmax without an explicit dim"
            return softmax_rule(args[0], int(dim), dtype, led), "softmax", ""
        if name == "scaled_dot_product_attention":
            sdpa_args = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
            bound = dict(zip(sdpa_args, args))
            bound.update(kwargs)
            if _carries(bound.get("attn_mask")):
                return None, "unsupported", "an attention mask that carries relevance"
            if any(not _carries(bound[k]) for k in ("query", "key", "value")):
                return None, "unsupported", "attention whose query, key or value is a constant"
            out = sdpa_rule(bound["query"], bound["key"], bound["value"], bound.get("attn_mask"),
                            bound.get("dropout_p", 0.0), bool(bound.get("is_causal", False)), bound.get("scale"),
                            bool(bound.get("enable_gqa", False)), led)
            return out, "scaled_dot_product_attention", ""
        if name == "multi_head_attention_forward":
            return self._mha(args, kwargs)
        if name in _MATMUL or name in _MUL:
            if n >= 2:
                return uniform_rule(call, carried, led), "uniform", ""
            if name == "einsum" or n == 1:
                return func(*args, **kwargs), "native", ""
        if name == "masked_fill" and slots.where == [(0, None)]:
            # the filled value is a constant: what the positions it replaces would carry is its share
            return plain_rule(call, carried, "bias", led), "constant", ""
        if name in _ADD:
            if _has_constant(args, kwargs, numbers=True):
                return plain_rule(call, carried, "bias", led), "constant", ""
            return func(*args, **kwargs), "native", ""
        if name in _HOMOGENEOUS:
            if slots.where == [(0, None)]:
                return func(*args, **kwargs), "native", ""
            return None, "unsupported", "not linear in its relevance-carrying operands (a division by an activation)"
        return None, "unsupported", ""

    def _mha(self, args: Tuple, kwargs: Dict[str, Any]) -> Tuple[Any, str, str]:
        """``F.multi_head_attention_forward`` (``nn.MultiheadAttention``) decomposed into the
        rules: in-projections (epsilon), attention (:func:`sdpa_rule`), out-projection."""
        names = ("query", "key", "value", "embed_dim_to_check", "num_heads", "in_proj_weight", "in_proj_bias",
                 "bias_k", "bias_v", "add_zero_attn", "dropout_p", "out_proj_weight", "out_proj_bias", "training",
                 "key_padding_mask", "need_weights", "attn_mask", "use_separate_proj_weight", "q_proj_weight",
                 "k_proj_weight", "v_proj_weight", "static_k", "static_v", "average_attn_weights", "is_causal")
        b = dict(zip(names, args))
        b.update(kwargs)
        if b.get("bias_k") is not None or b.get("add_zero_attn") or b.get("static_k") is not None:
            return None, "unsupported", "bias_k/bias_v, add_zero_attn or static keys in multi-head attention"
        if b.get("training") and b.get("dropout_p"):
            return None, "unsupported", "attention dropout in training mode"
        if b.get("need_weights"):
            return None, "unsupported", "need_weights=True (the attention weights would carry no relevance)"
        q_in, k_in, v_in = b["query"], b["key"], b["value"]
        if q_in.dim() != 3:
            return None, "unsupported", "unbatched multi-head attention"
        # (L, B, E) -> (B, L, E): the ledger reads the batch from dim 0
        q_in, k_in, v_in = (t.transpose(0, 1) for t in (q_in, k_in, v_in))
        E, H = q_in.shape[-1], int(b["num_heads"])
        if b.get("use_separate_proj_weight"):
            ws = (b["q_proj_weight"], b["k_proj_weight"], b["v_proj_weight"])
        else:
            ws = tuple(b["in_proj_weight"].chunk(3))
        bias = b.get("in_proj_bias")
        bs = tuple(bias.chunk(3)) if bias is not None else (None, None, None)
        proj = [self._linear(t, w, bb) for t, w, bb in zip((q_in, k_in, v_in), ws, bs)]
        for t in proj:
            if not _carries(t):
                return None, "unsupported", "a query, key or value without relevance"
        B = q_in.shape[0]
        q, k, v = (t.reshape(B, t.shape[1], H, E // H).transpose(1, 2) for t in proj)
        mask = b.get("attn_mask")
        kpm = b.get("key_padding_mask")
        if kpm is not None:
            kpm_add = torch.zeros(kpm.shape, device=q.device).masked_fill(kpm, float("-inf")) \
                if kpm.dtype == torch.bool else kpm.float()
            kpm_add = kpm_add.view(B, 1, 1, -1)
            if mask is None:
                mask = kpm_add
            else:
                m = mask if mask.dtype != torch.bool else torch.zeros(mask.shape, device=q.device).masked_fill(
                    mask, float("-inf"))
                mask = m.view(-1, H, m.shape[-2], m.shape[-1]) if m.dim() == 3 else m
                mask = mask + kpm_add
        elif mask is not None and mask.dtype == torch.bool:
            # nn.MultiheadAttention's boolean masks say True = masked, SDPA's say True = attend
            mask = ~mask
        if mask is not None and mask.dim() == 3:
            mask = mask.view(B, H, mask.shape[-2], mask.shape[-1])
        o = sdpa_rule(q, k, v, mask, 0.0, bool(b.get("is_causal")) and mask is None, None, False, self.ledger)
        o = o.transpose(1, 2).reshape(B, -1, E)
        out = self._linear(o, b["out_proj_weight"], b.get("out_proj_bias"))
        return (out.transpose(0, 1), None), "multi_head_attention_forward", ""

    def _linear(self, x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
        return linear_rule(F.linear, x, w, b, (), {}, self.epsilon, self.ledger)


@contextlib.contextmanager
def attnlrp_rules(model: Optional[nn.Module] = None, epsilon: float = 0.0,
                  ledger: Optional[Ledger] = None) -> Iterator[AttnLRPMode]:
    """Forward passes inside the block get the AttnLRP rules (exit before the backward pass).
    With ``model``, hooks name the module running for messages; they are removed on exit."""
    mode = AttnLRPMode(epsilon, ledger)
    with hooks_removed_after() as handles:
        if model is not None:
            names = {id(m): n for n, m in model.named_modules()}

            def push(module, _inputs):
                mode.stack.append((names.get(id(module), ""), type(module).__name__))

            def pop(_module, _inputs, _output):
                if mode.stack:
                    mode.stack.pop()

            for module in model.modules():
                handles.append(module.register_forward_pre_hook(push))
                handles.append(module.register_forward_hook(pop, always_call=True))
        with mode:
            yield mode
