"""The unit runner: keying, reuse, failure isolation, progress, recording, needs and the record
check, on a run context with a stand-in model and dataset (no stage involved)."""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path
from typing import List

import pytest
import torch

from generator.artifacts.store import ArtifactStore, json_bytes
from generator.models.spec import ModelSpec
from generator.pipeline import units
from generator.pipeline.context import RunContext
from generator.pipeline.progress import Progress
from generator.pipeline.units import MissingInput, Need, Unit, run_unit, run_units, unit_key

REAL_VALIDATOR = units._validator


@dataclass
class FakeDataset:
    id: str
    content: str

    def digest(self) -> str:
        return f"sha-{self.content}"


class Bar:
    """The part of a tqdm bar the runner uses."""

    def __init__(self, total: int):
        self.total, self.n = total, 0

    def update(self, k: int) -> None:
        self.n += k


def _ctx(tmp_path: Path, weights: str = "w1", code: str = "c1") -> RunContext:
    ctx = RunContext(config=None, store=ArtifactStore(tmp_path / "artifacts"), device=torch.device("cpu"),
                     progress=Progress(False))
    spec = ModelSpec(id="m", source="python:x:y", input_size=(3, 8, 8), mean=(0.5,) * 3, std=(0.5,) * 3,
                     class_names=["a", "b"], weights_digest=weights, code_digest=code)
    ctx.models["m"] = types.SimpleNamespace(spec=spec, module=None)
    ctx.datasets["d"] = FakeDataset("d", "pixels-1")
    return ctx


def _unit(calls: List[str], name: str = "u", value: int = 1, **kw) -> Unit:
    def compute(**needs):
        calls.append(name)
        return {"value": value, "needs": sorted(needs)}, {"data": ("data.json", json_bytes({"v": value}))}

    return Unit(kind="thing", family="predictions", label=f"{name} on m/d", compute=compute, model="m", dataset="d",
                params={"value": value}, **kw)


@pytest.fixture(autouse=True)
def no_record_schema(monkeypatch):
    """'thing' is no real artifact kind: the typed-record check is tested on its own below."""
    monkeypatch.setattr(units, "_validator", lambda: None)


def test_a_unit_is_computed_once_then_reused_and_recorded_with_its_labels(tmp_path: Path):
    ctx, calls = _ctx(tmp_path), []
    bar = Bar(2)
    first = run_unit(ctx, _unit(calls, labels={"method": "saliency"}), bar)
    second = run_unit(ctx, _unit(calls, labels={"method": "saliency"}), bar)
    assert calls == ["u"] and first.key == second.key and bar.n == 2
    assert ctx.store.stats.computed == [f"thing/{first.key}"] and ctx.store.stats.reused == [f"thing/{first.key}"]
    entry = ctx.entries[0]
    assert entry == {"kind": "thing", "key": first.key, "path": f"thing/{first.key}", "model": "m", "dataset": "d",
                     "method": "saliency"}
    assert first.record["value"] == 1


def test_key_covers_params_settings_model_weights_and_code_and_dataset(tmp_path: Path):
    base = unit_key(_ctx(tmp_path), _unit([]))
    assert base == unit_key(_ctx(tmp_path), _unit([]))
    assert base != unit_key(_ctx(tmp_path), _unit([], value=2))
    assert base != unit_key(_ctx(tmp_path), _unit([], settings={"seed": 1}))
    assert base != unit_key(_ctx(tmp_path, weights="w2"), _unit([]))
    assert base != unit_key(_ctx(tmp_path, code="c2"), _unit([]))  # same weights, other forward
    ctx = _ctx(tmp_path)
    ctx.datasets["d"] = FakeDataset("d", "pixels-2")
    assert base != unit_key(ctx, _unit([]))
    assert unit_key(ctx, _unit([], dataset_digest=False)) == unit_key(_ctx(tmp_path), _unit([], dataset_digest=False))
    assert base != unit_key(_ctx(tmp_path), _unit([], method="gradcam"))


