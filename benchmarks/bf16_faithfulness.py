"""How faithful bf16 autocast attributions are to fp32 on a trained model; prints JSON.

The speed benchmark (``attribution.py``) uses a ResNet-50 with random weights, where score
differences are tiny and bf16 rounding reorders many of them. This script measures the rank
correlation of bf16 against fp32 maps on EfficientNet-Lite0 with its ImageNet weights and four
of the report's sample photos, for the methods whose speed targets rely on bf16.

    python benchmarks/bf16_faithfulness.py
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from generator.data.sources import load_dataset  # noqa: E402
from generator.evaluation import spearman  # noqa: E402
from generator.methods.attribution import ATTRIBUTION_METHODS  # noqa: E402
from generator.models.sources import LoadContext, ModelRequest, load_model  # noqa: E402
from generator.pipeline.inputs import displayed, model_input  # noqa: E402


def photos(spec, device) -> torch.Tensor:
    """The report's own sample photos, preprocessed as the model's spec says."""
    dataset = load_dataset("photos", "samples", {"names": ["coffee", "chelsea", "astronaut", "rocket"]})
    return model_input(spec, displayed(spec, dataset, len(dataset)), device)


def main() -> None:
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_model(ModelRequest(id="lite0", source="embedded:efficientnet_lite0"), LoadContext(device=dev))
    model, spec = loaded.module.to(dev).eval(), loaded.spec
    x = photos(spec, dev)
    with torch.no_grad():
        target = model(x).argmax(1)
    cases = {
        "integrated_gradients": {"steps": 50, "baseline": "zeros"},
        "smoothgrad": {"n_samples": 50, "noise_level": 0.15},
        "occlusion": {"window": 16, "stride": 8, "baseline": "zeros"},
    }
    for name, params in cases.items():
        maps, seconds = {}, {}
        for precision in ("fp32", "bf16"):
            method = ATTRIBUTION_METHODS.get(name)(model, spec, precision=precision, max_batch=128, **params)
            started = time.perf_counter()
            maps[precision] = method.attribute(x, target).maps
            seconds[precision] = round(time.perf_counter() - started, 2)
        rho = spearman(maps["bf16"], maps["fp32"])
        print(json.dumps({"name": name, "device": dev.type, "model": "efficientnet_lite0", "images": int(x.shape[0]),
                          "bf16_spearman_vs_fp32": [round(float(v), 3) for v in rho],
                          "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
