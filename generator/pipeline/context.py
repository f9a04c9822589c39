"""Shared state of one run: config, store, device, loaded models and datasets, manifest entries."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from generator.artifacts.store import Artifact, ArtifactStore
from generator.capability import Unsupported
from generator.config import ModelConfig, ReportConfig
from generator.data.dataset import Dataset
from generator.engine.hooks import script_hook_refusal
from generator.models.sources import LoadedModel
from generator.pipeline.progress import Progress

log = logging.getLogger(__name__)


def select_device(choice: str) -> torch.device:
    """``auto``: CUDA when available, else CPU. ``cuda`` without a GPU is an error."""
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("config asks for device: cuda, but no CUDA GPU is available (use auto or cpu)")
        return torch.device("cuda")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class RunContext:
    config: ReportConfig
    store: ArtifactStore
    device: torch.device
    progress: Progress
    models: Dict[str, LoadedModel] = field(default_factory=dict)
    datasets: Dict[str, Dataset] = field(default_factory=dict)
    entries: List[Dict[str, Any]] = field(default_factory=list)
    failures: List[Tuple[str, str]] = field(default_factory=list)  # units that failed: the exit code says so
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # unreadable input files, named and skipped
    unsupported: List[Tuple[str, str]] = field(default_factory=list)  # methods not defined for a model, why
    # Wall seconds of each unit run through the unit runner (reused ones included): what a build
    # spends its time on, for benchmarks/build.py; never part of a record or the manifest.
    unit_seconds: Dict[str, float] = field(default_factory=dict)

    def record(self, artifact: Artifact, **labels: Any) -> None:
        """Add an artifact to the manifest with labels the renderer looks it up by."""
        self.entries.append({"kind": artifact.kind, "key": artifact.key,
                             "path": str(artifact.path.relative_to(self.store.root)), **labels})

    def fail(self, what: str, exc: BaseException) -> None:
        """Record a failure and carry on: one broken unit never stops the report. A method that
        is not defined for the model (:class:`Unsupported`) is listed with its reason instead;
        so is torch refusing a hook on a TorchScript module, from code that attached it directly."""
        exc = script_hook_refusal(exc) or exc
        if isinstance(exc, Unsupported):
            self.unsupported.append((what, str(exc)))
            return
        message = f"{type(exc).__name__}: {exc}"
        log.debug("%s failed:\n%s", what, traceback.format_exc())
        self.failures.append((what, message))
        self.store.stats.failed.append((what, message))

    def pairs(self) -> List[Tuple[ModelConfig, str]]:
        """(model config, dataset id) for every dataset each loaded model runs on."""
        out = []
        for mc in self.config.models:
            if mc.id not in self.models:
                continue
            spec = self.models[mc.id].spec
            for ds_id in mc.datasets if mc.datasets is not None else list(self.datasets):
                ds = self.datasets.get(ds_id)
                if ds is None:
                    continue
                # Gray and RGB images convert into each other; other channel counts must match.
                if mc.datasets is None and spec.channels not in (1, 3) and ds.items \
                        and ds.items[0].pixels.shape[2] != spec.channels:
                    continue
                out.append((mc, ds_id))
        return out

    def guarded(self, what: str, fn: Callable[[], Any]) -> Optional[Any]:
        try:
            return fn()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - reported in the summary and on the site
            self.fail(what, exc)
            return None

