"""Benchmark: representation similarity (linear CKA, SVCCA, mutual k-NN) for every pair of 16
layers of two ResNet-50s (torchvision, random weights: nothing is downloaded) on N random images.

Two implementations on the same inputs, each in its own process so peak memory is its own:

* ``streaming``: :func:`generator.methods.compare.similarity.compare_streaming`: one pass, CKA by
  the mini-batch estimator (memory independent of N), SVCCA and k-NN on the first
  ``--dense-images`` images;
* ``naive``: all reduced activations of all N images held, full linear CKA per pair, SVCCA and
  k-NN on all N.

Prints JSON: seconds, peak memory (CPU: ru_maxrss growth over the process after building the
models; CUDA: torch.cuda.max_memory_allocated), and how far the two CKA matrices differ.

    python benchmarks/compare.py --images 10000 --size 64 --device cpu
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from typing import Any, Dict, List

LAYERS = ["layer1.0", "layer1.1", "layer1.2", "layer2.0", "layer2.1", "layer2.2", "layer2.3", "layer3.0",
          "layer3.1", "layer3.2", "layer3.3", "layer3.4", "layer3.5", "layer4.0", "layer4.1", "layer4.2"]


def _rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(kind: str, args: Dict[str, Any], out: Any) -> None:
    import numpy as np
    import torch
    import torchvision

    from generator.methods.compare.similarity import (
        collect_activations,
        compare_streaming,
        linear_cka,
        mutual_knn_matrix,
        svcca_matrix,
    )

    torch.set_num_threads(args["threads"])
    device = torch.device(args["device"])
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(torchvision.models.resnet50(weights=None).eval().to(device))
    n, bs, size = args["images"], args["batch_size"], args["size"]

    def inputs():
        gen = torch.Generator().manual_seed(123)
        for s in range(0, n, bs):
            yield torch.randn(min(bs, n - s), 3, size, size, generator=gen).to(device)

    base = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        cuda_base = torch.cuda.memory_allocated()
    tick = time.perf_counter()
    if kind == "streaming":
        res = compare_streaming(models[0], LAYERS, models[1], LAYERS, inputs(), knn_k=args["knn_k"],
                                dense_images=args["dense_images"])
        cka = res.cka
        dense = res.dense_images
    else:
        fa = collect_activations(models[0], LAYERS, inputs())
        fb = collect_activations(models[1], LAYERS, inputs())
        a, b = [fa[name] for name in LAYERS], [fb[name] for name in LAYERS]
        cka = np.array([[linear_cka(x, y) for y in b] for x in a])
        svcca_matrix(a, b)
        mutual_knn_matrix(a, b, args["knn_k"])
        dense = n
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - tick
    result = {"seconds": round(seconds, 2), "peak_rss_growth_mb": round(_rss_mb() - base, 1),
              "svcca_knn_images": dense}
    if device.type == "cuda":
        result["cuda_peak_mb"] = round((torch.cuda.max_memory_allocated() - cuda_base) / 2 ** 20, 1)
    out.put((kind, result, cka.tolist()))


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--dense-images", type=int, default=2000, help="images SVCCA and k-NN use (streaming)")
    parser.add_argument("--knn-k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = vars(parser.parse_args(argv))
    import numpy as np

    ctx = mp.get_context("spawn")
    results, matrices = {}, {}
    for kind in ("streaming", "naive"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_run, args=(kind, args, queue))
        proc.start()
        got = queue.get()
        proc.join()
        results[kind], matrices[kind] = got[1], np.array(got[2])
    diff = np.abs(matrices["streaming"] - matrices["naive"])
    print(json.dumps({"benchmark": "representation similarity, 16 x 16 layers of two ResNet-50s", **args,
                      "layer_pairs": len(LAYERS) ** 2, "streaming": results["streaming"], "naive": results["naive"],
                      "cka_max_abs_diff_minibatch_vs_full": round(float(diff.max()), 4),
                      "cka_mean_abs_diff_minibatch_vs_full": round(float(diff.mean()), 4)}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
