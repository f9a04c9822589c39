"""Sharding one run's units over the ranks of a torch.distributed job (``torchrun``).

Every rank loads the same config, models and datasets and walks the same plan of units in the
same order (the stages declare them deterministically). Each unit is given to one rank by a
rule every rank evaluates identically, so no messages are needed to agree: greedy balancing
by estimated cost (the unit goes to the rank with the least cost given so far; ties to the
lowest rank), and every unit of one ``group`` (e.g. the attribution methods of one model and
dataset, which share their backward passes) to the rank that got the group's first unit.

A rank computes only its own units, into the shared artifact store, with the store's atomic
writes. It does not wait for the others' units unless it needs one now: a unit that reads
another (``needs``), a declaration that asks whether another's artifact exists, or a unit
with an ``after`` callback (its result shapes later declarations). Waiting goes through the
store, not through messages: the artifact appears (a rename, so never half-written), or the
owner publishes a failure marker with the failures it recorded, or the owner says it has
finished its plan. Because every wait is for a unit declared earlier in the plan, and each
rank computes its own units in plan order, the earliest unfinished unit can always proceed:
no wait cycle can form.

Rank 0 holds the report folder's lock for the whole job, loads first (so a model trained at
load time is trained once), and writes the manifest after every rank has finished, in plan
order, so that it is byte-identical to a one-process run of the same config. State of one
job lives in ``<work_dir>/.shards/<run id>/`` and is removed at the end; the lock guarantees
that no other job is using the folder, so leftovers of killed jobs are removed at the start.

torch.distributed itself carries only the start: the run id and whether rank 0 got the lock.
Everything else goes through the shared folder, so a rank that computes for hours never hits
a collective's timeout, and a rank that dies leaves only finished artifacts behind (torchrun
then stops the others; a rerun reuses every finished unit).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from generator.artifacts.store import Artifact, ArtifactStore, write_json_atomic

log = logging.getLogger(__name__)

SHARDS_DIR = ".shards"
#: How often a waiting rank looks at the store (seconds): first quickly, then less often.
POLL_START, POLL_MAX = 0.02, 0.5
#: A rank waiting this long for one unit says so in the log (it keeps waiting).
SLOW_WAIT_SECONDS = 120.0
#: How often ranks tell rank 0 how many of their units are done (seconds).
PROGRESS_SECONDS = 2.0


class ShardError(RuntimeError):
    """The job cannot start (rank 0 could not lock the folder, or its loading failed)."""


@dataclass
class Outcome:
    """What became of a unit computed on another rank."""

    artifact: Optional[Artifact]
    failures: List[Tuple[str, str]] = field(default_factory=list)
    unsupported: List[Tuple[str, str]] = field(default_factory=list)


@dataclass
class Pending:
    """A unit of another rank that nobody needed yet: resolved when the manifest is written,
    and put back at the places its entry or failure takes in a one-process run."""

    kind: str
    key: str
    owner: int
    label: str
    labels: Dict[str, Any]
    seq: int  # its place in the plan among deferred units
    at: Dict[str, int]  # list name ("entries", "failures", "unsupported") -> index its items go to
    after: Optional[Callable[[Artifact], None]] = None


def distributed_env() -> Optional[Tuple[int, int, int]]:
    """``(rank, world size, local rank)`` when launched by torchrun with more than one rank."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ["RANK"]) if world > 1 else 0
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        # WORLD_SIZE without a usable RANK is not a torchrun job (a scheduler's variable): one process.
        return None
    return (rank, world, local) if world > 1 else None


