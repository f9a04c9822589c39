"""TCAV scores and their test against random concepts.

Kim et al. 2018, "Interpretability Beyond Feature Attribution: Quantitative Testing with
Concept Activation Vectors (TCAV)", ICML. For class k, layer l and a CAV v of concept C the
conceptual sensitivity of image x is the directional derivative of the class logit h_k along
the CAV, ``S(x) = grad h_k(f_l(x)) . v``; the TCAV score is the fraction of the class's images
with ``S(x) > 0`` (the concept makes the class more likely for that fraction).

**Computed once, scored many times.** The logit gradients at a layer do not depend on the
concept, so they are computed once per layer and class (:func:`generator.methods.concepts.
activations.logit_gradients`) and every CAV of every run is scored by one matrix product
``G_k V^T`` (:func:`tcav_scores`).

**Testing (after Kim et al., section 3.5).** A CAV fitted against one random set can point
anywhere the data allows; one score means little. Kim et al. fit the concept against many
random sets and t-test its scores against those of random-versus-random CAVs. With one fixed
folder of concept images every run shares that folder, so the runs vary only in their
counterexamples: in our simulation (a "concept" folder of random images, 16-dimensional
activations) that test called 40 % of random folders significant at 5 %. Here the concept is
treated as what it is, one draw of a set of images, and compared with J = R + 1 *random
concepts*: every random set fitted against the other R (the random-versus-random CAVs,
fitted in the same batch). The concept's mean score over its R + 1 runs is tested against
the J random concepts' mean scores by the t-test for one new observation,
``t = (m_C - mean(m_rand)) / (sd(m_rand) sqrt(1 + 1/J))`` with J - 1 degrees of freedom,
two-sided (5 % false positives for random folders in the same simulation). The p-values of all
classes x concepts x layers of a model are corrected together (Holm by default); a score whose
corrected p is above ``alpha`` is not a finding and is shown greyed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from generator.methods.concepts.cav import Fit, fit_cavs
from generator.methods.concepts.stats import Correction, adjust_p, t_two_sided_p

#: The name of the random baseline concept in results.
RANDOM = "random"


def tcav_scores(gradients: torch.Tensor, directions: torch.Tensor, mask: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
    """``K x R`` TCAV scores: for each class k (``gradients[k]``: ``N x D`` logit gradients) and
    each CAV r (``directions[r]``), the fraction of the class's images (``mask[k]``, default
    all N) whose directional derivative along the CAV is positive."""
    positive = torch.einsum("knd,rd->knr", gradients.float(), directions.float()) > 0
    if mask is None:
        return positive.float().mean(1)
    m = mask.to(positive.device).float()
    return (positive.float() * m[:, :, None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1)


@dataclass
class ClassTest:
    """One class x concept x layer: the concept's scores against the random concepts'."""

    scores: List[float]  # the concept's TCAV score against each random set
    random_means: List[float]  # each random concept's mean TCAV score (against the other random sets)
    mean: float
    std: float
    random_mean: float
    random_std: float
    t: float
    p: float
    p_adjusted: float = 1.0
    significant: bool = False


@dataclass
class ConceptAtLayer:
    """One concept at one layer: its CAVs' held-out accuracy, and a test per class."""

    accuracy: List[float]  # per run
    classes: List[ClassTest] = field(default_factory=list)


@dataclass
class TCAVResult:
    """layer -> concept -> :class:`ConceptAtLayer` (the random concepts pooled under :data:`RANDOM`,
    whose rows hold every random-versus-random score and are not tests)."""

    layers: Dict[str, Dict[str, ConceptAtLayer]]
    alpha: float
    correction: str
    tests: int


def _std(values: torch.Tensor) -> float:
    return float(values.std(unbiased=True)) if values.numel() > 1 else 0.0


def outlier_test(value: float, sample: Sequence[float]) -> Tuple[float, float]:
    """(t, two-sided p) of one new observation against a sample of J values: ``t = (value -
    mean) / (sd sqrt(1 + 1/J))``, J - 1 degrees of freedom. A sample without spread decides by
    equality (p 1 when equal, 0 when not)."""
    j = len(sample)
    if j < 2:
        raise ValueError("the test needs at least 2 random concepts")
    mean = math.fsum(sample) / j
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in sample) / (j - 1))
    if sd <= 0:
        same = abs(value - mean) <= 1e-12
        return (0.0 if same else math.copysign(math.inf, value - mean)), (1.0 if same else 0.0)
    t = (value - mean) / (sd * math.sqrt(1 + 1 / j))
    return t, t_two_sided_p(t, j - 1)


