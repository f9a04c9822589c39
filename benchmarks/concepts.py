"""Speed of the concept methods; prints JSON.

* CAV fitting: C concepts x R random runs x L layers on cached activations, ours (one batch of
  logistic regressions per layer, torch, on the device) against Captum's TCAV classifier
  (scikit-learn's SGDClassifier, one fit per CAV, on the CPU) on the *same* cached activations,
  when captum is installed (a benchmark-only dependency, never a runtime one).
* Dissection: thresholds and IoU of every unit of L layers on N images with K pixel concepts,
  from cached activations (the model's forward pass is not timed: it is the same for any method).

CPU-sized by default; ``--full`` (the default on CUDA) uses the issue's sizes: ResNet-50 widths
(256, 512, 1024, 2048 channels, activations averaged over positions for CAVs), 10 concepts x 50
runs x 4 layers, and 10,000 images x 5 layers at 112 x 112 masks for dissection. Activations are
synthetic with the layers' real shapes (no weights or images are downloaded).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from generator.methods.concepts.cav import fit_cavs
from generator.methods.concepts.dissection import IoUAccumulator, ThresholdSampler


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_cavs(device: torch.device, concepts: int, runs: int, widths, per_set: int) -> dict:
    g = torch.Generator().manual_seed(0)
    layers = []
    for d in widths:
        acts = torch.randn(concepts + runs, per_set, d, generator=g).abs()  # post-ReLU-like
        acts[:concepts] += 0.3 * torch.randn(concepts, 1, d, generator=g).abs()
        layers.append(acts)
    _sync(device)
    start = time.perf_counter()
    accs = []
    for acts in layers:
        a = acts.to(device)
        pos = torch.cat([a[c][None].expand(runs, -1, -1) for c in range(concepts)])
        neg = a[concepts:].repeat(concepts, 1, 1)
        cavs = fit_cavs(pos, neg, fit="logistic", l2=0.01, holdout=0.3, seed=0)
        accs.append(float(cavs.accuracy.mean()))
    _sync(device)
    ours = time.perf_counter() - start
    result = {"cavs": concepts * runs * len(widths), "layers": list(widths), "images_per_set": per_set,
              "ours_s": round(ours, 3), "ours_accuracy": round(sum(accs) / len(accs), 4), "device": device.type}
    try:
        from captum.concept._utils.classifier import DefaultClassifier
    except Exception as exc:  # noqa: BLE001 - any import problem means no anchor
        result["captum"] = f"not available ({type(exc).__name__}: {exc})"
        return result
    # Captum's classifier on the same activations, one CAV at a time, as its TCAV does
    sample = max(1, min(runs, int(result.get("captum_runs", runs))))
    start = time.perf_counter()
    fitted = 0
    caccs = []
    for acts in layers:
        for c in range(concepts):
            for r in range(sample):
                x = torch.cat([acts[c], acts[concepts + r]])
                y = torch.cat([torch.zeros(per_set), torch.ones(per_set)]).long()
                clf = DefaultClassifier()
                stats = clf.train_and_eval(_loader(x, y))
                caccs.append(float(stats["accs"]))
                fitted += 1
    captum_s = time.perf_counter() - start
    result.update({"captum_s": round(captum_s, 3), "captum_cavs_fitted": fitted,
                   "captum_accuracy": round(sum(caccs) / len(caccs), 4),
                   "speedup": round(captum_s / ours, 1)})
    return result


def _loader(x: torch.Tensor, y: torch.Tensor):
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(x, y), batch_size=len(x))


def bench_dissection(device: torch.device, images: int, layers, concepts: int, mask: int, batch: int) -> dict:
    g = torch.Generator(device="cpu").manual_seed(0)
    start = time.perf_counter()
    detail = []
    for units, side in layers:
        sampler = ThresholdSampler(images * side * side, 0.995, 200_000, seed=0)
        acc = IoUAccumulator(units, concepts, device)
        masks = (torch.rand(batch, concepts, mask, mask, generator=g) > 0.9).to(device)
        act = torch.randn(batch, units, side, side, generator=g).to(device)  # one cached batch, reused
        for _ in range(0, images, batch):
            sampler.add(act)
        thresholds = sampler.thresholds()
        for _ in range(0, images, batch):
            acc.add(act, thresholds, masks)
        iou = acc.iou()
        _sync(device)
        detail.append({"units": units, "side": side, "max_iou": round(float(iou.max()), 4)})
    _sync(device)
    return {"images": images, "layers": detail, "concepts": concepts, "mask": mask,
            "seconds": round(time.perf_counter() - start, 2), "device": device.type}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the issue's ResNet-50 sizes (default on CUDA)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    full = args.full or device.type == "cuda"
    if full:
        cav = bench_cavs(device, 10, 50, (256, 512, 1024, 2048), 50)
        dis = bench_dissection(device, 10_000, [(256, 56), (512, 28), (1024, 14), (2048, 7), (2048, 7)], 20, 112, 50)
    else:
        cav = bench_cavs(device, 4, 10, (64, 128), 30)
        dis = bench_dissection(device, 500, [(64, 28), (128, 14)], 10, 56, 50)
    print(json.dumps({"cav_fitting": cav, "dissection": dis, "full": full,
                      "torch": torch.__version__, "threads": torch.get_num_threads()}, indent=2))


if __name__ == "__main__":
    main()
