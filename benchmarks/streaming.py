"""Streaming folder datasets: peak memory and time of listing, keying and one batched scan.

For each size, a folder of generated 64x64 JPEGs (four class subfolders) is written to a
temporary directory, then a fresh process lists it (``load_dataset``, headers only), computes
its digest (file bytes, streamed) and runs the predictions stage's scan (``predict_top_k``: a
toy CNN over DataLoader batches decoded by worker processes). Each size runs in its own process
so ``ru_maxrss`` is that size's peak alone. Prints JSON.

    python benchmarks/streaming.py [--sizes 1000 20000] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["ant", "bee", "cat", "dog"]
SIDE = 64

# Run in a child process per size: listing, digest, then the predictions stage's batched scan.
CHILD = """
import json, resource, sys, time
import torch
from generator.data.sources import load_dataset
from generator.models.spec import ModelSpec
from generator.pipeline.stages.predictions import predict_top_k

def rss_mb(who):
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)

root, batch = sys.argv[1], int(sys.argv[2])
out = {"rss_after_imports_mb": rss_mb(resource.RUSAGE_SELF)}
t = time.perf_counter()
ds = load_dataset("bench", f"folder:{root}")
out["list_s"] = round(time.perf_counter() - t, 2)
t = time.perf_counter()
ds.digest()
out["digest_s"] = round(time.perf_counter() - t, 2)
spec = ModelSpec(id="toy", source="benchmark", input_size=(3, 64, 64), mean=(0.5,) * 3, std=(0.25,) * 3,
                 class_names=["ant", "bee", "cat", "dog"])
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
    torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 4)).eval()
t = time.perf_counter()
order, _ = predict_top_k(model, spec, ds, torch.device("cpu"), top_k=2, batch_size=batch)
out["scan_s"] = round(time.perf_counter() - t, 2)
out.update(images=len(ds), scanned=int(len(order)), peak_rss_mb=rss_mb(resource.RUSAGE_SELF),
           peak_rss_workers_mb=rss_mb(resource.RUSAGE_CHILDREN))
print(json.dumps(out))
"""


def write_folder(root: Path, count: int) -> float:
    """``count`` distinct 64x64 JPEGs in four class folders; returns the seconds it took."""
    t = time.perf_counter()
    for c in CLASSES:
        (root / c).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, SIDE, dtype=np.float32)
    for i in range(count):
        colour = rng.uniform(30, 225, 3)
        img = ramp[:, None, None] * colour + ramp[None, :, None] * (255 - colour) * 0.3
        img = (img + rng.integers(0, 12, (SIDE, SIDE, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / CLASSES[i % 4] / f"{i:06d}.jpg", quality=90)
    return time.perf_counter() - t


def run_size(count: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="modelcard-streaming-") as tmp:
        root = Path(tmp) / "images"
        written = write_folder(root, count)
        disk = sum(p.stat().st_size for p in root.rglob("*.jpg"))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", CHILD, str(root), str(batch)], capture_output=True,
                              text=True, env=env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"benchmark child failed for {count} images:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result.update(process_s=round(time.perf_counter() - t, 2), write_s=round(written, 2),
                      files_mb=round(disk / 2**20, 1),
                      decoded_if_held_mb=round(count * SIDE * SIDE * 3 / 2**20, 1))
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 20000])
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    results = [run_size(n, args.batch) for n in args.sizes]
    print(json.dumps({
        "benchmark": "streaming folder datasets: list + digest + predictions scan",
        "image": f"{SIDE}x{SIDE} JPEG", "batch": args.batch, "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
