"""Turn target specifications (index, class name, "predicted", "second", one per image) into a
(B,) index tensor."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from ...models.spec import ModelSpec

TargetSpec = Union[int, str, Sequence[Union[int, str]], torch.Tensor, None]


def resolve_targets(target: TargetSpec, logits: torch.Tensor, spec: Optional[ModelSpec] = None) -> torch.Tensor:
    """(B,) long tensor of class indices.

    ``None`` or "predicted": the arg-max class of each image; "second": the runner-up; an int
    or a class name (resolved through ``spec``): the same class for every image; a sequence or
    tensor: one entry per image (entries may mix indices, names, "predicted").
    """
    B = logits.shape[0]
    ranked = logits.argsort(dim=1, descending=True)

    def one(t, i: Optional[int]):
        if t is None or t == "predicted":
            return ranked[:, 0] if i is None else ranked[i, 0]
        if t == "second":
            return ranked[:, 1] if i is None else ranked[i, 1]
        if isinstance(t, (int,)) or (isinstance(t, str) and t.isdigit()):
            idx = int(t)
        elif isinstance(t, str):
            if spec is None:
                raise ValueError(f"class name {t!r} needs a ModelSpec to resolve")
            idx = spec.class_index(t)
        else:
            raise TypeError(f"cannot use {t!r} as a target")
        if not 0 <= idx < logits.shape[1]:
            raise ValueError(f"target {idx} out of range ({logits.shape[1]} classes)")
        if i is None:
            return torch.full((B,), idx, dtype=torch.long, device=logits.device)
        return torch.tensor(idx, device=logits.device)

    if isinstance(target, torch.Tensor):
        flat = target.to(logits.device, torch.long).view(-1)
        return flat.expand(B).clone() if target.numel() == 1 else flat
    if target is None or isinstance(target, (int, str)):
        return one(target, None).long()
    items = list(target)
    if len(items) != B:
        raise ValueError(f"got {len(items)} targets for {B} images")
    return torch.stack([torch.as_tensor(one(t, i), device=logits.device) for i, t in enumerate(items)]).long()
