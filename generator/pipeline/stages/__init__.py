"""Stages of the run, one module per dimension, discovered automatically.

A module registers its stage with :func:`register_stage`; adding a dimension means adding a
module here, without touching the runner.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, List

from generator.config import ModelConfig, ReportConfig
from generator.registry import Registry


@dataclass
class Stage:
    """One kind of work, run for every (model, dataset) pair it applies to.

    ``run(ctx, model_config, dataset_id, bar)`` must call ``bar.update`` once per unit it
    finishes; ``units(config)`` says how many units one pair has (for the progress bar).
    """

    name: str
    order: int
    run: Callable[..., None]
    enabled: Callable[[ReportConfig], bool] = lambda config: True
    units: Callable[[ReportConfig], int] = lambda config: 1
    applies: Callable[[Any, ModelConfig, str], bool] = lambda ctx, mc, dataset_id: True


STAGES: Registry[Stage] = Registry("stage")


def register_stage(stage: Stage) -> Stage:
    STAGES.add(stage.name, stage)
    return stage


def discover() -> List[Stage]:
    """Import every stage module and return the stages in their order."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return sorted((STAGES.get(n) for n in STAGES.names()), key=lambda s: (s.order, s.name))
