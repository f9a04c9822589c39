"""Run every configured stage and write the manifest the renderer reads."""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from generator.artifacts.lock import LockedError, report_lock
from generator.artifacts.store import ArtifactStore, json_bytes, write_json_atomic
from generator.config import ModelConfig, ReportConfig
from generator.data.sources import load_dataset
from generator.models.sources import LoadContext, ModelRequest, load_model
from generator.pipeline.context import RunContext, select_device
from generator.pipeline.inputs import clear_input_cache
from generator.pipeline.progress import Progress, RunSummary
from generator.pipeline.shard import (
    Shard,
    barrier,
    broadcast_start,
    distributed_env,
    init_process_group,
    new_run_dir,
    read_costs,
    remove_run_dir,
    write_costs,
)
from generator.pipeline.stages import Stage, discover
from generator.pipeline.units import Unit, run_unit, run_units
from generator.pipeline.validate import validate_names
from generator.preflight import check_config_paths
from generator.records import MANIFEST_SCHEMA_VERSION, SCHEMA_VERSIONS

log = logging.getLogger(__name__)



def model_request(config: ReportConfig, mc: ModelConfig) -> ModelRequest:
    overrides = {}
    for name in ("layers", "cam_layer", "embedding_layer", "input_size", "mean", "std", "resize", "interpolation",
                 "num_classes", "training"):
        value = getattr(mc, name)
        if value is not None:
            overrides[name] = value
    if mc.class_names is not None:
        if isinstance(mc.class_names, str):
            path = config.resolve(mc.class_names)
            if not path.exists():
                raise config.error(("models", config.models.index(mc), "class_names"), f"file {path} does not exist")
            overrides["class_names"] = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        else:
            overrides["class_names"] = list(mc.class_names)
    return ModelRequest(id=mc.id, source=mc.source, weights=mc.weights, overrides=overrides, base_dir=config.base_dir)


def _load_everything(ctx: RunContext) -> None:
    config = ctx.config
    bar = ctx.progress.stage("load datasets", len(config.datasets))
    for dc in config.datasets:
        ds = ctx.guarded(f"dataset {dc.id}",
                         lambda: load_dataset(dc.id, dc.source, dc.options, base_dir=config.base_dir))
        if ds is not None:
            ctx.datasets[dc.id] = ds
            for file, reason in ds.skipped:
                ctx.skipped.append((f"dataset {dc.id}: skipped {file}", reason))
            run_unit(ctx, _dataset_unit(ctx, ds))
        bar.update(1)
    bar.close()
    bar = ctx.progress.stage("load models", len(config.models))
    load_ctx = LoadContext(store=ctx.store, device=ctx.device, progress=ctx.progress.step)
    for mc in config.models:
        loaded = ctx.guarded(f"model {mc.id}", lambda: load_model(model_request(config, mc), load_ctx))
        if loaded is not None:
            loaded.module.to(ctx.device)
            ctx.models[mc.id] = loaded
            if run_unit(ctx, _model_unit(ctx, mc)) is not None:
                _record_training(ctx, mc)
        bar.update(1)
    bar.close()


def _dataset_unit(ctx: RunContext, ds) -> Unit:
    import numpy as np

    from generator.artifacts.store import npz_bytes

    thumbs = min(len(ds), 32)

    def compute():
        pixels = {f"img_{i}": ds.items[i].pixels for i in range(thumbs)}
        ids = np.array([it.id for it in ds.items[:thumbs]])
        return ds.summary(), {"summary": ("summary.json", json_bytes(ds.summary())),
                              "thumbs": ("thumbs.npz", npz_bytes(**pixels, ids=ids))}

    return Unit(kind="dataset", family="dataset", label=f"dataset {ds.id} summary", compute=compute, dataset=ds.id,
                settings={"thumbs": thumbs, "skipped": ds.skipped})


