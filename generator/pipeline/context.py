"""Shared state of one run: config, store, device, loaded models and datasets, manifest entries."""

from __future__ import annotations

import logging
import os
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
from generator.pipeline.shard import Pending, Shard

log = logging.getLogger(__name__)


def select_device(choice: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when available, else CPU. ``cuda`` without a GPU is an error. In a torchrun
    job each rank of a machine takes the GPU of its local rank."""
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config asks for device: cuda, but no CUDA GPU is available (use auto or cpu)")
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if local_rank == 0 and "LOCAL_RANK" not in os.environ:
        return torch.device("cuda")
    index = local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


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
    computed_seconds: Dict[str, float] = field(default_factory=dict)  # of computed units only
    # Every unit in plan order with the rank that computes it (written as plan.json).
    plan: List[Dict[str, Any]] = field(default_factory=list)
    # Set in a job of several ranks (torchrun): which rank computes which unit.
    shard: Optional[Shard] = None

    def lookup(self, kind: str, key: str) -> Optional[Artifact]:
        """The stored artifact, as ``store.get``; in a sharded run a unit another rank computes
        in this job is waited for first (its absence would mean something else there)."""
        shard = self.shard
        if shard is not None:
            owner = shard.owner_of(kind, key)
            if owner is not None and owner != shard.rank:
                return shard.wait(self.store, kind, key).artifact
        return self.store.get(kind, key)

    def defer(self, kind: str, key: str, owner: int, label: str, labels: Dict[str, Any],
              after: Optional[Callable[[Artifact], None]] = None) -> None:
        """Hold the places another rank's unit takes in the manifest's lists (see :meth:`resolve`)."""
        assert self.shard is not None
        self.shard.pending.append(Pending(kind=kind, key=key, owner=owner, label=label, labels=labels, after=after,
                                          seq=len(self.shard.pending) + self.shard.resolved,
                                          at={"entries": len(self.entries), "failures": len(self.failures),
                                              "unsupported": len(self.unsupported)}))

    def resolve(self, only: Optional[Callable[[Pending], bool]] = None, bar: Any = None) -> None:
        """Wait for deferred units (all, or those ``only`` selects), in plan order, run their
        ``after`` and put their entry and failures where a one-process run puts them."""
        shard = self.shard
        if shard is None:
            return
        for pending in [p for p in shard.pending if only is None or only(p)]:
            outcome = shard.wait(self.store, pending.kind, pending.key, pending.label)
            values: Dict[str, List[Any]] = {"entries": [], "failures": list(outcome.failures),
                                            "unsupported": list(outcome.unsupported)}
            if outcome.artifact is not None:
                values["entries"].append(self._entry(outcome.artifact, pending.labels))
                if pending.after is not None:
                    # Failures of the callback belong right after the unit, not at the lists' ends.
                    marks = len(self.failures), len(self.unsupported)
                    after, artifact = pending.after, outcome.artifact
                    self.guarded(pending.label, lambda: after(artifact))
                    values["failures"] += self.failures[marks[0]:]
                    values["unsupported"] += self.unsupported[marks[1]:]
                    del self.failures[marks[0]:], self.unsupported[marks[1]:]
            shard.pending.remove(pending)
            shard.resolved += 1
            for name, items in values.items():
                at = pending.at[name]
                getattr(self, name)[at:at] = items
                for other in shard.pending:  # later places move by what went in before them
                    if other.at[name] > at or (other.at[name] == at and other.seq > pending.seq):
                        other.at[name] += len(items)
            if bar is not None:
                bar.update(1)

    def find_entry(self, kind: str, **labels: Any) -> Optional[Dict[str, Any]]:
        """The manifest entry this run recorded with these labels (None: it failed or never ran);
        a matching unit of another rank is waited for first."""
        def matches(found: Dict[str, Any]) -> bool:
            return found.get("kind") == kind and all(found.get(k) == v for k, v in labels.items())

        if self.shard is not None:
            self.resolve(lambda p: p.kind == kind and matches({"kind": p.kind, **p.labels}))
        return next((e for e in self.entries if matches(e)), None)

    def record(self, artifact: Artifact, **labels: Any) -> None:
        """Add an artifact to the manifest with labels the renderer looks it up by."""
        self.entries.append(self._entry(artifact, labels))

    def _entry(self, artifact: Artifact, labels: Dict[str, Any]) -> Dict[str, Any]:
        return {"kind": artifact.kind, "key": artifact.key, "path": str(artifact.path.relative_to(self.store.root)),
                **labels}

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

