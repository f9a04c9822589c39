"""Units of work and the one runner that keys, caches, isolates, counts and records them.

A stage *declares* units; it does no bookkeeping. A :class:`Unit` says what it produces (an
artifact ``kind``), what determines it (parameters, settings, the code ``family``) and what it
needs (a model id, a dataset id, other artifacts by key), and holds a ``compute`` function that
returns ``(record, files)``. :func:`run_units` then, for each unit:

1. computes its key from everything it names (:func:`unit_key`, via
   :func:`generator.artifacts.keys.effective_key`);
2. reuses the stored artifact, or resolves its needs, computes, checks the record
   (``generator.records.validate_record`` where that module exists) and stores it;
3. records a failure without stopping the report (``ctx.fail``, under the unit's label);
4. advances the progress bar and adds the artifact to the manifest (``ctx.record``).

Because a unit names everything it needs and its key depends on nothing else, units can be
computed in any process that has the same models and datasets loaded: the runner is the only
place that would change to shard them.

The smallest stage::

    def declare(ctx, mc, dataset_id):
        yield Unit(kind="predictions", family="predictions", label=f"predictions of {mc.id} on {dataset_id}",
                   model=mc.id, dataset=dataset_id, params={"top_k": 5},
                   compute=lambda: ({"accuracy": 0.9}, {}))

    register_stage(Stage(name="predictions", order=10, declare=declare))
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple, Union

from generator.artifacts.keys import ModelIdentity, effective_key
from generator.artifacts.store import Artifact, FileContent

if TYPE_CHECKING:  # the context imports torch; the units themselves need not
    from generator.pipeline.context import RunContext


#: What a compute function returns: the record and role -> (file name, content).
Computed = Tuple[Dict[str, Any], Mapping[str, Tuple[str, FileContent]]]


class Need(NamedTuple):
    """Another artifact a unit reads, by kind and key."""

    kind: str
    key: str


@dataclass
class Unit:
    """One artifact's worth of work.

    ``compute(**needs)`` receives each artifact of ``needs`` as a keyword argument named by its
    role (most units need none and take no arguments).
    """

    kind: str
    family: str  # code family whose fingerprint enters the key (see generator.artifacts.keys.FAMILIES)
    label: str  # names the unit in failures and logs, e.g. "saliency on tiny/pics"
    compute: Callable[..., Computed]
    model: Optional[str] = None  # id of the model it runs; its weights and code enter the key
    dataset: Optional[str] = None  # id of the dataset it reads; id (and digest) enter the key
    dataset_digest: bool = True  # False when ``inputs`` names the exact pixels (adding an image recomputes nothing)
    needs: Mapping[str, Need] = field(default_factory=dict)  # role -> artifact it reads
    inputs: Mapping[str, Any] = field(default_factory=dict)  # other input digests (a data split, pixels)
    params: Mapping[str, Any] = field(default_factory=dict)  # effective parameters
    settings: Mapping[str, Any] = field(default_factory=dict)  # anything else that determines it (seed, device)
    method: str = ""  # the method, where one kind has several (attribution)
    method_version: str = ""
    version: str = "1"  # the producer's own version of this kind (bumped by hand when its meaning changes)
    labels: Mapping[str, Any] = field(default_factory=dict)  # manifest labels beyond model and dataset
    after: Optional[Callable[[Artifact], None]] = None  # runs on the artifact, computed or reused
    # For sharding over ranks (generator.pipeline.shard): an estimate of the unit's seconds on a
    # CPU (replaced by the measured time of an earlier run when there is one), and a group whose
    # units must run in one process because they share work (one joint attribution pass).
    cost: float = 1.0
    group: Optional[str] = None


class MissingInput(RuntimeError):
    """A unit's needed artifact is not in the store (its own unit failed or never ran)."""


def unit_key(ctx: "RunContext", unit: Unit) -> str:
    """The artifact key of ``unit`` in the run ``ctx`` (models and datasets loaded there)."""
    inputs: Dict[str, Any] = {}
    if unit.dataset is not None:
        ds = ctx.datasets[unit.dataset]
        inputs["dataset"] = {"id": unit.dataset, "digest": ds.digest() if unit.dataset_digest else None}
    inputs.update({f"need:{role}": need.key for role, need in unit.needs.items()})
    inputs.update(unit.inputs)
    model = ModelIdentity.of(ctx.models[unit.model].spec) if unit.model is not None else None
    return effective_key(unit.kind, family=unit.family, version=unit.version, method=unit.method,
                         method_version=unit.method_version, params=unit.params, model=model, inputs=inputs,
                         **unit.settings)