def run_tcav(concepts: Mapping[str, Mapping[str, torch.Tensor]], randoms: Mapping[str, torch.Tensor],
             gradients: Mapping[str, torch.Tensor], class_mask: Optional[torch.Tensor] = None, *,
             fit: Fit = "logistic", l2: float = 0.01, holdout: float = 0.3, seed: int = 0, alpha: float = 0.05,
             correction: Correction = "holm") -> TCAVResult:
    """The whole TCAV experiment on cached activations and gradients.

    ``concepts``: concept -> layer -> ``P x D`` activations of its images; ``randoms``: layer
    -> ``J x M x D`` activations of J >= 3 random sets; ``gradients``: layer -> ``K x N x D``
    logit gradients (:func:`~generator.methods.concepts.activations.logit_gradients`);
    ``class_mask``: ``K x N``, which images count for each class (default all). Each concept
    is fitted against every random set (J runs), each random set against the other J - 1; all
    CAVs of a layer are fitted in one batch when the positive sets have one size.
    """
    layers: Dict[str, Dict[str, ConceptAtLayer]] = {}
    pending: List[ClassTest] = []
    for layer, rand in randoms.items():
        j = rand.shape[0]
        if j < 3:
            raise ValueError(f"TCAV needs at least 3 random sets for its test; got {j}")
        others = [[i for i in range(j) if i != r] for r in range(j)]
        jobs = [(c, concepts[c][layer], rand) for c in concepts]
        jobs += [(f"{RANDOM}:{r}", rand[r], rand[others[r]]) for r in range(j)]
        fitted: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
        if len({p.shape[0] for _, p, _ in jobs}) == 1 and len({n.shape[1] for _, _, n in jobs}) == 1:
            positives = torch.cat([p[None].expand(len(n), -1, -1) for _, p, n in jobs])
            cavs = fit_cavs(positives, torch.cat([n for _, _, n in jobs]), fit=fit, l2=l2, holdout=holdout,
                            seed=seed)
            at = 0
            for name, _, n in jobs:
                fitted[name] = (cavs.directions[at:at + len(n)], cavs.accuracy[at:at + len(n)])
                at += len(n)
        else:
            for name, p, n in jobs:
                cavs = fit_cavs(p, n, fit=fit, l2=l2, holdout=holdout, seed=seed)
                fitted[name] = (cavs.directions, cavs.accuracy)
        grads = gradients[layer]
        all_dirs = torch.cat([d for d, _ in fitted.values()])
        all_scores = tcav_scores(grads, all_dirs, class_mask).cpu()  # K x (all CAVs): one product
        scores: Dict[str, torch.Tensor] = {}
        at = 0
        for name, (d, _) in fitted.items():
            scores[name] = all_scores[:, at:at + len(d)]
            at += len(d)
        random_means = torch.stack([scores[f"{RANDOM}:{r}"].mean(1) for r in range(j)], dim=1)  # K x J
        layers[layer] = {}
        for name in concepts:
            entry = ConceptAtLayer(accuracy=[float(a) for a in fitted[name][1]])
            for k in range(grads.shape[0]):
                s, r = scores[name][k], random_means[k]
                t, p = outlier_test(float(s.mean()), r.tolist())
                row = ClassTest(scores=[float(v) for v in s], random_means=[float(v) for v in r],
                                mean=float(s.mean()), std=_std(s), random_mean=float(r.mean()), random_std=_std(r),
                                t=float(t), p=float(p))
                entry.classes.append(row)
                pending.append(row)
            layers[layer][name] = entry
        base = ConceptAtLayer(accuracy=[float(a) for r in range(j) for a in fitted[f"{RANDOM}:{r}"][1]])
        for k in range(grads.shape[0]):
            flat = torch.cat([scores[f"{RANDOM}:{r}"][k] for r in range(j)])
            base.classes.append(ClassTest(scores=[float(v) for v in flat],
                                          random_means=[float(v) for v in random_means[k]],
                                          mean=float(flat.mean()), std=_std(flat),
                                          random_mean=float(random_means[k].mean()),
                                          random_std=_std(random_means[k]), t=0.0, p=1.0))
        layers[layer][RANDOM] = base
    for row, q in zip(pending, adjust_p([row.p for row in pending], correction)):
        row.p_adjusted = float(q)  # type: ignore[arg-type]
        row.significant = bool(q is not None and q < alpha)
    return TCAVResult(layers=layers, alpha=alpha, correction=correction, tests=len(pending))


def slow_tcav_score(model_logit_grad: Sequence[torch.Tensor], direction: torch.Tensor) -> float:
    """Reference for tests: the fraction of per-image gradients (one tensor each) with a
    positive dot product with ``direction``, one image at a time."""
    hits = sum(float((g.reshape(-1) * direction.reshape(-1)).sum()) > 0 for g in model_logit_grad)
    return hits / max(1, len(model_logit_grad))
