"""Find layers by their dotted name, with helpful errors."""

from __future__ import annotations

import difflib
from typing import List

import torch
from torch import nn


class LayerNotFoundError(KeyError):
    def __str__(self) -> str:
        return self.args[0]


def layer_names(model: nn.Module) -> List[str]:
    """Dotted names of every sub-module, in registration order (the root excluded)."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called ``name`` (e.g. ``"layer4.1.conv2"`` or ``"blocks.3"``).

    An unknown name raises an error that lists the closest existing names.
    """
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    known = [n for n in modules if n]
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.4)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise LayerNotFoundError(
        f"layer {name!r} not found in {type(model).__name__}{hint} "
        f"(top-level layers: {', '.join(n for n in known if '.' not in n)})"
    )


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")
