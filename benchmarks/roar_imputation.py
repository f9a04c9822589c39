"""What ROAD's noisy linear imputation costs in ROAR, and what it changes; prints JSON lines.

ROAR fills removed pixels with the mean pixel by default; ``evaluation.roar.imputation: road``
fills them by ROAD's noisy linear imputation (Rong et al. 2022), a sparse solve per image. This
script times both on the default report's ROAR workload (Fashion-MNIST, 28 x 28, removal masks
that follow a smooth map, as attribution maps do) and reports the conjugate-gradient accuracy
against a float64 solve.

    python benchmarks/roar_imputation.py [--images N]

One JSON line per (imputation, fraction): seconds for N images, images/s, and for ROAD the
largest difference to the float64 reference (in pixel units, 0..1; one 8-bit step is 0.0039).
A last line estimates the extra seconds of the default report's ROAR (5 methods incl. random x
5 fractions x ROAR and KAR x 4,000 images) and sets them against its retraining time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from generator.evaluation.imputation import noisy_linear_imputation  # noqa: E402
from generator.evaluation.roar import remove_pixels  # noqa: E402
from generator.methods.attribution.base import gaussian_blur  # noqa: E402


def images(n: int, device: torch.device) -> torch.Tensor:
    """Fashion-MNIST test images when installed, else smooth synthetic ones of the same size."""
    try:
        from generator.data.sources import load_fashion_mnist_arrays

        x, _ = load_fashion_mnist_arrays("test")
        return torch.from_numpy(x[:n]).float().div(255).unsqueeze(1).to(device)
    except (FileNotFoundError, ValueError, OSError):
        g = torch.Generator().manual_seed(0)
        return gaussian_blur(torch.rand(n, 1, 28, 28, generator=g), 1.5).clamp(0, 1).to(device)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=0, help="images per timing (default: 4000 GPU, 2000 CPU)")
    args = parser.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n = args.images or (4000 if dev.type == "cuda" else 2000)
    x = images(n, dev)
    g = torch.Generator().manual_seed(0)
    maps = gaussian_blur(torch.randn(n, 1, 28, 28, generator=g), 2.0)[:, 0].to(dev)
    total = {"mean": 0.0, "road": 0.0}
    for fraction in (0.1, 0.3, 0.5, 0.7, 0.9):
        for how in ("mean", "road"):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = remove_pixels(x, maps, fraction, imputation=how, noise=0.0)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            total[how] += seconds
            line = {"imputation": how, "fraction": fraction, "images": n, "seconds": round(seconds, 3),
                    "images_per_s": round(n / max(seconds, 1e-9), 1), "device": dev.type}
            if how == "road":
                k = min(n, 200)
                order = maps[:k].flatten(1).argsort(dim=1, descending=True, stable=True)
                top = torch.zeros(k, 28 * 28, dtype=torch.bool, device=dev)
                top.scatter_(1, order[:, : int(round(fraction * 784))], True)
                exact = noisy_linear_imputation(x[:k].double(), top.view(k, 28, 28), noise=0.0, tolerance=1e-12,
                                                max_iterations=2000)
                line["max_abs_error_vs_float64"] = float((out[:k].double() - exact).abs().max())
            print(json.dumps(line), flush=True)
    # the default report: 4 methods + random, 5 fractions, ROAR and KAR, 2,000 train + 2,000 test images
    scale = (5 * 2 * 4000) / n
    print(json.dumps({"default_report_extra_seconds_road": round(scale * (total["road"] - total["mean"]), 1),
                      "default_report_mean_fill_seconds": round(scale * total["mean"], 1), "device": dev.type,
                      "note": "compare with the ROAR unit's retraining time in benchmarks/build.py"}), flush=True)


if __name__ == "__main__":
    main()
