"""Sharding a run over torch.distributed ranks (gloo on the CPU, launched by torchrun).

Checked: the assignment is the same on every rank, balanced by cost, and keeps a group on one
rank; placeholders of other ranks' units land where a one-process run puts them, failures
included; 2 ranks write byte-identical artifacts and manifest to 1 process; a rank killed
mid-run leaves only whole artifacts, and the rerun computes exactly the unfinished units; a
second run on a folder in use is refused, naming the holder, and harms nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict

import pytest
from _blocks_report import BLOCKS_SECTION
from conftest import TINY_MODEL_MODULE, write_image_folder

from generator.artifacts.store import ArtifactStore, read_record
from generator.pipeline.shard import Shard

# The tiny CNN of conftest with a first layer that does nothing, except on request of files in
# $TRAP_DIR: "die-rank-1" makes rank 1 exit hard after that many forward calls (a crashed
# rank); "hold" pauses every forward while it exists (a long run to collide with). The same
# module serves every run of a test, so the model's code (part of every key) is the same.
TRAP_MODEL = TINY_MODEL_MODULE + textwrap.dedent('''
    import os, time

    class Trap(nn.Module):
        calls = 0

        def forward(self, x):
            trap = os.environ.get("TRAP_DIR")
            if trap:
                die = os.path.join(trap, "die-rank-1")
                if os.environ.get("RANK") == "1" and os.path.exists(die):
                    Trap.calls += 1
                    if Trap.calls > int(open(die).read()):
                        os._exit(9)
                while os.path.exists(os.path.join(trap, "hold")):
                    time.sleep(0.05)
            return x

    tiny = build

    def build():
        model, spec = tiny()
        trapped = nn.Sequential()
        trapped.add_module("trap", Trap())
        for name, child in model.named_children():
            trapped.add_module(name, child)
        return trapped, spec
''')


def write_report(root: Path) -> Path:
    """Two tiny models on a folder of images, with stages whose units wait for each other
    across ranks: attribution (a group), evaluation and comparison (need the maps), building
    blocks (``after`` callbacks, then declarations that use them), features."""
    images = write_image_folder(root / "images", n_per_class=3)
    (root / "trapmodel.py").write_text(TRAP_MODEL)
    config = root / "report.yaml"
    config.write_text(textwrap.dedent(f'''
        title: "Sharded"
        device: cpu
        models:
          - id: tiny
            source: python:trapmodel:build
          - id: twin
            source: python:trapmodel:build
        datasets:
          - id: pics
            source: folder:{images}
        outcome:
          methods: [saliency, gradient_x_input, smoothgrad, vargrad, gradcam, gradcam_pp, integrated_gradients]
          images: 4
        evaluation:
          selectivity: {{images: 2}}
          sensitivity: {{images: 2}}
          sanity: {{images: 2}}
          roar: {{enabled: false}}
        features:
          enabled: true
          profile: quick
          steps: 4
          channels: 2
    ''') + BLOCKS_SECTION)
    return config


def _env(trap: Path) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                           "MASTER_PORT")}
    # One thread per process, so a 1-process run and each rank do the same arithmetic.
    return {**env, "OMP_NUM_THREADS": "1", "TRAP_DIR": str(trap)}


def run_cli(config: Path, ranks: int, trap: Path, wait: bool = True):
    """``python -m generator run`` as one process, or under torchrun with ``ranks`` ranks."""
    if ranks == 1:
        cmd = [sys.executable, "-m", "generator", "run", str(config), "-q"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "-m", "generator", "run", str(config), "-q"]
    proc = subprocess.Popen(cmd, cwd=config.parent, env=_env(trap), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out


def artifact_bytes(work: Path) -> Dict[str, bytes]:
    root = work / "artifacts"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """One report folder for every job of this module: artifacts record the images' paths, so
    runs compared byte for byte must read the same folder (each test starts from an empty
    output folder)."""
    return write_report(tmp_path_factory.mktemp("sharded"))


@pytest.fixture(scope="module")
def reference(report: Path):
    """The report computed by one process: artifacts and manifest every sharded run must equal."""
    code, out = run_cli(report, 1, report.parent / "trap")
    assert code == 0, out
    work = report.parent / ".modelcard"
    files, manifest = artifact_bytes(work), (work / "manifest.json").read_bytes()
    shutil.rmtree(work)
    return files, manifest


@pytest.fixture()
def fresh(report: Path, reference) -> Path:
    """The report with an empty output folder and trap folder."""
    root = report.parent
    for name in (".modelcard", "trap"):
        shutil.rmtree(root / name, ignore_errors=True)
    (root / "trap").mkdir()
    return report


# --- assignment and placement, in one process ----------------------------------------------

def test_assignment_is_the_same_everywhere_balanced_and_keeps_groups(tmp_path: Path):
    plan = [("a", "k1", 5.0, None), ("a", "k2", 1.0, None), ("b", "k3", 1.0, "g"), ("b", "k4", 9.0, "g"),
            ("a", "k5", 1.0, None), ("a", "k6", 1.0, None), ("a", "k1", 5.0, None)]
    owners = []
    for rank in (0, 1, 2):
        shard = Shard(rank, 3, tmp_path / f"r{rank}")
        owners.append([shard.assign(kind, key, key, cost, group) for kind, key, cost, group in plan])
    assert owners[0] == owners[1] == owners[2]
    o = owners[0]
    assert o[:3] == [0, 1, 2]  # k1 (5 s) to rank 0, then the least loaded ranks
    assert o[3] == o[2]  # k4 follows its group's first unit, whatever its cost
    assert o[4] == 1 and o[5] == 1  # rank 1 carries 1 s, rank 2 carries 10 s, rank 0 5 s
    assert o[6] == o[0]  # the same artifact declared twice keeps its owner
    loads = Shard(0, 3, tmp_path / "x")
    for kind, key, cost, group in plan:
        loads.assign(kind, key, key, cost, group)
    assert loads.loads == [5.0, 3.0, 10.0]
    # Measured seconds of an earlier run replace the estimates.
    measured = Shard(0, 2, tmp_path / "m", costs={"k1": 0.5})
    assert [measured.assign("a", k, k, c, None) for k, c in (("k1", 5.0), ("k2", 1.0), ("k3", 1.0))] == [0, 1, 0]


def test_placeholders_land_where_one_process_puts_them(tmp_path: Path):
    """Entries and failures of other ranks' units (stored artifacts, failure markers, ``after``
    callbacks that fail) are spliced into the lists in plan order, also when some are resolved
    early (a lookup or a SYNC) and others at the end."""
    from generator.pipeline.context import RunContext
    from generator.pipeline.progress import Progress

    store = ArtifactStore(tmp_path / "artifacts")
    shard = Shard(0, 2, tmp_path / "run")
    ctx = RunContext(config=None, store=store, device=None, progress=Progress(False), shard=shard)  # type: ignore[arg-type]
    expected_entries, expected_failures = [], []

    def mine(name: str) -> None:
        art = store.put("k", name, {"n": name}, {})
        ctx.record(art, label=name)
        expected_entries.append(name)

    def theirs(name: str, fail: str = "", after_fails: bool = False) -> None:
        shard.owners[("k", name)] = 1
        if fail:
            shard.publish_failure("k", name, [(name, fail)], [])
            expected_failures.append(name)
        else:
            store.put("k", name, {"n": name}, {})
            expected_entries.append(name)

        def after(artifact) -> None:
            raise RuntimeError("after failed")

        if after_fails and not fail:
            expected_failures.append(name)
        ctx.defer("k", name, 1, name, {"label": name}, after if after_fails else None)

    theirs("t1")
    mine("m1")
    theirs("t2", fail="broken")
    theirs("t3", after_fails=True)
    ctx.fail("mine-fails", RuntimeError("x"))
    expected_failures.append("mine-fails")
    mine("m2")
    # A lookup in the middle resolves t3 first (as a SYNC or find_entry would).
    assert ctx.find_entry("k", label="t3")["key"] == "t3"
    theirs("t4")
    ctx.fail("mine-fails-2", RuntimeError("y"))
    expected_failures.append("mine-fails-2")
    theirs("t5", fail="also broken")
    mine("m3")
    ctx.resolve()
    assert [e["label"] for e in ctx.entries] == expected_entries
    assert [w for w, _ in ctx.failures] == expected_failures
    assert dict(ctx.failures)["t2"] == "broken"


def test_waiting_ends_when_the_owner_finished_without_the_unit(tmp_path: Path):
    store = ArtifactStore(tmp_path / "artifacts")
    shard = Shard(0, 2, tmp_path / "run")
    shard.owners[("k", "gone")] = 1
    (tmp_path / "run" / "done-1.json").write_text("{}")
    started = time.monotonic()
    assert shard.wait(store, "k", "gone").artifact is None
    assert time.monotonic() - started < 5


# --- real jobs -----------------------------------------------------------------------------

def test_two_ranks_write_the_same_bytes_as_one_process(fresh: Path, reference):
    files, manifest = reference
    config, root = fresh, fresh.parent
    code, out = run_cli(config, 2, root / "trap")
    assert code == 0, out
    assert "on 2 ranks" in out and "rank 1 of 2: computed" in out
    work = root / ".modelcard"
    got = artifact_bytes(work)
    assert sorted(got) == sorted(files) and len(files) > 40
    assert [n for n in files if got[n] != files[n]] == []
    assert (work / "manifest.json").read_bytes() == manifest
    # Both ranks computed: the second did not just wait.
    rank1 = [line for line in out.splitlines() if line.startswith("rank 1 of 2")][0]
    assert int(rank1.split("computed ")[1].split(" ")[0]) >= 5, rank1
    assert not (work / ".shards").exists()  # the job's markers are gone
    assert json.loads((work / "unit-seconds.json").read_text())  # measured costs for the next job


def test_a_killed_rank_leaves_whole_artifacts_and_the_rerun_computes_only_the_rest(fresh: Path, reference):
    files, manifest = reference
    config, root = fresh, fresh.parent
    trap = root / "trap"
    (trap / "die-rank-1").write_text("12")  # rank 1 dies in its 13th forward pass
    code, out = run_cli(config, 2, trap)
    assert code != 0, out
    work = root / ".modelcard"
    assert not (work / "manifest.json").exists()
    store = work / "artifacts"
    finished = set()
    for folder in (p for kind in store.iterdir() for p in kind.iterdir() if not p.name.startswith(".")):
        record, problem = read_record(folder)
        assert problem is None, problem  # nothing half-written is published
        finished.add(f"{folder.parent.name}/{folder.name}")
    all_units = {name.rsplit("/", 1)[0] for name in files}
    assert 3 < len(finished) < len(all_units), (len(finished), len(all_units))
    (trap / "die-rank-1").unlink()
    code, out = run_cli(config, 2, trap)
    assert code == 0, out
    # Exactly the unfinished units were computed: the summary counts them.
    assert f"computed {len(all_units - finished)} artifact(s), reused {len(finished)}" in out, out
    got = artifact_bytes(work)
    assert sorted(got) == sorted(files)
    assert [n for n in files if got[n] != files[n]] == []
    assert (work / "manifest.json").read_bytes() == manifest


def test_a_second_run_on_a_folder_in_use_is_refused_and_harms_nothing(fresh: Path, reference):
    files, manifest = reference
    config, root = fresh, fresh.parent
    trap = root / "trap"
    (trap / "hold").write_text("")
    job = run_cli(config, 2, trap, wait=False)
    try:
        shards = root / ".modelcard" / ".shards"
        deadline = time.monotonic() + 120
        while not shards.exists():  # rank 0 took the lock and started the job
            assert job.poll() is None and time.monotonic() < deadline, job.stdout.read() if job.stdout else ""
            time.sleep(0.1)
        for ranks in (1, 2):
            code, out = run_cli(config, ranks, root / "other-trap")
            assert code != 0
            assert "is in use by pid" in out and "python -m generator run" in out, out
    finally:
        (trap / "hold").unlink()
    out, _ = job.communicate(timeout=600)
    assert job.returncode == 0, out
    work = root / ".modelcard"
    got = artifact_bytes(work)
    assert [n for n in files if got.get(n) != files[n]] == []
    assert (work / "manifest.json").read_bytes() == manifest


# --- a layer's gallery in parts ------------------------------------------------------------

def test_gallery_parts_join_into_the_gallery_of_one_render(tmp_path: Path, monkeypatch):
    """``features.part_channels`` splits a layer's gallery into units of whole render batches;
    the joined gallery holds the images, values and trajectories of one render of the layer."""
    from generator.config import load_config
    from generator.methods.featurevis import profiles
    from generator.pipeline.run import run_report
    from generator.render.manifest import Manifest

    # Batches of 4 images, so the tiny CNN's 16 channels of relu2 span several batches.
    monkeypatch.setitem(profiles.PROFILES, "quick", profiles.PROFILES["quick"].with_(batch_size=4))
    images = write_image_folder(tmp_path / "images")
    (tmp_path / "tinymodel.py").write_text(TINY_MODEL_MODULE)
    galleries = {}
    for name, part in (("whole", None), ("parts", 5)):
        folder = tmp_path / name
        folder.mkdir()
        features = textwrap.indent(textwrap.dedent(f'''
            enabled: true
            profile: quick
            layers: {{tiny: [relu2]}}
            channels: all
            steps: 3
            diversity: 0
            negative: false
            examples: 0
            deconvnet: false
            filters: false
            max_classes: 0
            deepdream_images: 0
            part_channels: {"null" if part is None else part}
        '''), "  ")
        (folder / "report.yaml").write_text(textwrap.dedent(f'''
            title: parts
            device: cpu
            models:
              - {{id: tiny, source: "python:tinymodel:build"}}
            datasets:
              - {{id: pics, source: "folder:{images}"}}
            outcome: {{enabled: false}}
            evaluation: {{enabled: false}}
            data: {{enabled: false}}
            blocks: {{enabled: false}}
            compare: {{enabled: false}}
            features:
        ''') + features)
        shutil.copy(tmp_path / "tinymodel.py", folder / "tinymodel.py")
        config = load_config(folder / "report.yaml")
        summary = run_report(config, show_progress=False)
        assert summary.failed == []
        manifest = Manifest.load(config.work_dir)
        galleries[name] = (manifest.one("features_gallery", model="tiny", layer="relu2"),
                           manifest.find("features_gallery_part", model="tiny"))
    whole, no_parts = galleries["whole"]
    joined, parts = galleries["parts"]
    assert no_parts == [] and [p.record["channels"] for p in parts] == [list(range(8)), list(range(8, 16))]
    assert [p.record["first_image"] for p in parts] == [0, 8]
    assert whole.file("images").read_bytes() == joined.file("images").read_bytes()
    drop = ("key", "integrity")
    assert {k: v for k, v in whole.record.items() if k not in drop} == \
        {k: v for k, v in joined.record.items() if k not in drop}


def test_rank_zero_reads_every_ranks_progress(tmp_path: Path):
    zero, one = Shard(0, 2, tmp_path / "run"), Shard(1, 2, tmp_path / "run")
    assert zero.progress(every=0) == "units done: rank 0 1, rank 1 0"  # rank 1 has said nothing yet
    for _ in range(3):
        assert one.progress(every=0) is None  # the others only write
    assert zero.progress(every=0) == "units done: rank 0 2, rank 1 3"
    assert zero.progress(every=3600) is None  # not more often than asked
