"""Refuse non-finite numbers before they become a page.

A model that returns NaN or infinity (an overflow in half precision, a broken checkpoint, a
division by zero in user code) would otherwise be shown as ``cat (nan%)`` with a NaN map
presented as an explanation. These checks fail the unit instead, naming the model, the method
and the images, so the failure is listed in the run summary and nothing of it is published.
"""

from __future__ import annotations

from typing import Sequence

import torch


class NonFiniteError(ValueError):
    """A model output or an attribution map holds NaN or infinity."""


def _bad_rows(values: torch.Tensor) -> list:
    flat = values.detach().reshape(values.shape[0], -1) if values.ndim > 1 else values.detach()[:, None]
    return torch.nonzero(~torch.isfinite(flat).all(dim=1)).flatten().tolist()


def _names(ids: Sequence[str], rows: list) -> str:
    shown = ", ".join(str(ids[r]) if r < len(ids) else f"#{r}" for r in rows[:5])
    return shown + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")


def check_logits(model_id: str, logits: torch.Tensor, ids: Sequence[str]) -> None:
    """Raise :class:`NonFiniteError` when any image's logits are not all finite."""
    rows = _bad_rows(logits)
    if rows:
        raise NonFiniteError(f"model {model_id!r} returned NaN or infinite outputs for {len(rows)} of "
                             f"{logits.shape[0]} image(s): {_names(ids, rows)}; check its weights, its "
                             "preprocessing (mean/std) and the precision setting")


def check_maps(model_id: str, method: str, maps: torch.Tensor, ids: Sequence[str]) -> None:
    """Raise :class:`NonFiniteError` when any image's attribution map is not all finite."""
    rows = _bad_rows(maps)
    if rows:
        raise NonFiniteError(f"{method} on model {model_id!r} gave NaN or infinite maps for {len(rows)} of "
                             f"{maps.shape[0]} image(s): {_names(ids, rows)}; not shown as an explanation")
