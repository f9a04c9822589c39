"""Page builders, one module per part of the site, discovered automatically.

A builder gets the :class:`SiteContext`, writes its pages and images through
``site.writer`` and returns its navigation entries under a top-level section. Adding a
dimension's pages means adding a module here, without touching the renderer.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List

from generator.registry import Registry


@dataclass
class SiteContext:
    config: Any  # ReportConfig
    manifest: Any  # Manifest
    writer: Any  # SiteWriter
    models: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # filled by the model pages
    shared: Dict[str, Any] = field(default_factory=dict)  # values builders hand to later builders


@dataclass
class PageBuilder:
    """``build(site) -> nav entries``; ``section`` is the top-level tab they go under."""

    name: str
    order: int
    section: str
    build: Callable[[SiteContext], List[Any]]


PAGE_BUILDERS: Registry[PageBuilder] = Registry("page builder")


def register_pages(builder: PageBuilder) -> PageBuilder:
    PAGE_BUILDERS.add(builder.name, builder)
    return builder


def discover() -> List[PageBuilder]:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return sorted((PAGE_BUILDERS.get(n) for n in PAGE_BUILDERS.names()), key=lambda b: (b.order, b.name))
