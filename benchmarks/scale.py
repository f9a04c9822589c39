"""One report on 1 and 2 ranks (torchrun, gloo on the CPU; NCCL is not needed: ranks only
exchange small control messages): wall time, speed-up, and proof that the artifacts and the
manifest are byte-identical. Then the efficiency at 4 and 8 ranks, simulated from the unit
costs measured in the 1-rank run with the same assignment rule the ranks use.

    python benchmarks/scale.py [--work DIR] [--ranks 2] [--quick]

Runs compared (each from nothing, in its own folder):
  one_rank_1_thread   python -m generator run, OMP_NUM_THREADS=1 (the unit of work of one rank)
  one_rank_all_cores  python -m generator run, torch's default threads (what a user runs today)
  ranks_N             torchrun --nproc_per_node=N, OMP_NUM_THREADS=1 per rank

The report: EfficientNet-Lite0, -Lite1 and -Lite2 with their real weights on the nine sample
photos (attribution, evaluation, features, building blocks, comparison, concepts), so units are
real and uneven. No model is trained at load (a load-time step runs on rank 0 alone).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REPORT = textwrap.dedent('''
    title: "Scale benchmark"
    device: cpu
    seed: 0
    models:
      - {id: lite0, source: "embedded:efficientnet_lite0"}
      - {id: lite1, source: "embedded:efficientnet_lite1"}
      - {id: lite2, source: "embedded:efficientnet_lite2"}
    datasets:
      - {id: photos, source: samples}
    outcome:
      methods: [saliency, gradient_x_input, smoothgrad, vargrad, integrated_gradients, guided_backprop, gradcam,
                gradcam_pp, lrp_epsilon, occlusion]
      methods_by_model:
        lite1: [gradcam, integrated_gradients, occlusion]
        lite2: [gradcam, integrated_gradients, occlusion]
      images: @IMAGES@
      params:
        smoothgrad: {n_samples: 8}
        vargrad: {n_samples: 8}
        integrated_gradients: {steps: 16}
        occlusion: {window: 0.25, stride: 0.1875}
    evaluation:
      selectivity: {models: [lite0], images: 2, steps: 8}
      sensitivity: {enabled: false}
      sanity: {enabled: false}
      roar: {enabled: false}
    data: {enabled: false}
    features:
      enabled: true
      profile: quick
      models: [lite0, lite1]
    blocks:
      enabled: true
      models: [lite0]
      images: [coffee, chelsea]
      layers: [blocks.4, blocks.5]
    compare:
      enabled: true
      methods: [gradcam, integrated_gradients, occlusion]
    concepts:
      enabled: @CONCEPTS@
      models: [lite0]
      layers: {lite0: [blocks.2, blocks.4]}
      tcav: {images: 12, random_sets: 4, classes: 2, class_images: 9, fit: mean_difference}
      rcv: {images: 60}
      dissection: {images: 120, topup: 20, textures: 4, mask_side: 28}
''')


def _env(threads: int = 0) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                           "MASTER_PORT", "OMP_NUM_THREADS")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run(folder: Path, ranks: int, threads: int) -> Dict[str, Any]:
    """One run from nothing in ``folder``: wall seconds and the exit status."""
    config = folder / "report.yaml"
    if ranks == 1:
        cmd = [sys.executable, "-m", "generator", "run", str(config), "-q"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "-m", "generator", "run", str(config), "-q"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(threads), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    summary = [line for line in proc.stdout.splitlines() if line.startswith("computed ")]
    return {"seconds": round(seconds, 1), "summary": summary[0] if summary else ""}


def files_of(work: Path) -> Dict[str, bytes]:
    root = work / "artifacts"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def identical(a: Path, b: Path) -> Dict[str, Any]:
    fa, fb = files_of(a), files_of(b)
    differ = sorted(n for n in fa if fb.get(n) != fa[n]) + sorted(set(fb) - set(fa))
    return {"files": len(fa), "differing": len(differ), "first_differing": differ[:5],
            "manifest_identical": (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()}


def simulate(plan: List[Dict[str, Any]], load_seconds: float, ranks: int, measured: bool) -> Dict[str, Any]:
    """Makespan of ``plan`` on ``ranks`` ranks with the ranks' own assignment rule.

    ``measured``: the costs a rerun balances with (each unit's measured seconds); otherwise the
    units' static estimates (a first run). Waiting for other ranks' units is not modelled, so
    this is a lower bound on the wall time of the stages; every rank pays the load time, and
    rank 0's load comes first (the others load after it, reusing what it stored)."""
    from generator.pipeline.shard import Shard

    with tempfile.TemporaryDirectory() as tmp:
        costs = {s["label"]: s["seconds"] for s in plan if s["seconds"] is not None} if measured else {}
        shard = Shard(0, ranks, Path(tmp), costs)
        busy = [0.0] * ranks
        for step in plan:
            if step["kind"] in ("dataset", "model"):
                continue  # load-phase units, in load_seconds
            owner = shard.assign(step["kind"], step["key"], step["label"], step["cost"], step["group"])
            busy[owner] += step["seconds"] or 0.0
    # Rank 0 loads, then the others load (about as long again, reusing its artifacts).
    makespan = max(busy) + (load_seconds * 2 if ranks > 1 else load_seconds)
    return {"ranks": ranks, "busiest_rank_s": round(max(busy), 1), "makespan_s": round(makespan, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", help="folder for the runs (default: a temporary one)")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="4 images and no concepts (a smoke test)")
    args = parser.parse_args()
    base = Path(args.work or tempfile.mkdtemp(prefix="modelcard-scale-"))
    text = REPORT.replace("@IMAGES@", "4" if args.quick else "9")
    text = text.replace("@CONCEPTS@", "false" if args.quick else "true")
    runs = {"one_rank_1_thread": (1, 1), "one_rank_all_cores": (1, 0), f"ranks_{args.ranks}": (args.ranks, 1)}
    results: Dict[str, Any] = {"cpus": os.cpu_count()}
    for name, (ranks, threads) in runs.items():
        folder = base / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.yaml").write_text(text)
        results[name] = run(folder, ranks, threads)
        print(name, results[name], file=sys.stderr)
    one = results["one_rank_1_thread"]["seconds"]
    many = results[f"ranks_{args.ranks}"]["seconds"]
    results["speedup_vs_one_rank_1_thread"] = round(one / many, 2)
    results["speedup_vs_one_rank_all_cores"] = round(results["one_rank_all_cores"]["seconds"] / many, 2)
    results["identical_to_one_rank_1_thread"] = identical(base / "one_rank_1_thread/.modelcard",
                                                          base / f"ranks_{args.ranks}/.modelcard")
    results["identical_one_rank_1_vs_all_threads"] = identical(base / "one_rank_1_thread/.modelcard",
                                                               base / "one_rank_all_cores/.modelcard")
    plan = json.loads((base / "one_rank_1_thread/.modelcard/plan.json").read_text())
    unit_total = sum(s["seconds"] or 0.0 for s in plan if s["kind"] not in ("dataset", "model"))
    load = max(0.0, one - unit_total)  # imports, loading models and datasets, the manifest
    results["units"] = len(plan)
    results["unit_seconds_total"] = round(unit_total, 1)
    results["largest_unit"] = max(((s["seconds"] or 0.0, s["label"]) for s in plan), default=(0, ""))
    sims = {}
    for measured in (False, True):
        rows = [simulate(plan, load, r, measured) for r in (1, 2, 4, 8)]
        t1 = rows[0]["makespan_s"]
        for row in rows:
            row["efficiency"] = round(t1 / (row["ranks"] * row["makespan_s"]), 2)
        sims["measured_costs" if measured else "first_run_estimates"] = rows
    results["simulated"] = sims
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
