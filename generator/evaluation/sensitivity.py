"""Class sensitivity: does a method's map change when the explained class changes?"""

from __future__ import annotations

from typing import Dict

import torch


def _rank(v: torch.Tensor) -> torch.Tensor:
    order = v.argsort(dim=-1, stable=True)
    r = torch.empty_like(v)
    r.scatter_(-1, order, torch.arange(v.shape[-1], device=v.device, dtype=v.dtype).expand_as(v))
    return r


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of (B, ...) tensors."""
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-30)
    return ((a * b).sum(1) / den).float()


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Spearman rank correlation (ties broken by position)."""
    return pearson(_rank(a.flatten(1).double()), _rank(b.flatten(1).double()))


def class_sensitivity(
    methods: Dict[str, object],
    x: torch.Tensor,
    logits: torch.Tensor,
    *,
    seed: int = 0,
    threshold: float = 0.9,
) -> Dict[str, Dict[str, object]]:
    """For every method (name -> bound AttributionMethod): maps for the top-1, top-2 and a
    random other class; Spearman and Pearson correlations top-1 vs top-2 and top-1 vs random.
    A method is flagged ``class_insensitive`` when its mean top-1/top-2 Spearman correlation
    exceeds ``threshold``."""
    ranked = logits.argsort(dim=1, descending=True)
    top1, top2 = ranked[:, 0], ranked[:, 1]
    g = torch.Generator().manual_seed(seed)
    K = logits.shape[1]
    rnd = []
    for i in range(logits.shape[0]):
        choices = [c for c in range(K) if c not in (int(top1[i]), int(top2[i]))]
        rnd.append(choices[int(torch.randint(len(choices), (1,), generator=g))] if choices else int(top2[i]))
    rand = torch.tensor(rnd, device=logits.device)
    out: Dict[str, Dict[str, object]] = {}
    for name, method in methods.items():
        m1 = method.attribute(x, top1).maps
        m2 = method.attribute(x, top2).maps
        mr = method.attribute(x, rand).maps
        s12, s1r = spearman(m1, m2), spearman(m1, mr)
        out[name] = {
            "spearman_top2": s12, "spearman_random": s1r,
            "pearson_top2": pearson(m1, m2), "pearson_random": pearson(m1, mr),
            "class_insensitive": bool(s12.mean() > threshold),
            "targets": {"top1": top1, "top2": top2, "random": rand},
        }
    return out
