"""Layer-wise relevance propagation (Bach et al. 2015) with composites of rules (Montavon et
al. 2019), BatchNorm folding, explicit residual sums, and rules for the functional calls of a
``forward`` (``F.relu``, ``x += y``, ``F.adaptive_avg_pool2d``, squeeze-and-excitation gates; see
:mod:`generator.engine.functional`).

What every composite here claims, and what is checked per image:

    sum_i R_i + B = f_t(x)   (within 10 %)

``R_i``: the relevance of input value ``i`` (the map before the channel sum); ``f_t(x)``: the
target logit; ``B``: the relevance the epsilon-ruled layers give to their biases, by the rule's
own formula (folded BatchNorm shifts included; zero when every such bias is zero). Per image the
result's extras hold, as shares of ``f_t``: ``conservation`` (``sum R``), ``bias_share`` (``B``),
``stabiliser_share`` (what the epsilon in the denominators took), ``one_sign_share`` (what
alpha-beta/z+ lost, or created if negative, at units whose contributions all have one sign,
where ``alpha - beta = 1`` cannot conserve), ``reliable`` (the claim holds) and
``reliability_note`` (empty when reliable; otherwise by how much, why, and at which layers).
What none of these explains was lost outside the rules; the tests keep it under 1 %.

A map with a NaN or an infinity is never returned: the method raises. A model with a computation
no rule covers (``softmax``, ``matmul``, ``layer_norm``, a custom autograd function, TorchScript)
is refused with :class:`~generator.capability.Unsupported` when the method is bound to it (when a
spec gives the input size), or else at the first ``attribute`` call, before any backward pass.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import torch
from torch import nn

from ...capability import Unsupported
from ...engine.batching import autocast_for, run_chunked, select_target
from ...engine.canonizers import BatchNormFolder, ResidualAdd, ResidualCanonizer, canonized
from ...engine.functional import FunctionalCall, FunctionalRules, custom_functions, functional_rules
from ...engine.rules import (
    ACTIVATIONS,
    PARTS,
    AlphaBetaRule,
    EpsilonRule,
    FlatRule,
    GateRule,
    PassRule,
    RelevanceLedger,
    Rule,
    largest,
    rules_applied,
    rules_by_type,
)
from .base import AttributionMethod, SpecOrLayer, register

log = logging.getLogger(__name__)

_CONV = nn.modules.conv._ConvNd
_POOL_AVG = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_BN = nn.modules.batchnorm._BatchNorm

#: ``conservation + bias_share`` within this distance of 1 makes an image reliable.
TOLERANCE = 0.1


def _percent(v: float) -> str:
    return f"{v:.0%}" if abs(v) < 100 else f"{v:.3g}x"


class _LRPBase(AttributionMethod):
    signed = True
    reduction = "sum"

    def __init__(self, model: nn.Module, spec_or_layer: SpecOrLayer = None, **params):
        super().__init__(model, spec_or_layer, **params)
        if isinstance(model, torch.jit.ScriptModule):
            raise Unsupported(f"{self.name} is not defined for a TorchScript module: LRP attaches its rules "
                              "with forward hooks and reads the forward's calls, and TorchScript has neither")
        if self.spec is not None:
            self._check_supported()

    # ------------------------------------------------------------------ composite
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

    def functional(self) -> FunctionalRules:
        """Rules for functional calls, the same a module of that kind gets in :meth:`composite`:
        activations pass relevance, linear calls (sums, average pooling, scaling) get epsilon,
        gates give all relevance to the signal."""
        return FunctionalRules(activation=PassRule(), linear=EpsilonRule(float(self.params["epsilon"])),
                               gate=GateRule())

    # ------------------------------------------------------------------ propagation
    @contextlib.contextmanager
    def _propagation(self, example: torch.Tensor) -> Iterator[Tuple[Callable, RelevanceLedger]]:
        """Canonizers, module rules and a ledger for the block; yields ``forward(x) -> (xg,
        logits)``, which runs one forward pass with functional calls given rules and raises
        :class:`Unsupported` (before any backward) when a call has none."""
        folder = BatchNormFolder()
        canonizers = [folder, ResidualCanonizer()] if self.params["canonize"] else []
        ledger = RelevanceLedger()
        with canonized(self.model, canonizers, example=example[:1]):
            with rules_applied(self.model, self.composite(self.model, folder.folded), ledger=ledger):
                def forward(x: torch.Tensor):
                    xg = x.detach().requires_grad_(True)
                    with torch.enable_grad():
                        with functional_rules(self.model, self.functional(), ledger) as trace:
                            with autocast_for(x.device, self.precision):
                                logits = self.model(xg)
                        if not isinstance(logits, torch.Tensor):
                            raise Unsupported(f"{self.name} is not defined for {type(self.model).__name__}: "
                                              f"its forward returns {type(logits).__name__}, not a tensor of logits")
                        self._refuse(trace.unsupported, custom_functions(logits))
                    return xg, logits

                yield forward, ledger

    def _refuse(self, calls: Sequence[FunctionalCall], customs: Sequence[str]) -> None:
        if not calls and not customs:
            return
        reasons = [c.describe() for c in calls] + [
            f"custom autograd function {c} (its backward is its author's, not an LRP rule)" for c in customs]
        ops = sorted({c.op for c in calls} | set(customs))
        more = ""
        if len(reasons) > 1:
            more = f" ({len(reasons) - 1} more calls without a rule; operations: {', '.join(ops)})"
        hint = ""
        if any(op.endswith(("layer_norm", "softmax", "scaled_dot_product_attention", "multi_head_attention_forward"))
               for op in ops):
            hint = "; lrp_transformer (AttnLRP) has rules for LayerNorm, softmax and attention"
        raise Unsupported(f"{self.name} is not defined for {type(self.model).__name__}: no LRP rule for "
                          f"{reasons[0]}{more}{hint}")

    def _check_supported(self) -> None:
        """One forward pass of a random image of the spec's size with every rule attached:
        :class:`Unsupported` now rather than at the first ``attribute``. Any other error is left
        to ``attribute``, where it is reported with the real input."""
        param = next(self.model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        g = torch.Generator().manual_seed(0)
        example = torch.randn((1,) + tuple(self.spec.input_size), generator=g).to(device)
        try:
            with self._session(), self._propagation(example) as (forward, _ledger):
                forward(example)
        except Unsupported:
            raise
        except Exception as exc:  # noqa: BLE001 - reported by attribute() with the real input
            log.debug("%s: support check on a %s input failed: %s", self.name, tuple(example.shape), exc)

    # ------------------------------------------------------------------ attribution
    def _attribute(self, x, target):
        n = x.shape[0]
        raw = torch.empty_like(x, dtype=torch.float32)
        score = torch.empty(n, device=x.device)
        shares = {part: torch.zeros(n, dtype=torch.float64, device=x.device) for part in PARTS}
        # per chunk: (first image, {part: (node names, (nodes, images) amounts)}) for the notes
        nodes: List[Tuple[int, Dict[str, Tuple[List[str], torch.Tensor]]]] = []
        nonfinite_at: List[str] = []

        def seed(logits, tgt):
            s = torch.zeros_like(logits)
            s.scatter_(1, tgt.view(-1, 1), select_target(logits, tgt).view(-1, 1))
            return s

        with self._propagation(x[:1]) as (forward, ledger):
            def chunk(a: int, b: int) -> None:
                ledger.start(b - a)
                xg, logits = forward(x[a:b])
                logits = logits.float()
                with torch.enable_grad():
                    (r,) = torch.autograd.grad(logits, xg, seed(logits.detach(), target[a:b]))
                raw[a:b] = r.float()
                score[a:b] = select_target(logits.detach(), target[a:b])
                for part in PARTS:
                    shares[part][a:b] = ledger.total(part, x.device)
                nodes.append((a, {part: ledger.by_node(part) for part in ("one_sign", "stabiliser")}))
                if not bool(torch.isfinite(r).all()):
                    nonfinite_at.append(ledger.first_nonfinite() or "")

            run_chunked(n, self.max_batch, chunk)

        finite = torch.isfinite(raw.flatten(1)).all(1) & torch.isfinite(score)
        if not bool(finite.all()):
            bad = [int(i) for i in torch.nonzero(~finite).flatten()]
            at = f"; it first became non-finite at {nonfinite_at[0]}" if nonfinite_at and nonfinite_at[0] else ""
            raise FloatingPointError(f"{self.name}: the relevance of image(s) {bad} is not finite (NaN or inf)"
                                     f"{at}; no map is returned for a computation that broke down")

        def where(image: int, part: str) -> List[str]:
            start, parts = max((c for c in nodes if c[0] <= image), key=lambda c: c[0])
            names, amounts = parts[part]
            return largest(names, amounts, image - start) if names else []

        total = raw.flatten(1).sum(1)
        safe = torch.where(score != 0, score, torch.ones_like(score))
        ratio = {part: (v / safe.double()).float() for part, v in shares.items()}
        conservation = total / safe
        reliable, notes = _reliability(conservation, ratio, score, where)
        return self._result(raw.sum(1), target, raw, conservation=conservation, relevance_sum=total,
                            target_logit=score, bias_share=ratio["bias"], stabiliser_share=ratio["stabiliser"],
                            one_sign_share=ratio["one_sign"], reliable=reliable, reliability_note=notes)


_WHY = {
    "stabiliser": "the stabiliser epsilon {lost_created} {v} (units whose z is near 0 or below epsilon)",
    "one_sign": "the alpha-beta/z+ rule {lost_created} {v} at convolution units whose contributions all have one sign "
                "(it conserves only where both signs occur)",
}


def _reliability(conservation: torch.Tensor, ratio: Dict[str, torch.Tensor], score: torch.Tensor,
                 where: Callable[[int, str], List[str]]) -> Tuple[List[bool], List[str]]:
    """Per image: does ``sum R + B = f_t`` hold within :data:`TOLERANCE`; if not, why (the
    declared parts, largest first, with the nodes that took most, and what no rule explains)."""
    reliable: List[bool] = []
    notes: List[str] = []
    conservation, score = conservation.cpu(), score.cpu()
    ratio = {k: v.cpu() for k, v in ratio.items()}
    for i in range(conservation.shape[0]):
        c, logit = float(conservation[i]), float(score[i])
        bias = float(ratio["bias"][i])
        if logit == 0:
            reliable.append(False)
            notes.append("the target logit is 0: there is no relevance to distribute, the map is empty")
            continue
        if abs(c + bias - 1) <= TOLERANCE:
            reliable.append(True)
            notes.append("")
            continue
        reasons = []
        declared = 0.0
        for part in ("one_sign", "stabiliser"):
            v = float(ratio[part][i])
            declared += v
            if abs(v) < 0.01:
                continue
            nodes = ", ".join(where(i, part))
            reasons.append((abs(v), _WHY[part].format(v=_percent(abs(v)), lost_created="lost" if v > 0 else "created")
                            + (f", mostly at {nodes}" if nodes else "")))
        unexplained = 1 - c - bias - declared
        if abs(unexplained) >= 0.01:
            verb = "lost" if unexplained > 0 else "created"
            reasons.append((abs(unexplained), f"{_percent(abs(unexplained))} was {verb} outside the rules "
                                              "(a computation they do not cover)"))
        reasons.sort(key=lambda r: -r[0])
        reliable.append(False)
        notes.append(f"relevance not conserved: the map sums to {_percent(c)} of the target logit"
                     + (f" and biases absorb {_percent(bias)}" if abs(bias) >= 0.005 else "")
                     + f", where the rules claim 100% ± {TOLERANCE:.0%}"
                     + ("; " + "; ".join(r for _, r in reasons) if reasons else ""))
    return reliable, notes


@register
class LRPEpsilon(_LRPBase):
    """LRP-epsilon: relevance redistributed in proportion to each input's contribution z_ij,
    with a small stabiliser epsilon, in every layer.

    Bach et al. 2015, "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by
    Layer-Wise Relevance Propagation". With a tiny epsilon it equals gradient x input on
    ReLU networks and is as noisy; biases absorb part of the relevance. BatchNorm is folded
    into the preceding layer and skip connections split relevance between their summands.
    Claim checked per image: the map plus what biases absorb equals the target logit, up to
    what the stabiliser takes (nothing, at the default epsilon, unless a unit sits at z = 0).
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
    Claim checked per image: the map plus what the dense layers' biases absorb equals the
    target logit. The convolutions conserve only at units with both positive and negative
    contributions (alpha - beta = 1); a unit with one sign only passes alpha times its
    relevance, or loses it, and the image is then marked unreliable.
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
    LRP"; Montavon et al. 2019 for composites. Only positive evidence is propagated through the
    convolutions, so the map is non-negative there and tends to be less class-specific; biases
    are ignored in them. Claim checked per image: the map plus what the dense layers' biases
    absorb equals the target logit; a convolution unit without any positive contribution that
    still receives relevance loses it, and the image is then marked unreliable. Map: sum over
    channels.
    """

    name = "lrp_zplus_flat"

    def conv_rule(self):
        return AlphaBetaRule(1.0, 0.0)

    def first_rule(self):
        return FlatRule()