def _model_unit(ctx: RunContext, mc: ModelConfig) -> Unit:
    loaded = ctx.models[mc.id]
    spec = loaded.spec
    module = loaded.module

    def compute():
        params = sum(p.numel() for p in module.parameters())
        # the code digest too: a reviewer's diff says when the code computing the model changed
        info = {"model": mc.id, "title": mc.title or mc.id, "spec": {**spec.to_json(), "code_digest": spec.code_digest},
                "parameters": int(params),
                "card": mc.card.model_dump(), "class_names": spec.class_names,
                "modules": len(list(module.modules())), "training": loaded.artifacts.get("training"),
                "extra": {k: v for k, v in spec.extra.items() if isinstance(v, (int, float, str))}}
        return info, {"info": ("info.json", json_bytes(info))}

    return Unit(kind="model", family="model", label=f"model {mc.id} card", compute=compute, model=mc.id,
                settings={"spec": spec.to_json(), "card": mc.card.model_dump(), "title": mc.title})


def _record_training(ctx: RunContext, mc: ModelConfig) -> None:
    """The model's training artifact (written while loading it) goes into the manifest too."""
    loaded = ctx.models[mc.id]
    if "training" in loaded.artifacts:
        training = ctx.store.get("training", loaded.artifacts["training"])
        if training is not None:
            ctx.record(training, model=mc.id)


def enabled_stages(config: ReportConfig) -> List[Stage]:
    return [stage for stage in discover() if stage.enabled(config)]


def run_report(config: ReportConfig, *, show_progress: bool = True) -> RunSummary:
    """Compute every artifact the config asks for (reusing stored ones) and write the manifest.

    Names and paths are checked before anything loads; the report folder is locked against a
    second process for the whole run. Launched by torchrun with several ranks, the units are
    shared out among them (:mod:`generator.pipeline.shard`) and rank 0 writes the manifest."""
    validate_names(config)
    check_config_paths(config)
    job = distributed_env()
    if job is not None:
        return _run_sharded(config, show_progress, *job)
    with report_lock(config.work_dir, "modelcard run"):
        return _run_locked(config, show_progress)


def _run_sharded(config: ReportConfig, show_progress: bool, rank: int, world: int, local_rank: int) -> RunSummary:
    """One rank of a torchrun job: rank 0 holds the folder's lock and says where the job's
    markers go; every rank then runs the same plan, computing its own units."""
    init_process_group()
    with ExitStack() as held:
        start: Optional[Dict[str, Any]] = None
        if rank == 0:
            try:
                held.enter_context(report_lock(config.work_dir, f"modelcard run (torchrun, {world} ranks)"))
                start = {"run_dir": str(new_run_dir(config.work_dir)), "costs": read_costs(config.work_dir)}
            except LockedError as exc:
                start = {"error": str(exc)}
        start = broadcast_start(start)
        if "error" in start:
            raise LockedError(start["error"])
        shard = Shard(rank, world, Path(start["run_dir"]), start["costs"])
        return _run_locked(config, show_progress and rank == 0, shard=shard, local_rank=local_rank)


