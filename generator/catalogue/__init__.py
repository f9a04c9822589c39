"""The method catalogue: one torch-free entry per method, read by everything that describes,
validates or keys a method.

Each entry (:class:`MethodEntry`) holds the title, a one-line summary, the paper, the formula
(LaTeX), how to read the result, known limits, a version, typed parameters with defaults
(:class:`Param`) and extra table columns. Metadata kept apart from the code that computes, as
timm keeps its pretrained configs apart from its model factories; the attribution classes read
their ``version`` and ``defaults`` from here, so there is one place to change a default.

Public API::

    get(name, family="attribution") -> MethodEntry      # UnknownNameError with close matches
    entries(family=None) -> list of MethodEntry          # declaration order, family by family
    names(family) -> sorted names
    unknown_name(name, family) -> error message or None
    FAMILIES: family -> (what it answers, where it is configured)
    check_params(method, params) -> list of ParamProblem # unknown names, wrong types, ranges
    effective_params(method, params) -> dict            # what an artifact key must hash
    extra_columns(method=None) -> {key: (label, help)}
    method_info(method) -> {"title", "formula", "read", "limits", "citation"}
    add(entry)                                           # a plugin's own method

This package imports no torch (a test proves it in a fresh interpreter).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

from generator.catalogue import attnlrp as _attnlrp
from generator.catalogue import attribution as _attribution
from generator.catalogue import families as _families
from generator.catalogue import transformer as _transformer
from generator.catalogue.types import KINDS, MethodEntry, Param, ParamError, ParamProblem
from generator.registry import Registry, UnknownNameError

__all__ = [
    "FAMILIES", "KINDS", "MethodEntry", "Param", "ParamError", "ParamProblem", "UnknownNameError",
    "add", "check_params", "effective_params", "entries", "extra_columns", "get", "method_info", "names",
    "unknown_name",
]

#: Family -> (what it answers, where its methods are chosen in the config).
FAMILIES: Dict[str, Tuple[str, str]] = {
    "attribution": ("why this image got this label", "outcome.methods, evaluation.methods, evaluation.roar.methods"),
    "evaluation": ("how far each attribution method can be trusted", "evaluation.<check>"),
    "data": ("prototypes, influential training examples and rule surrogates", "data.<part>"),
    "features": ("what units of chosen layers respond to", "features"),
    "blocks": ("Building Blocks interfaces of one image and layer", "blocks"),
}

# The registry gives the same "unknown attribution method 'gradcm'; did you mean 'gradcam'?"
# messages as every other name in the project.
_REGISTRIES: Dict[str, "Registry[MethodEntry]"] = {
    family: Registry(f"{family} method") for family in FAMILIES
}
_ORDER: Dict[str, List[str]] = {family: [] for family in FAMILIES}


def add(entry: MethodEntry) -> MethodEntry:
    """Register ``entry`` (a plugin's method needs one before its class can be registered)."""
    if entry.family not in _REGISTRIES:
        raise ValueError(f"unknown method family {entry.family!r} (known: {', '.join(FAMILIES)})")
    unknown = sorted(set(entry.columns) - set(_attribution.COLUMNS))
    if unknown:
        raise ValueError(f"{entry.name}: unknown extra column(s) {unknown} (known: {list(_attribution.COLUMNS)})")
    _REGISTRIES[entry.family].add(entry.name, entry, entry.summary)
    _ORDER[entry.family].append(entry.name)
    return entry


for _entry in (*_attribution.ENTRIES, *_transformer.ENTRIES, *_attnlrp.ENTRIES, *_families.EVALUATION, *_families.DATA,
               *_families.FEATURES, *_families.BLOCKS):
    add(_entry)


def get(name: str, family: str = "attribution") -> MethodEntry:
    """The entry of ``name`` in ``family``; :class:`UnknownNameError` lists close matches."""
    if family not in _REGISTRIES:
        raise UnknownNameError("method family", family, list(FAMILIES))
    return _REGISTRIES[family].get(name)


def unknown_name(name: str, family: str = "attribution") -> Optional[str]:
    """The error message for an unknown method name, or None when it is known."""
    return _REGISTRIES[family].check(name)


def names(family: str = "attribution") -> List[str]:
    """Sorted names of a family's methods."""
    return _REGISTRIES[family].names()


def entries(family: Optional[str] = None) -> List[MethodEntry]:
    """Every entry of ``family`` (all families when None), in declaration order."""
    chosen = [family] if family is not None else list(FAMILIES)
    return [_REGISTRIES[f].get(n) for f in chosen for n in _ORDER[f]]


def check_params(method: str, params: Mapping[str, Any], family: str = "attribution") -> List[ParamProblem]:
    """Every problem of ``params`` for ``method``: unknown names (with close matches), wrong
    types and values out of range. Empty when they are valid."""
    return get(method, family).check(params)[1]


def effective_params(method: str, params: Mapping[str, Any], family: str = "attribution") -> Dict[str, Any]:
    """The parameters ``method`` actually runs with: its defaults (the family's shared ones,
    then its own) merged with ``params``, validated and normalised (ints where ints, floats
    where floats, lists for tuples), keys sorted. This is the exact dict an artifact key must
    hash, so a changed default changes the key. Raises :class:`ParamError` when invalid.

    >>> effective_params("smoothgrad", {"n_samples": 8.0})
    {'max_batch': 64, 'n_samples': 8, 'noise_level': 0.15, 'precision': 'fp32', 'seed': 0}
    """
    return get(method, family).effective(params)


def extra_columns(method: Optional[str] = None) -> Dict[str, Tuple[str, str]]:
    """Per-image table columns ``{key: (label, help)}``: every column (``method`` None) or
    those ``method`` declares, in the pages' column order."""
    if method is None:
        return dict(_attribution.COLUMNS)
    wanted = set(get(method).columns)
    return {k: v for k, v in _attribution.COLUMNS.items() if k in wanted}


def method_info(method: str, family: str = "attribution") -> Dict[str, str]:
    """Title, formula, reading guide, limits and citation of ``method``; for a name not in the
    catalogue (an artifact from a removed method), a title made from the name and empty texts,
    so an old report still renders."""
    try:
        entry = get(method, family)
    except UnknownNameError:
        return {"title": method.replace("_", " ").capitalize(), "formula": "", "read": "", "limits": "",
                "citation": ""}
    return {"title": entry.title, "formula": entry.formula, "read": entry.read, "limits": entry.limits,
            "citation": entry.citation}
