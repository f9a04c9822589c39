"""Stages of the run, one module per dimension, discovered automatically.

A module registers its stage with :func:`register_stage`; adding a dimension means adding a
module here, without touching the runner.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Iterable, List

from generator.config import ModelConfig, ReportConfig
from generator.registry import Registry


@dataclass
class Stage:
    """One kind of work, run for every (model, dataset) pair it applies to.

    ``declare(ctx, model_config, dataset_id)`` yields the pair's units
    (:class:`generator.pipeline.units.Unit`); the runner keys, reuses or computes, and records
    each one. It may be a generator, so units declared later can depend on earlier results.
    ``expected(config)`` estimates how many units one pair has (for the progress bar).
    """

    name: str
    order: int
    declare: Callable[..., Iterable[Any]]
    enabled: Callable[[ReportConfig], bool] = lambda config: True
    expected: Callable[[ReportConfig], int] = lambda config: 1
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