def _validator() -> Optional[Callable[[str, Dict[str, Any]], None]]:
    """``generator.records.validate_record`` when the typed records exist, else None."""
    try:
        records = importlib.import_module("generator.records")
    except ModuleNotFoundError as exc:
        if exc.name != "generator.records":
            raise
        return None
    return getattr(records, "validate_record", None)


def _compute(ctx: "RunContext", unit: Unit) -> Computed:
    needed: Dict[str, Artifact] = {}
    for role, need in unit.needs.items():
        found = ctx.lookup(need.kind, need.key)  # waits when another rank computes it
        if found is None:
            raise MissingInput(f"needs {role} ({need.kind}/{need.key}), which failed or was not computed")
        needed[role] = found
    record, files = unit.compute(**needed)
    validate = _validator()
    if validate is not None:
        # Before storing: a record that does not fit its schema must never reach the store.
        validate(unit.kind, record)
    return record, files


def _advance(bar: Any) -> None:
    if bar is None:
        return
    if bar.total is not None and bar.n >= bar.total:
        bar.total += 1  # more units than the stage estimated: grow the bar rather than overflow it
    bar.update(1)


def run_unit(ctx: "RunContext", unit: Unit, bar: Any = None) -> Optional[Artifact]:
    """Key, reuse or compute, and record one unit; None when it failed (the failure is recorded)
    or, in a sharded run, when another rank computes it and nothing needs it yet."""
    shard = ctx.shard
    started = time.perf_counter()
    key = ctx.guarded(unit.label, lambda: unit_key(ctx, unit))
    if key is None:
        _advance(bar)
        return None
    owner = 0
    if shard is not None:
        owner = shard.assign(unit.kind, key, unit.label, unit.cost, unit.group)
    ctx.plan.append({"label": unit.label, "kind": unit.kind, "key": key, "group": unit.group, "cost": unit.cost,
                     "rank": owner})
    if shard is not None:
        if owner != shard.rank:
            # Not waited for now: a placeholder the manifest fills in, resolved earlier only when
            # something needs it (a ``needs``, a lookup, a SYNC before declarations that use ``after``).
            ctx.defer(unit.kind, key, owner, unit.label, _labels(unit), unit.after)
            _advance(bar)
            return None
    failures, unsupported = len(ctx.failures), len(ctx.unsupported)

    waited = shard.waited if shard is not None else 0.0

    def work() -> Artifact:
        artifact, computed = ctx.store.get_or_compute(unit.kind, key, lambda: _compute(ctx, unit))
        if computed:  # its own cost, for balancing the next run: time spent waiting for others is not
            idle = (shard.waited - waited) if shard is not None else 0.0
            ctx.computed_seconds[unit.label] = time.perf_counter() - started - idle
        return artifact

    artifact = ctx.guarded(unit.label, work)
    ctx.unit_seconds[unit.label] = ctx.unit_seconds.get(unit.label, 0.0) + time.perf_counter() - started
    if artifact is None and shard is not None:
        # The other ranks record the same failure lines in the same places of their lists.
        shard.publish_failure(unit.kind, key, ctx.failures[failures:], ctx.unsupported[unsupported:])
    if shard is not None:
        note = shard.progress()  # rank 0's bar shows every rank's count
        if note is not None and bar is not None:
            bar.set_postfix_str(note, refresh=False)
    _finish(ctx, unit, artifact)
    _advance(bar)
    return artifact


def _labels(unit: Unit) -> Dict[str, Any]:
    labels = {name: value for name, value in (("model", unit.model), ("dataset", unit.dataset))
              if value is not None}
    return {**labels, **unit.labels}


def _finish(ctx: "RunContext", unit: Unit, artifact: Optional[Artifact]) -> None:
    """Record the artifact in the manifest and run the unit's ``after`` on it."""
    if artifact is None:
        return
    ctx.record(artifact, **_labels(unit))
    after = unit.after
    if after is not None:
        ctx.guarded(unit.label, lambda: after(artifact))


class Sync:
    """Yielded by a stage between units whose ``after`` callbacks collect state and the
    declarations that read it: in a sharded run every earlier unit's ``after`` has run (on
    every rank) before the stage continues. A no-op in a one-process run."""


SYNC = Sync()


def run_units(ctx: "RunContext", units: Iterable[Union[Unit, Sync]], bar: Any = None) -> List[Optional[Artifact]]:
    """Run every unit in order. ``units`` may be a generator: a stage whose later units depend
    on earlier results (which channels to render icons for) declares them after those ran,
    yielding :data:`SYNC` first."""
    out: List[Optional[Artifact]] = []
    for unit in units:
        if isinstance(unit, Sync):
            ctx.resolve(lambda pending: pending.after is not None)
            continue
        out.append(run_unit(ctx, unit, bar))
    return out
