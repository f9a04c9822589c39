"""Check every name in the config against the registries before any work starts."""

from __future__ import annotations

from generator.config import ConfigError, ReportConfig


def validate_names(config: ReportConfig) -> None:
    """Raise :class:`ConfigError` listing each unknown source or method with its line and close matches."""
    from generator.data.sources import DATASET_SOURCES
    from generator.methods.attribution import ATTRIBUTION_METHODS
    from generator.models.sources import MODEL_SOURCES

    problems = []
    for i, mc in enumerate(config.models):
        message = MODEL_SOURCES.check(mc.source.partition(":")[0])
        if message:
            problems.append(str(config.error(("models", i, "source"), message)))
    for i, dc in enumerate(config.datasets):
        message = DATASET_SOURCES.check(dc.source.partition(":")[0])
        if message:
            problems.append(str(config.error(("datasets", i, "source"), message)))
    for i, method in enumerate(config.outcome.methods):
        message = ATTRIBUTION_METHODS.check(method)
        if message:
            problems.append(str(config.error(("outcome", "methods", i), message)))
    for method, params in config.outcome.params.items():
        if method in ATTRIBUTION_METHODS:
            cls = ATTRIBUTION_METHODS.get(method)
            known = {**getattr(cls, "common_defaults", {}), **getattr(cls, "defaults", {})}
            unknown = sorted(set(params) - set(known))
            if unknown:
                problems.append(str(config.error(("outcome", "params", method, unknown[0]),
                                                 f"unknown parameter(s) {unknown} for {method}; known: {sorted(known)}")))
    if problems:
        raise ConfigError("\n".join(problems))
