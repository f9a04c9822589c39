"""Check every name in the config against the registries before any work starts.

The checks live in :mod:`generator.validation` (torch-free, so ``modelcard check`` and
``render`` run the same ones); this is the run's entry point to them.
"""

from __future__ import annotations

from generator.config import ReportConfig
from generator.validation import validate_config


def validate_names(config: ReportConfig) -> None:
    """Raise :class:`~generator.config.ConfigError` listing every unknown source, method, model or
    dataset id and every invalid method parameter, each with its line and close matches."""
    validate_config(config)