def test_a_failing_unit_is_recorded_under_its_label_and_the_next_still_runs(tmp_path: Path):
    ctx, calls = _ctx(tmp_path), []

    def broken():
        raise ValueError("no such layer")

    bar = Bar(2)
    done = run_units(ctx, [Unit(kind="thing", family="predictions", label="gradcam on m/d", compute=broken,
                                model="m"), _unit(calls)], bar)
    assert done[0] is None and done[1] is not None and calls == ["u"] and bar.n == 2
    assert ctx.failures == [("gradcam on m/d", "ValueError: no such layer")]
    assert [e["kind"] for e in ctx.entries] == ["thing"]


def test_needs_are_passed_by_role_and_a_missing_one_fails_the_unit(tmp_path: Path):
    ctx, calls = _ctx(tmp_path), []
    source = run_unit(ctx, _unit(calls, "source"))
    got = {}

    def derived(examples):
        got["examples"] = examples
        return {"from": examples.key}, {}

    unit = Unit(kind="derived", family="features", label="deconv of m", compute=derived, model="m",
                needs={"examples": Need("thing", source.key)})
    art = run_unit(ctx, unit)
    assert got["examples"].key == source.key and art.record["from"] == source.key
    # the key follows the needed artifact's key
    other = Unit(kind="derived", family="features", label="deconv of m", compute=derived, model="m",
                 needs={"examples": Need("thing", "0" * 32)})
    assert unit_key(ctx, other) != art.key
    assert run_unit(ctx, other) is None
    assert ctx.failures[-1][0] == "deconv of m" and MissingInput.__name__ in ctx.failures[-1][1]


def test_units_declared_by_a_generator_can_depend_on_earlier_results(tmp_path: Path):
    ctx, calls = _ctx(tmp_path), []
    seen: List[int] = []

    def declare():
        for v in (1, 2):
            yield _unit(calls, f"u{v}", v, after=lambda art: seen.append(art.record["value"]))
        # declared only now: what the earlier units found decides this one (blocks' icons)
        yield _unit(calls, "sum", sum(seen))

    arts = run_units(ctx, declare(), Bar(1))
    assert calls == ["u1", "u2", "sum"] and arts[-1].record["value"] == 3


def test_the_bar_grows_when_a_stage_declares_more_units_than_it_estimated(tmp_path: Path):
    ctx, bar = _ctx(tmp_path), Bar(1)
    run_units(ctx, [_unit([], "a", 1), _unit([], "b", 2), _unit([], "c", 3)], bar)
    assert bar.n == 3 and bar.total == 3


def test_the_record_is_checked_before_it_is_stored(tmp_path: Path, monkeypatch):
    checked = []

    def validate(kind, record):
        checked.append(kind)
        if "value" in record:
            raise ValueError(f"{kind} record: field 'value' is not in the schema")

    monkeypatch.setattr(units, "_validator", lambda: validate)
    ctx = _ctx(tmp_path)
    unit = _unit([])
    assert run_unit(ctx, unit) is None
    assert checked == ["thing"] and ctx.store.get("thing", unit_key(ctx, unit)) is None
    assert ctx.failures == [("u on m/d", "ValueError: thing record: field 'value' is not in the schema")]


def test_the_record_check_is_the_typed_records_when_they_exist():
    try:
        import generator.records as records
    except ModuleNotFoundError:
        pytest.skip("typed records not written yet")
    assert REAL_VALIDATOR() is records.validate_record


def test_unknown_family_fails_the_unit_naming_it(tmp_path: Path):
    ctx = _ctx(tmp_path)
    unit = Unit(kind="thing", family="atribution", label="x on m/d", compute=lambda: ({}, {}), model="m")
    assert run_unit(ctx, unit) is None
    assert "did you mean 'attribution'" in ctx.failures[0][1]