class Shard:
    """This rank's view of the job: who owns which unit, and waiting for the others' units."""

    def __init__(self, rank: int, world: int, run_dir: Path, costs: Optional[Dict[str, float]] = None) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside a job of {world} ranks")
        self.rank, self.world, self.run_dir = rank, world, Path(run_dir)
        self.loads = [0.0] * world
        self.owners: Dict[Tuple[str, str], int] = {}
        self.groups: Dict[str, int] = {}
        # Measured seconds of units in an earlier run (label -> seconds), read once at the start
        # so every rank balances with the same numbers.
        self.costs = dict(costs or {})
        self.pending: List[Pending] = []
        self.resolved = 0  # deferred units resolved so far (keeps ``Pending.seq`` increasing)
        self.waited = 0.0  # seconds spent waiting for other ranks (not part of any unit's cost)
        self.finished = 0  # own units finished (computed, reused or failed)
        self._told = 0.0  # when progress was last written (other ranks) or read (rank 0)
        (self.run_dir / "failed").mkdir(parents=True, exist_ok=True)

    # --- assignment ------------------------------------------------------------------------

    def assign(self, kind: str, key: str, label: str, cost: float, group: Optional[str]) -> int:
        """The rank that computes this unit; the same answer on every rank, in plan order."""
        found = self.owners.get((kind, key))
        if found is not None:  # the same artifact declared twice (e.g. shared icons): one owner
            return found
        estimate = max(float(self.costs.get(label, cost)), 1e-3)
        if group is not None and group in self.groups:
            owner = self.groups[group]
        else:
            owner = min(range(self.world), key=lambda r: (self.loads[r], r))
            if group is not None:
                self.groups[group] = owner
        self.loads[owner] += estimate
        self.owners[(kind, key)] = owner
        return owner

    def owner_of(self, kind: str, key: str) -> Optional[int]:
        """The rank a unit declared in this job went to; None for keys not declared (yet)."""
        return self.owners.get((kind, key))

    # --- markers -----------------------------------------------------------------------------

    def _failure_path(self, kind: str, key: str) -> Path:
        return self.run_dir / "failed" / f"{kind.replace('/', '__')}__{key}.json"

    def publish_failure(self, kind: str, key: str, failures: List[Tuple[str, str]],
                        unsupported: List[Tuple[str, str]]) -> None:
        """Tell the other ranks that this rank's unit failed, with what it recorded."""
        write_json_atomic(self._failure_path(kind, key),
                          {"failures": [list(f) for f in failures], "unsupported": [list(u) for u in unsupported]})

    def _done_path(self, rank: int) -> Path:
        return self.run_dir / f"done-{rank}.json"

    def mark_done(self, stats: Dict[str, Any]) -> None:
        """This rank has walked its whole plan: nothing more of it will appear in the store."""
        write_json_atomic(self._done_path(self.rank), stats)

    def is_done(self, rank: int) -> bool:
        return self._done_path(rank).exists()

    def done_stats(self, rank: int) -> Dict[str, Any]:
        return json.loads(self._done_path(rank).read_text())

    # --- progress ----------------------------------------------------------------------------

    def progress(self, every: float = PROGRESS_SECONDS) -> Optional[str]:
        """Count one finished unit of this rank. The other ranks write their count to the job's
        folder every ``every`` seconds; rank 0 reads them as often and returns a line for its
        progress bar ("units done: rank 0 12, rank 1 15"), else None."""
        self.finished += 1
        now = time.monotonic()
        if now - self._told < every:
            return None
        self._told = now
        if self.rank != 0:
            write_json_atomic(self.run_dir / f"progress-{self.rank}.json", {"finished": self.finished})
            return None
        counts = [self.finished]
        for other in range(1, self.world):
            try:
                counts.append(int(json.loads((self.run_dir / f"progress-{other}.json").read_text())["finished"]))
            except (OSError, ValueError, KeyError):
                counts.append(0)  # not written yet
        return "units done: " + ", ".join(f"rank {r} {n}" for r, n in enumerate(counts))

    # --- waiting -----------------------------------------------------------------------------

    def wait(self, store: ArtifactStore, kind: str, key: str, label: str = "") -> Outcome:
        """Block until another rank's unit is stored, failed, or its rank finished without it."""
        started = time.monotonic()
        try:
            return self._wait(store, kind, key, label, started)
        finally:
            self.waited += time.monotonic() - started

    def _wait(self, store: ArtifactStore, kind: str, key: str, label: str, started: float) -> Outcome:
        owner = self.owners.get((kind, key))
        delay, warned = POLL_START, False
        while True:
            found = store.get(kind, key)
            if found is not None:
                return Outcome(found)
            marker = self._failure_path(kind, key)
            if marker.exists():
                data = json.loads(marker.read_text())
                return Outcome(None, [tuple(f) for f in data["failures"]],  # type: ignore[misc]
                               [tuple(u) for u in data["unsupported"]])  # type: ignore[misc]
            if owner is not None and self.is_done(owner):
                found = store.get(kind, key)  # stored just before the rank finished
                return Outcome(found)
            if not warned and time.monotonic() - started > SLOW_WAIT_SECONDS:
                warned = True
                log.warning("rank %d has waited %.0f s for %s (rank %s computes it)", self.rank,
                            time.monotonic() - started, label or f"{kind}/{key}", owner)
            time.sleep(delay)
            delay = min(POLL_MAX, delay * 1.5)

    def wait_for_ranks(self) -> None:
        """Until every rank has marked itself done."""
        delay = POLL_START
        while not all(self.is_done(r) for r in range(self.world)):
            time.sleep(delay)
            delay = min(POLL_MAX, delay * 1.5)


# --- the job: start and end ----------------------------------------------------------------

def init_process_group() -> None:
    """Join the torchrun job (gloo: only small control messages travel through it)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        # Long timeout: rank 0 may hold the others at the start while it trains a model at load.
        dist.init_process_group(backend="gloo", timeout=timedelta(hours=24))


def broadcast_start(payload: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Rank 0's start message (run id, or why the job cannot start) to every rank."""
    import torch.distributed as dist

    box = [payload]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def new_run_dir(work_dir: Path) -> Path:
    """A fresh folder for this job's markers; leftovers of earlier (killed) jobs are removed.

    Only called while holding the folder's lock: no other job can be using them."""
    root = Path(work_dir) / SHARDS_DIR
    if root.exists():
        shutil.rmtree(root, ignore_errors=True)
    run_dir = root / uuid.uuid4().hex[:12]
    run_dir.mkdir(parents=True)
    return run_dir


def remove_run_dir(run_dir: Path) -> None:
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        run_dir.parent.rmdir()  # .shards itself when empty
    except OSError:
        pass


COSTS_FILE = "unit-seconds.json"


def read_costs(work_dir: Path) -> Dict[str, float]:
    """Measured seconds per unit label from the last run in this folder (empty when none)."""
    path = Path(work_dir) / COSTS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float))} \
        if isinstance(data, dict) else {}


def write_costs(work_dir: Path, seconds: Dict[str, float]) -> None:
    """Keep the measured seconds of computed units for the next job's balancing."""
    old = read_costs(work_dir)
    old.update({k: round(float(v), 3) for k, v in seconds.items()})
    write_json_atomic(Path(work_dir) / COSTS_FILE, old)
