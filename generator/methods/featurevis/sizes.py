"""Which input sizes a model accepts, checked once per size with one small forward pass.

Feature visualisation renders at a configured size (``features.size``; a profile's default),
which for most CNNs may differ from the model's input size. Some models refuse every size but
their own: a timm vision transformer built without ``dynamic_img_size`` asserts on the input
height, a CNN with a flatten-and-linear head fails at the head. Rather than let an optimisation
die on that assertion (or never start), :func:`fit_size` tries the asked size once, before
optimising, with a batch of one image that stops at the deepest layer needed, and falls back to
the model's own input size, with a note saying so for the record.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from generator.engine.hooks import capture_activations, run_until_stopped
from generator.engine.layers import get_layer, model_device

from .objectives import OUTPUT

HW = Tuple[int, int]

# model -> {(channels, h, w, layers): None if accepted, else the first line of the error}
_PROBED: "weakref.WeakKeyDictionary[nn.Module, Dict[Tuple[Any, ...], Optional[str]]]" = weakref.WeakKeyDictionary()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def refusal(model: nn.Module, channels: int, hw: Sequence[int], layers: Sequence[str] = (),
            device: "torch.device | str | None" = None) -> Optional[str]:
    """None when ``model`` runs a (1, channels, h, w) input up to ``layers`` (the whole model when
    empty or when it includes the output), else the first line of the error it raised. Cached per
    model; the model is left as it was (eval mode for the pass, every flag restored)."""
    from .render import frozen_model  # render imports this module

    names = tuple(sorted(set(layers)))
    key = (int(channels), int(hw[0]), int(hw[1]), names)
    per_model = _PROBED.setdefault(model, {})
    if key in per_model:
        return per_model[key]
    dev = torch.device(device) if device is not None else model_device(model)
    x = torch.zeros(1, int(channels), int(hw[0]), int(hw[1]), device=dev)
    stop = () if (not names or OUTPUT in names) else names
    modules = {n: get_layer(model, n) for n in stop}
    result: Optional[str] = None
    with frozen_model(model), torch.no_grad(), capture_activations(model, modules, stop_after=stop):
        try:
            run_until_stopped(model, x)
        except Exception as exc:  # any refusal: an assertion, a shape mismatch in a linear head
            result = _first_line(exc)
    per_model[key] = result
    return result


@dataclass(frozen=True)
class SizeFit:
    """The size to render at (``hw``), the size asked (``requested``) and, when they differ, a
    one-line ``note`` for the record."""

    hw: HW
    requested: HW
    note: str = ""

    @property
    def changed(self) -> bool:
        return self.hw != self.requested


def _px(hw: Sequence[int]) -> str:
    return f"{int(hw[0])}x{int(hw[1])} px"


def fit_size(model: nn.Module, spec: Any, hw: Sequence[int], *, layers: Sequence[str] = (),
             device: "torch.device | str | None" = None) -> SizeFit:
    """``hw`` if the model accepts it (up to ``layers``), else the spec's input size with a note.

    Raises ValueError (one line naming the model, the size asked and the size accepted) when the
    model refuses its own input size too.
    """
    asked: HW = (int(hw[0]), int(hw[1]))
    native: HW = (int(spec.input_size[1]), int(spec.input_size[2]))
    if asked == native:
        return SizeFit(asked, asked)
    err = refusal(model, spec.channels, asked, layers, device)
    if err is None:
        return SizeFit(asked, asked)
    name = getattr(spec, "id", "") or type(model).__name__
    err_native = refusal(model, spec.channels, native, layers, device)
    if err_native is not None:
        raise ValueError(f"model {name!r} refuses the {_px(asked)} asked and its own {_px(native)} input size "
                         f"({err_native})")
    return SizeFit(native, asked, note=f"model {name!r} refuses {_px(asked)} inputs ({err}); rendered at its own "
                                       f"input size, {_px(native)}, instead of the {_px(asked)} asked")


__all__ = ["SizeFit", "fit_size", "refusal"]
