"""Checks of every path a config names, before any model loads or any work starts.

A missing weights file or dataset folder used to surface minutes into a run, as one failed
unit among many, and an unwritable output only after the whole run stage. These checks find
them in milliseconds and report each one as ``file:line: field: message``.

This module imports no torch: ``modelcard render`` runs the same checks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, List, Optional, Tuple

from generator.config import ConfigError, ReportConfig
from generator.resources import builtin_site_src

# A torchvision weights name: ``IMAGENET1K_V1``, ``DEFAULT`` or ``ResNet18_Weights.IMAGENET1K_V1``.
_WEIGHTS_NAME = re.compile(r"^([A-Za-z0-9]+_Weights\.)?[A-Z0-9_]+$")
# Values of ``weights`` that ask a hub for published weights rather than naming a file.
_HUB_WEIGHTS = {"pretrained"}


def weights_path(source: str, weights: Optional[str]) -> Optional[str]:
    """The local file ``weights`` names, or None when it names published weights instead."""
    if not weights:
        return None
    kind = source.partition(":")[0]
    if weights.lower() in _HUB_WEIGHTS:
        return None
    if kind == "torchvision" and _WEIGHTS_NAME.match(weights):
        return None
    if kind == "embedded":
        return None  # embedded models bring their own weights
    return weights


def writable_folder(folder: Path) -> Optional[str]:
    """Why ``folder`` cannot be created or written, or None when it can."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"{probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def input_problems(config: ReportConfig) -> List[str]:
    """Missing weights, class-name files, TorchScript files and dataset folders."""
    problems: List[str] = []

    def missing(loc: Tuple[Any, ...], path: Path, what: str, want_dir: bool = False) -> None:
        ok = path.is_dir() if want_dir else path.is_file()
        if not ok:
            state = "does not exist" if not path.exists() else f"is not a {'folder' if want_dir else 'file'}"
            problems.append(str(config.error(loc, f"{what} {path} {state}")))

    for i, mc in enumerate(config.models):
        local = weights_path(mc.source, mc.weights)
        if local is not None:
            missing(("models", i, "weights"), config.resolve(local), "weights file")
        if isinstance(mc.class_names, str):
            missing(("models", i, "class_names"), config.resolve(mc.class_names), "class names file")
        kind, _, argument = mc.source.partition(":")
        if kind == "torchscript" and argument:
            missing(("models", i, "source"), config.resolve(argument), "TorchScript file")
    from generator.data.sources import check_limit

    for i, dc in enumerate(config.datasets):
        try:
            check_limit(dc.source, dc.options)
        except ValueError as exc:
            problems.append(str(config.error(("datasets", i, "options", "limit"), str(exc))))
        kind, _, argument = dc.source.partition(":")
        if kind == "folder" and argument:
            missing(("datasets", i, "source"), config.resolve(argument), "image folder", want_dir=True)
        path_option = dc.options.get("path")
        if kind == "fashion-mnist" and isinstance(path_option, str):
            missing(("datasets", i, "options", "path"), config.resolve(path_option), "Fashion-MNIST folder",
                    want_dir=True)
    return problems


def output_problems(config: ReportConfig) -> List[str]:
    """Hand-written page folders that are missing, outputs that cannot be written."""
    problems: List[str] = []
    for i, entry in enumerate(config.site_src):
        folder = builtin_site_src(entry[len("builtin:"):]) if entry.startswith("builtin:") \
            else config.resolve(entry)
        if not folder.is_dir():
            problems.append(str(config.error(("site_src", i), f"site_src folder {folder} does not exist")))
    # The site folder has its own, stricter check (generator.render.site.check_site_dir).
    why = writable_folder(config.work_dir)
    if why:
        problems.append(str(config.error(("output", "work_dir"), f"cannot write the output there: {why}")))
    return problems


def check_config_paths(config: ReportConfig, *, inputs: bool = True) -> None:
    """Raise :class:`ConfigError` listing every path problem; ``inputs=False`` checks only what
    rendering needs."""
    problems = (input_problems(config) if inputs else []) + output_problems(config)
    if problems:
        raise ConfigError("\n".join(problems))