def _run_locked(config: ReportConfig, show_progress: bool, shard: Optional[Shard] = None,
                local_rank: int = 0) -> RunSummary:
    started = time.perf_counter()
    clear_input_cache()  # displayed inputs are shared between the stages of one run only
    torch.manual_seed(config.seed)
    work = config.work_dir
    store = ArtifactStore(work / "artifacts")
    ctx = RunContext(config=config, store=store, device=select_device(config.device, local_rank),
                     progress=Progress(show_progress))
    log.info("device: %s", ctx.device)
    stage_seconds = {}
    tick = time.perf_counter()
    if shard is None:
        _load_everything(ctx)
    else:
        # Rank 0 loads first, so a model trained while loading is trained once; the others
        # then load the same models and datasets, reusing what it stored.
        if shard.rank == 0:
            _load_everything(ctx)
        barrier()
        if shard.rank != 0:
            _load_everything(ctx)
        ctx.shard = shard
    stage_seconds["load"] = time.perf_counter() - tick
    pairs = ctx.pairs()
    for stage in enabled_stages(config):
        todo = [(mc, ds_id) for mc, ds_id in pairs if stage.applies(ctx, mc, ds_id)]
        expected = stage.expected(config)
        bar = ctx.progress.stage(stage.name, len(todo) * expected)
        tick = time.perf_counter()
        for mc, ds_id in todo:
            before = bar.n
            # Declaring can fail too (a bad layer name, no embedding layer): the pair is named then.
            ctx.guarded(f"{stage.name} of {mc.id} on {ds_id}",
                        lambda: run_units(ctx, stage.declare(ctx, mc, ds_id), bar))
            bar.update(max(0, before + expected - bar.n))  # keep counts right when a pair failed early
        bar.close()
        stage_seconds[stage.name] = time.perf_counter() - tick
    computed, reused = list(store.stats.computed), list(store.stats.reused)
    unit_seconds, computed_seconds = dict(ctx.unit_seconds), dict(ctx.computed_seconds)
    if shard is not None:
        shard.mark_done({"computed": computed, "reused": reused, "unit_seconds": unit_seconds,
                         "computed_seconds": computed_seconds})
        if shard.rank != 0:
            ctx.progress.close()
            return RunSummary(computed=computed, reused=reused, failed=list(ctx.failures), skipped=list(ctx.skipped),
                              unsupported=list(ctx.unsupported), seconds=time.perf_counter() - started, manifest="",
                              stage_seconds=stage_seconds, device=ctx.device.type, unit_seconds=unit_seconds,
                              rank=shard.rank, world=shard.world)
        tick = time.perf_counter()
        bar = ctx.progress.stage("other ranks' units", len(shard.pending))
        ctx.resolve(bar=bar)
        bar.close()
        shard.wait_for_ranks()
        for other in range(1, shard.world):
            stats = shard.done_stats(other)
            computed += [k for k in stats["computed"] if k not in computed]
            reused += stats["reused"]
            computed_seconds.update(stats["computed_seconds"])
            for label, seconds in stats["unit_seconds"].items():
                unit_seconds[label] = max(unit_seconds.get(label, 0.0), seconds)
        reused = list(dict.fromkeys(k for k in reused if k not in computed))
        stage_seconds["waiting for other ranks"] = time.perf_counter() - tick
    ctx.progress.close()
    manifest = {
        "version": MANIFEST_SCHEMA_VERSION,
        # The record schema each kind was written with: the renderer refuses a mismatch.
        "schemas": dict(SCHEMA_VERSIONS),
        "title": config.title,
        "device": ctx.device.type,
        "models": [mc.id for mc in config.models if mc.id in ctx.models],
        "datasets": [dc.id for dc in config.datasets if dc.id in ctx.datasets],
        "pairs": [[mc.id, ds] for mc, ds in pairs],
        "artifacts": ctx.entries,
        # Skipped input files are listed with the failures on the run page (they are named, not hidden).
        "failures": [{"what": w, "why": y} for w, y in ctx.skipped + ctx.failures],
        "unsupported": [{"what": w, "why": y} for w, y in ctx.unsupported],
    }
    manifest_path = work / "manifest.json"
    write_json_atomic(manifest_path, manifest)
    # Measured seconds of the units computed now: the next sharded run balances with them.
    write_costs(work, computed_seconds)
    # Which rank computed what, and how long it took: for reading a job, and for benchmarks/scale.py.
    write_json_atomic(work / "plan.json", [{**step, "seconds": round(computed_seconds[step["label"]], 3)
                                           if step["label"] in computed_seconds else None} for step in ctx.plan])
    if shard is not None:
        remove_run_dir(shard.run_dir)
    return RunSummary(computed=computed, reused=reused,
                      failed=list(ctx.failures), skipped=list(ctx.skipped), unsupported=list(ctx.unsupported),
                      seconds=time.perf_counter() - started, manifest=str(manifest_path),
                      stage_seconds=stage_seconds, device=ctx.device.type, unit_seconds=unit_seconds,
                      rank=0, world=1 if shard is None else shard.world)
