"""Validate a whole report config before any model loads, without torch.

:func:`~generator.config.parse_config` types every section (pydantic); this module checks what
the types cannot: that every name the config uses exists. Model and dataset sources, every
method in ``outcome`` (``methods`` and each ``methods_by_model`` list), ``evaluation``,
``evaluation.roar`` and ``compare``, every method's parameters (against the typed parameters of
:mod:`generator.catalogue`), and every model or dataset id used as a key or value in the
``outcome.methods_by_model``, ``features``, ``evaluation``, ``blocks`` and ``compare`` sections. A typo
costs a second, not a run, and every problem is reported at once as
``file:line: field: message`` with close matches.

``modelcard check`` runs only this; ``run``, ``build`` and ``render`` run it first.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from generator import catalogue
from generator.config import ConfigError, ReportConfig, load_config
from generator.registry import UnknownNameError

#: Model sources and embedded models, as registered by :mod:`generator.models.sources` (which
#: imports torch, so they are repeated here; a test keeps both lists equal).
MODEL_SOURCES = ("embedded", "python", "timm", "torchscript", "torchvision")
EMBEDDED_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "fashion_mnist_cnn")
#: The options each dataset source accepts besides ``limit`` (a test checks them against the
#: sources' own checks).
DATASET_OPTIONS: Dict[str, Tuple[str, ...]] = {
    "samples": ("names",),
    "folder": ("licence", "recursive"),
    "fashion-mnist": ("split", "path"),
}

Loc = Tuple[Any, ...]


def _model_sources() -> List[str]:
    # A run has imported the real registry, which may hold a plugin's source; ``check`` has not.
    module = sys.modules.get("generator.models.sources")
    return module.MODEL_SOURCES.names() if module is not None else list(MODEL_SOURCES)


def _unknown(kind: str, name: Any, known: Sequence[str]) -> str:
    return str(UnknownNameError(kind, str(name), list(known)))


class _Problems:
    """``file:line: field: message`` lines, in the order of the config."""

    def __init__(self, config: ReportConfig):
        self.config = config
        self.lines: List[str] = []

    def add(self, loc: Loc, message: str) -> None:
        self.lines.append(str(self.config.error(loc, message)))


def _check_sources(config: ReportConfig, out: _Problems) -> None:
    from generator.data.sources import DATASET_SOURCES, check_limit  # numpy only, no torch

    sources = _model_sources()
    for i, mc in enumerate(config.models):
        kind, _, argument = mc.source.partition(":")
        if kind not in sources:
            out.add(("models", i, "source"), _unknown("model source", kind, sources))
        elif kind == "embedded" and argument and argument not in EMBEDDED_MODELS:
            out.add(("models", i, "source"), _unknown("embedded model", argument, EMBEDDED_MODELS))
    for i, dc in enumerate(config.datasets):
        kind = dc.source.partition(":")[0]
        message = DATASET_SOURCES.check(kind)
        if message:
            out.add(("datasets", i, "source"), message)
            continue
        try:
            check_limit(dc.source, dc.options)
        except ValueError as exc:
            out.add(("datasets", i, "options", "limit"), str(exc))
        allowed = DATASET_OPTIONS.get(kind)
        if allowed is None:  # a plugin's source checks its own options when it loads
            continue
        for option in sorted(set(dc.options) - set(allowed) - {"limit"}):
            out.add(("datasets", i, "options", option),
                    _unknown(f"option of dataset source {kind!r}:", option, [*allowed, "limit"]))


def _check_methods(names: Iterable[str], loc: Loc, out: _Problems) -> None:
    for i, name in enumerate(names):
        message = catalogue.unknown_name(name, "attribution")
        if message:
            out.add(loc + (i,), message)


def _check_params(section: Mapping[str, Mapping[str, Any]], loc: Loc, listed: Sequence[str], what: str,
                  out: _Problems) -> None:
    for method, params in section.items():
        if method not in catalogue.names("attribution"):
            out.add(loc + (method,), catalogue.unknown_name(method, "attribution") or "")
            continue
        if method not in listed:
            out.add(loc + (method,), f"params given for method {method!r}, which {what} does not run "
                                     f"(it runs: {', '.join(listed) or 'none'})")
        for problem in catalogue.check_params(method, params):
            out.add(loc + (method, problem.param), problem.message)


def _check_ids(ids: Iterable[Any], loc: Loc, known: Sequence[str], kind: str, out: _Problems,
               by_index: bool = False) -> None:
    for i, value in enumerate(ids):
        if value not in known:
            out.add(loc + ((i,) if by_index else (value,)), _unknown(kind, value, known))


def _check_classes(config: ReportConfig, out: _Problems) -> None:
    """``features.classes``: names must be class names of the model where the config lists them."""
    models = {m.id: m for m in config.models}
    for model_id, classes in config.features.classes.items():
        mc = models.get(model_id)
        names = mc.class_names if mc is not None and isinstance(mc.class_names, list) else None
        count = len(names) if names is not None else (mc.num_classes if mc is not None else None)
        for i, ref in enumerate(classes):
            if isinstance(ref, int) and count is not None and not 0 <= ref < count:
                out.add(("features", "classes", model_id, i), f"class index {ref} out of range ({count} classes)")
            elif isinstance(ref, str) and names is not None and ref not in names and not ref.isdigit():
                out.add(("features", "classes", model_id, i), _unknown(f"class of model {model_id!r}:", ref, names))


def config_problems(config: ReportConfig) -> List[str]:
    """Every problem of ``config`` the section types cannot see, as ``file:line: field: message``."""
    out = _Problems(config)
    model_ids = [m.id for m in config.models]
    dataset_ids = [d.id for d in config.datasets]
    _check_sources(config, out)

    outcome = config.outcome
    _check_methods(outcome.methods, ("outcome", "methods"), out)
    _check_ids(outcome.methods_by_model, ("outcome", "methods_by_model"), model_ids, "model id", out)
    for model_id, methods in outcome.methods_by_model.items():
        _check_methods(methods, ("outcome", "methods_by_model", model_id), out)
    outcome_methods = outcome.all_methods(model_ids)
    _check_params(outcome.params, ("outcome", "params"), outcome_methods, "outcome", out)

    ev = config.evaluation
    if ev.methods is not None:
        _check_methods(ev.methods, ("evaluation", "methods"), out)
    _check_methods(ev.roar.methods, ("evaluation", "roar", "methods"), out)
    evaluated = list(dict.fromkeys([*(ev.methods if ev.methods is not None else outcome_methods), *ev.roar.methods]))
    _check_params(ev.params, ("evaluation", "params"), evaluated, "evaluation", out)
    for check in ("selectivity", "sensitivity", "sanity", "roar"):
        settings = getattr(ev, check)
        _check_ids(settings.models, ("evaluation", check, "models"), model_ids, "model id", out, by_index=True)
        _check_ids(settings.images_by_model, ("evaluation", check, "images_by_model"), model_ids, "model id", out)

    feats = config.features
    for field in ("layers", "examples_dataset", "classes", "deepdream_layers"):
        _check_ids(getattr(feats, field), ("features", field), model_ids, "model id", out)
    for model_id, dataset_id in feats.examples_dataset.items():
        if dataset_id not in dataset_ids:
            out.add(("features", "examples_dataset", model_id), _unknown("dataset id", dataset_id, dataset_ids))
    _check_classes(config, out)

    if feats.models is not None:
        _check_ids(feats.models, ("features", "models"), model_ids, "model id", out, by_index=True)
    if config.blocks.models is not None:
        _check_ids(config.blocks.models, ("blocks", "models"), model_ids, "model id", out, by_index=True)
    _check_compare(config, model_ids, out)
    _check_ids(config.compare.similarity.layers, ("compare", "similarity", "layers"), model_ids, "model id", out)
    if config.concepts.models is not None:
        _check_ids(config.concepts.models, ("concepts", "models"), model_ids, "model id", out, by_index=True)
    _check_ids(config.concepts.layers, ("concepts", "layers"), model_ids, "model id", out)
    return out.lines


def _check_compare(config: ReportConfig, model_ids: Sequence[str], out: _Problems) -> None:
    """``compare.models``: model ids; ``compare.methods``: attribution methods some compared model runs."""
    compare = config.compare
    models = compare.models
    if models is not None:
        _check_ids(models, ("compare", "models"), model_ids, "model id", out, by_index=True)
    methods = compare.methods
    if methods is None:
        return
    _check_methods(methods, ("compare", "methods"), out)
    compared = [m for m in (models if models is not None else model_ids) if m in model_ids]
    run = config.outcome.all_methods(compared)
    for i, name in enumerate(methods):
        if name in catalogue.names("attribution") and name not in run:
            out.add(("compare", "methods", i), f"method {name!r} is computed for none of the compared models "
                                                f"(they run: {', '.join(run) or 'none'}); add it to outcome.methods "
                                                "or outcome.methods_by_model")


def validate_config(config: ReportConfig) -> ReportConfig:
    """Raise :class:`ConfigError` listing every problem of ``config``; return it when valid."""
    problems = config_problems(config)
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def check_config(path: Optional[Union[str, Path]] = None) -> ReportConfig:
    """Load and fully validate the config at ``path`` (the embedded default when None): what
    ``modelcard check`` does. Imports no torch."""
    return validate_config(load_config(path))

