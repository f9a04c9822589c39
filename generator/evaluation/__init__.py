"""How far attribution methods can be trusted: selectivity (deletion / insertion), class
sensitivity, the cascading model-randomisation sanity check, ROAR / KAR (with ROAD's noisy
linear imputation), localisation, and the statistics that say how firm each finding is.

The names are imported on first use: :mod:`.statistics` is numpy only, and the renderer
imports it without torch (``import generator.evaluation.statistics`` must not pull in the
torch modules through this package).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "boxes_to_masks": "localisation", "energy_in_mask": "localisation", "pointing_game": "localisation",
    "remove_pixels": "roar", "roar_kar": "roar",
    "cascading_randomization": "sanity", "ssim": "sanity",
    "auc": "selectivity", "deletion_insertion": "selectivity",
    "class_sensitivity": "sensitivity", "pearson": "sensitivity", "spearman": "sensitivity",
    "noisy_linear_imputation": "imputation",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
