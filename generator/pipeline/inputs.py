"""Model inputs for a (model, dataset) pair, computed once per run and shared by stages."""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import torch

from generator.data.dataset import Dataset
from generator.engine.preprocess import display_images, normalise
from generator.models.spec import ModelSpec

_CACHE: Dict[Tuple[str, str, str], np.ndarray] = {}


def displayed(spec: ModelSpec, dataset: Dataset, limit: int) -> np.ndarray:
    """uint8 ``N x H x W x C`` of the first ``limit`` images as the model sees them (cached)."""
    key = (spec.weights_digest + repr((spec.input_size, spec.resize, spec.interpolation)), dataset.digest(), str(limit))
    if key not in _CACHE:
        _CACHE[key] = display_images([it.pixels for it in dataset.items[:limit]], spec)
    return _CACHE[key]


def clear_input_cache() -> None:
    _CACHE.clear()


def model_input(spec: ModelSpec, display: np.ndarray, device: torch.device) -> torch.Tensor:
    return normalise(display, spec, device)


def item_ids(dataset: Dataset, limit: int) -> List[str]:
    return [it.id for it in dataset.items[:limit]]
