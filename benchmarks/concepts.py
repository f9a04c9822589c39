"""Speed of the concept methods; prints JSON.

* CAV fitting: C concepts x R random runs x L layers on cached activations, ours (one batch of
  logistic regressions per layer, torch, on the device) against Captum's TCAV classifier
  (scikit-learn's SGDClassifier, one fit per CAV, on the CPU) on the *same* cached activations,
  when captum is installed (a benchmark-only dependency, never a runtime one). Both hold out 30 %
  and report the held-out accuracy of the boundary they fitted. Captum's own "accs" is reported
  beside it, but it is not an accuracy for two classes (Captum issue #1122: argmax over a single
  output column always picks the first class, so it is the first class's share of the test split).
* Dissection: thresholds and IoU of every unit of L layers on N images with K pixel concepts,
  from cached activations (the model's forward pass is not timed: it is the same for any method).

CPU-sized by default; ``--full`` (the default on CUDA) uses the issue's sizes: ResNet-50 widths
(256, 512, 1024, 2048 channels, activations averaged over positions for CAVs), 10 concepts x 50
runs x 4 layers, and 10,000 images x 5 layers at 112 x 112 masks for dissection. Activations are
synthetic with the layers' real shapes (no weights or images are downloaded). ``--images N``
sets the dissection's image count (with ``--full`` and N < 10,000 the seconds are also extrapolated
linearly to 10,000); ``--part cav|dissection`` runs one part; ``--threads N`` sets torch's threads.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Dict, Sequence, Tuple

import torch

from generator.methods.concepts.cav import fit_cavs
from generator.methods.concepts.dissection import IoUAccumulator, ThresholdSampler


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_cavs(device: torch.device, concepts: int, runs: int, widths: Sequence[int], per_set: int,
               holdout: float = 0.3) -> dict:
    """Ours and, when captum is installed, Captum's TCAV classifier on the same activations,
    interleaved layer by layer (ours on a layer, then Captum on it) so both see the same machine
    load. Both hold out the same fraction ``holdout`` of the data and are scored on it."""
    g = torch.Generator().manual_seed(0)
    layers = []
    for d in widths:
        acts = torch.randn(concepts + runs, per_set, d, generator=g).abs()  # post-ReLU-like
        acts[:concepts] += 0.3 * torch.randn(concepts, 1, d, generator=g).abs()
        layers.append(acts)
    try:
        from captum.concept._utils.classifier import DefaultClassifier
    except Exception as exc:  # noqa: BLE001 - any import problem means no anchor
        DefaultClassifier, missing = None, f"not available ({type(exc).__name__}: {exc})"
    # one untimed call of each first: the first LBFGS in a process imports torch._dynamo (seconds),
    # and Captum/scikit-learn have their own first-call costs; neither is fitting time
    start = time.perf_counter()
    fit_cavs(torch.rand(2, 10, 8, device=device), torch.rand(2, 10, 8, device=device), seed=0)
    _sync(device)
    warmup = {"ours_warmup_s": round(time.perf_counter() - start, 3)}
    if DefaultClassifier is not None:
        warmup["captum_warmup_s"] = round(_captum_layer(DefaultClassifier, torch.rand(2, 10, 8), 1, 1, holdout,
                                                        {"real": [], "reported": [], "reported_is_class0_share": 0,
                                                         "test_items": set()}), 3)
    ours_s, accs = 0.0, []
    captum_s = 0.0
    captum: Dict[str, Any] = {"real": [], "reported": [], "reported_is_class0_share": 0, "test_items": set()}
    for acts in layers:
        _sync(device)
        start = time.perf_counter()
        a = acts.to(device)
        pos = torch.cat([a[c][None].expand(runs, -1, -1) for c in range(concepts)])
        neg = a[concepts:].repeat(concepts, 1, 1)
        cavs = fit_cavs(pos, neg, fit="logistic", l2=0.01, holdout=holdout, seed=0)
        accs.append(float(cavs.accuracy.mean()))
        _sync(device)
        ours_s += time.perf_counter() - start
        if DefaultClassifier is not None:
            captum_s += _captum_layer(DefaultClassifier, acts, concepts, runs, holdout, captum)
    result = {"cavs": concepts * runs * len(widths), "layers": list(widths), "images_per_set": per_set,
              "holdout": holdout, "ours_s": round(ours_s, 3), "ours_accuracy": round(sum(accs) / len(accs), 4),
              "device": device.type, **warmup}
    if DefaultClassifier is None:
        result["captum"] = missing
        return result
    fitted = len(captum["real"])
    result.update({
        "captum_s": round(captum_s, 3), "captum_cavs_fitted": fitted,
        "captum_test_items": sorted(captum["test_items"]),
        # the held-out accuracy of the boundary Captum fitted, on Captum's own test split
        "captum_accuracy": round(sum(captum["real"]) / fitted, 4),
        # what DefaultClassifier.train_and_eval returns as "accs" (and TCAV stores with the CAV)
        "captum_reported_accs": round(sum(captum["reported"]) / fitted, 4),
        "captum_reported_accs_equal_share_of_first_class": f"{captum['reported_is_class0_share']}/{fitted}",
        "speedup": round(captum_s / ours_s, 1),
    })
    return result


def _captum_layer(DefaultClassifier: Any, acts: torch.Tensor, concepts: int, runs: int, holdout: float,
                  out: Dict[str, Any]) -> float:
    """Captum's TCAV classifier on one layer, one CAV per (concept, random set), used as Captum's
    TCAV uses it: one ``DefaultClassifier``, ``train_and_eval(dataloader, test_split_ratio=...)``
    on a DataLoader of (activations, labels) batches, one batch per concept set, labelled with the
    sets' concept ids. Returns the seconds spent in Captum.

    ``train_and_eval`` shuffles with Python's ``random`` and holds out the first
    ``int(test_split_ratio * n)`` items; replaying that shuffle from the same state gives its test
    split exactly, on which the fitted boundary is scored as scikit-learn's SGDClassifier predicts
    (``x . w + b > 0``: the second class). Its own "accs" is recorded too: for two classes its
    linear layer has one output column and it takes the argmax over that column, which always picks
    the first class, so "accs" is the share of the first class in the test split (Captum issue
    #1122), i.e. chance here, whatever the boundary."""
    import random
    import warnings

    import numpy as np
    from torch.utils.data import DataLoader, TensorDataset

    random.seed(0)
    np.random.seed(0)  # SGDClassifier's shuffling (random_state=None uses numpy's global generator)
    per_set = acts.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DefaultClassifier warns that it keeps the data in memory
        clf = DefaultClassifier()
    seconds = 0.0
    for c in range(concepts):
        for r in range(runs):
            x = torch.cat([acts[c], acts[concepts + r]])
            y = torch.cat([torch.full((per_set,), c), torch.full((per_set,), concepts + r)]).long()
            loader = DataLoader(TensorDataset(x, y), batch_size=per_set)  # one batch per concept set
            state = random.getstate()
            start = time.perf_counter()
            stats = clf.train_and_eval(loader, test_split_ratio=holdout)
            seconds += time.perf_counter() - start
            after = random.getstate()
            random.setstate(state)
            order = list(range(len(x)))
            random.shuffle(order)  # the permutation train_and_eval drew (it depends only on n and the state)
            random.setstate(after)
            test = torch.tensor(order[: int(holdout * len(x))])
            classes = [int(k) for k in clf.classes()]
            w, b = clf.lm.linear.weight.detach()[0], clf.lm.linear.bias.detach()[0]
            pred = torch.where(x[test] @ w + b > 0, classes[1], classes[0])
            out["real"].append(float((pred == y[test]).float().mean()))
            reported = float(stats["accs"])
            out["reported"].append(reported)
            out["reported_is_class0_share"] += int(abs(reported - float((y[test] == classes[0]).float().mean())) < 1e-6)
            out["test_items"].add(len(test))
    return seconds


def bench_dissection(device: torch.device, images: int, layers: Sequence[Tuple[int, int]], concepts: int,
                     mask: int, batch: int,
                     extrapolate_to: int = 0) -> dict:
    """Per layer: the threshold pass and the IoU pass over ``images`` images (one cached batch of
    synthetic activations and masks, reused, so only the method is timed). With ``extrapolate_to``
    larger than ``images``, also a linear extrapolation of the seconds to that many images (both
    passes are one fixed-cost step per batch; only the final top-k over at most 200,000 sampled
    values per unit does not grow with the images)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    start = time.perf_counter()
    detail = []
    for units, side in layers:
        t0 = time.perf_counter()
        sampler = ThresholdSampler(images * side * side, 0.995, 200_000, seed=0)
        acc = IoUAccumulator(units, concepts, device)
        masks = (torch.rand(batch, concepts, mask, mask, generator=g) > 0.9).to(device)
        act = torch.randn(batch, units, side, side, generator=g).to(device)  # one cached batch, reused
        _sync(device)
        t1 = time.perf_counter()
        for done in range(0, images, batch):
            sampler.add(act[: min(batch, images - done)])
        thresholds = sampler.thresholds()
        _sync(device)
        t2 = time.perf_counter()
        for done in range(0, images, batch):
            n = min(batch, images - done)
            acc.add(act[:n], thresholds, masks[:n])
        iou = acc.iou()
        _sync(device)
        t3 = time.perf_counter()
        row = {"units": units, "side": side, "threshold_s": round(t2 - t1, 2), "iou_s": round(t3 - t2, 2),
               "setup_s": round(t1 - t0, 2), "max_iou": round(float(iou.max()), 4)}
        detail.append(row)
    _sync(device)
    seconds = time.perf_counter() - start
    out = {"images": images, "layers": detail, "concepts": concepts, "mask": mask, "batch": batch,
           "seconds": round(seconds, 2), "device": device.type}
    if extrapolate_to > images:
        scale = extrapolate_to / images
        method = sum(r["threshold_s"] + r["iou_s"] for r in detail)
        out["extrapolated"] = {"images": extrapolate_to, "how": f"linear: measured threshold + IoU seconds x {scale:g}",
                               "seconds": round(method * scale, 1),
                               "per_layer_s": [round((r["threshold_s"] + r["iou_s"]) * scale, 1) for r in detail]}
    return out


FULL_DISSECTION_LAYERS = [(256, 56), (512, 28), (1024, 14), (2048, 7), (2048, 7)]  # ResNet-50 stages (+ last block)
FULL_DISSECTION_IMAGES = 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the issue's ResNet-50 sizes (default on CUDA)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=None,
                        help="dissection images (default 10,000 with --full, else 500); with --full and fewer "
                             "images, the seconds are also extrapolated linearly to 10,000")
    parser.add_argument("--part", choices=("all", "cav", "dissection"), default="all")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's); on a CPU shared with other busy "
                             "processes, 1 avoids the thread pool's waits on every small operation")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    full = args.full or device.type == "cuda"
    out: Dict[str, Any] = {}
    if args.part in ("all", "cav"):
        out["cav_fitting"] = (bench_cavs(device, 10, 50, (256, 512, 1024, 2048), 50) if full
                              else bench_cavs(device, 4, 10, (64, 128), 30))
    if args.part in ("all", "dissection"):
        if full:
            images = args.images or FULL_DISSECTION_IMAGES
            out["dissection"] = bench_dissection(device, images, FULL_DISSECTION_LAYERS, 20, 112, 50,
                                                 extrapolate_to=FULL_DISSECTION_IMAGES)
        else:
            out["dissection"] = bench_dissection(device, args.images or 500, [(64, 28), (128, 14)], 10, 56, 50)
    out.update({"full": full, "torch": torch.__version__, "threads": torch.get_num_threads()})
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
