"""AttnLRP: layer-wise relevance propagation for transformers, with rules for LayerNorm, softmax
attention and GELU (Achtibat et al. 2024, "AttnLRP: Attention-Aware Layer-Wise Relevance
Propagation for Transformers", ICML). The rules are in :mod:`generator.engine.attnlrp`.

What is checked per image, as in :mod:`generator.methods.attribution.lrp`:

    sum_i R_i + B + S = f_t(x)   (within 10 %)

``R_i``: the relevance of input value ``i`` (the map before the channel sum); ``f_t``: the target
logit; ``B``: what additive constants absorb by the rules (biases of linear layers, convolutions
and LayerNorms, position embeddings, class / register / distillation tokens, attention masks);
``S``: what the softmax rule absorbs, the bias term of its Taylor expansion at the scores, which
the paper's rule leaves out by design (Proposition 3.1). Per image the extras hold, as shares of
``f_t``: ``conservation`` (``sum R``), ``bias_share`` (``B + S``: every bias term, so that
``reliable`` reads ``|conservation + bias_share - 1| <= 0.1`` as in every LRP method),
``softmax_share`` (``S`` alone), ``stabiliser_share`` (what epsilon took, an explanation only),
``reliable`` and ``reliability_note`` (empty when reliable; otherwise by how much and why). A map
with a NaN or an infinity is never returned.

Refused with :class:`~generator.capability.Unsupported`: TorchScript modules, networks with a
computation no rule covers (the calls are listed), and networks without attention, LayerNorm or
softmax (a CNN: LRP-epsilon and LRP-alpha-beta cover those).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Dict, Iterator, List, Tuple

import torch
from torch import nn

from ...capability import Unsupported
from ...engine.attnlrp import PARTS, TRANSFORMER_OPS, Ledger, RuleCall, _RuleCall, attnlrp_rules
from ...engine.batching import autocast_for, run_chunked, select_target
from ...engine.functional import custom_functions
from .base import AttributionMethod, AttributionResult, SpecOrLayer, register
from .lrp import TOLERANCE, _percent

log = logging.getLogger(__name__)


@register
class AttnLRP(AttributionMethod):
    """AttnLRP (Achtibat et al. 2024): LRP-epsilon in linear layers, the identity rule in
    LayerNorm and elementwise activations, the paper's softmax rule, and the uniform rule in the
    products ``q k^T`` and ``A v``; computed as input x modified gradient in one backward pass.

    Map: sum over channels (signed). Claim checked per image: the map plus what biases (and
    constant tokens, position embeddings) and the softmax's Taylor bias term absorb equals the
    target logit within 10 %.
    """

    name = "lrp_transformer"
    signed = True
    reduction = "sum"

    def __init__(self, model: nn.Module, spec_or_layer: SpecOrLayer = None, **params: Any):
        super().__init__(model, spec_or_layer, **params)
        if isinstance(model, torch.jit.ScriptModule):
            raise Unsupported(f"{self.name} is not defined for a TorchScript module: its rules are given to the "
                              "forward's function calls, and TorchScript runs none that can be seen")
        if self.spec is not None:
            self._check_supported()

    # ------------------------------------------------------------------ propagation
    @contextlib.contextmanager
    def _propagation(self) -> Iterator[Tuple[Callable, Ledger]]:
        """Yields ``forward(x) -> (xg, logits)``: one forward pass with the rules, which raises
        :class:`Unsupported` (before any backward) when the model is not covered."""
        ledger = Ledger()

        def forward(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
            xg = x.detach().requires_grad_(True)
            with torch.enable_grad():
                with attnlrp_rules(self.model, float(self.params["epsilon"]), ledger) as mode:
                    with autocast_for(x.device, self.precision):
                        logits = self.model(xg)
                if not isinstance(logits, torch.Tensor):
                    raise Unsupported(f"{self.name} is not defined for {type(self.model).__name__}: its forward "
                                      f"returns {type(logits).__name__}, not a tensor of logits")
                self._refuse(mode.calls, mode.unsupported, custom_functions(logits, allowed=(_RuleCall,)))
            return xg, logits

        yield forward, ledger

    def _refuse(self, calls: List[RuleCall], unsupported: List[RuleCall], customs: List[str]) -> None:
        model = type(self.model).__name__
        if not {c.rule for c in calls} & TRANSFORMER_OPS and not any(
                c.op.endswith(("layer_norm", "softmax", "rms_norm")) for c in calls):
            raise Unsupported(f"{self.name} is not defined for {model}: it has no attention, softmax or LayerNorm, "
                              "the operations AttnLRP adds rules for; LRP-epsilon and LRP-alpha-beta cover such "
                              "networks")
        if not unsupported and not customs:
            return
        reasons = [c.describe() for c in unsupported] + [
            f"custom autograd function {c} (its backward is its author's, not an LRP rule)" for c in customs]
        ops = sorted({c.op for c in unsupported} | set(customs))
        more = ""
        if len(reasons) > 1:
            more = f" ({len(reasons) - 1} more calls without a rule; operations: {', '.join(ops)})"
        raise Unsupported(f"{self.name} is not defined for {model}: no AttnLRP rule for {reasons[0]}{more}")

    def _check_supported(self) -> None:
        """One forward pass of a random image of the spec's size: :class:`Unsupported` now rather
        than at the first ``attribute``; any other error is left to ``attribute``."""
        assert self.spec is not None
        param = next(self.model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        g = torch.Generator().manual_seed(0)
        example = torch.randn((1,) + tuple(self.spec.input_size), generator=g).to(device)
        try:
            with self._session(), self._propagation() as (forward, ledger):
                ledger.start(1)
                forward(example)
        except Unsupported:
            raise
        except Exception as exc:  # noqa: BLE001 - reported by attribute() with the real input
            log.debug("%s: support check on a %s input failed: %s", self.name, tuple(example.shape), exc)

    # ------------------------------------------------------------------ attribution
    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> AttributionResult:
        n = x.shape[0]
        raw = torch.empty_like(x, dtype=torch.float32)
        score = torch.empty(n, device=x.device)
        shares = {part: torch.zeros(n, dtype=torch.float64, device=x.device) for part in PARTS}

        with self._propagation() as (forward, ledger):
            def chunk(a: int, b: int) -> None:
                ledger.start(b - a)
                xg, logits = forward(x[a:b])
                logits = logits.float()
                # one-hot seed: R(logit) = logit * gradient = f_t, as relevance is input x gradient
                seed = torch.zeros_like(logits)
                seed.scatter_(1, target[a:b].view(-1, 1), 1.0)
                with torch.enable_grad():
                    (grad,) = torch.autograd.grad(logits, xg, seed)
                raw[a:b] = (xg.detach() * grad).float()
                score[a:b] = select_target(logits.detach(), target[a:b])
                for part in PARTS:
                    shares[part][a:b] = ledger.total(part, x.device)

            run_chunked(n, self.max_batch, chunk)

        finite = torch.isfinite(raw.flatten(1)).all(1) & torch.isfinite(score)
        if not bool(finite.all()):
            bad = [int(i) for i in torch.nonzero(~finite).flatten()]
            raise FloatingPointError(f"{self.name}: the relevance of image(s) {bad} is not finite (NaN or inf); "
                                     "no map is returned for a computation that broke down")
        total = raw.flatten(1).sum(1)
        safe = torch.where(score != 0, score, torch.ones_like(score))
        ratio = {part: (v / safe.double()).float() for part, v in shares.items()}
        conservation = total / safe
        # the softmax rule's Taylor bias term is a bias term like the layers' (the paper's words):
        # ``bias_share`` holds both, so that ``reliable`` reads as in every LRP method
        bias_share = ratio["bias"] + ratio["softmax"]
        reliable, notes = reliability(conservation, bias_share, ratio, score)
        return self._result(raw.sum(1), target, raw, conservation=conservation, relevance_sum=total,
                            target_logit=score, bias_share=bias_share, softmax_share=ratio["softmax"],
                            stabiliser_share=ratio["stabiliser"], reliable=reliable, reliability_note=notes)


def reliability(conservation: torch.Tensor, bias_share: torch.Tensor, ratio: Dict[str, torch.Tensor],
                score: torch.Tensor) -> Tuple[List[bool], List[str]]:
    """Per image: does ``sum R + B + S = f_t`` hold within :data:`~.lrp.TOLERANCE`
    (``bias_share`` is ``(B + S) / f_t``); if not, by how much and why (``ratio``: the parts)."""
    reliable: List[bool] = []
    notes: List[str] = []
    conservation, score, bias_share = conservation.cpu(), score.cpu(), bias_share.cpu()
    ratio = {k: v.cpu() for k, v in ratio.items()}
    for i in range(conservation.shape[0]):
        c, logit, b = float(conservation[i]), float(score[i]), float(bias_share[i])
        soft, stab = (float(ratio[p][i]) for p in ("softmax", "stabiliser"))
        if logit == 0:
            reliable.append(False)
            notes.append("the target logit is 0: there is no relevance to distribute, the map is empty")
            continue
        if abs(c + b - 1) <= TOLERANCE:
            reliable.append(True)
            notes.append("")
            continue
        reasons = []
        if abs(stab) >= 0.01:
            reasons.append(f"the stabiliser epsilon {'lost' if stab > 0 else 'created'} {_percent(abs(stab))} "
                           "(units whose z is near 0)")
        unexplained = 1 - c - b - stab
        if abs(unexplained) >= 0.01:
            reasons.append(f"{_percent(abs(unexplained))} was {'lost' if unexplained > 0 else 'created'} outside "
                           "the rules (a computation they do not cover)")
        reliable.append(False)
        notes.append(f"relevance not conserved: the map sums to {_percent(c)} of the target logit"
                     + (f" and bias terms absorb {_percent(b)}" if abs(b) >= 0.005 else "")
                     + (f" (the softmax rule {_percent(soft)} of it)" if abs(soft) >= 0.005 else "")
                     + f", where the rules claim 100% ± {TOLERANCE:.0%}"
                     + ("; " + "; ".join(reasons) if reasons else ""))
    return reliable, notes
