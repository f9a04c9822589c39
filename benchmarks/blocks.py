"""Time the complete Building Blocks set for one image and one layer; prints JSON.

The set (generator.methods.blocks.building_blocks + summary_json): activations, semantic
dictionary, activation grid, activation x gradient for the top-5 classes (spatial, channel,
two competing classes), NMF neuron groups (k=6) and their class attribution, layer-to-layer
spatial attribution (one map of the layer per position of the next layer), NMF groups of the
next layer, the group flow between the two, and the JSON summary.

Model: timm tf_efficientnet_lite0, random weights (timing does not depend on them), 224 px,
fp32 (no TF32), layer blocks.4 (112 x 14 x 14) with upper layer blocks.5 (192 x 7 x 7). Runs on the CPU
and, when available, on CUDA; best of ``--repeats`` timed runs after one warm-up.

With ``--icons`` also the feature-visualisation icons the report's stage renders for that set
(one per grid cell, one per group of both layers, one per channel the pages show), with the
stage's device defaults (``generator.settings.blocks``: small and few steps on CPU), timed once.

    python benchmarks/blocks.py [--repeats 3] [--layer blocks.4] [--upper blocks.5] [--devices cpu,cuda] [--icons]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from generator.methods.blocks import (  # noqa: E402
    building_blocks,
    class_attribution,
    group_flow,
    layer_activations,
    layer_to_layer,
    neuron_groups,
    summary_json,
)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(device: str, fn, repeats: int):
    fn()  # warm-up (cuDNN autotuning, allocator, lazy init)
    best = float("inf")
    out = None
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best, out


def bench(device: str, layer: str, upper: str, repeats: int) -> dict:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval().to(device)
    x = torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)

    def full():
        bb = building_blocks(model, x, layer, top_k=5, n_channels=6, n_groups=6, upper_layer=upper, seed=0)
        return bb, summary_json(bb)

    total, (bb, summary) = timed(device, full, repeats)
    stages = {}
    stages["forward_activations"], acts = timed(device, lambda: layer_activations(model, x, layer), repeats)
    stages["class_attribution_top5"], _ = timed(device, lambda: class_attribution(model, x, layer, bb.top_classes),
                                                repeats)
    stages["nmf_groups_k6"], groups = timed(device, lambda: neuron_groups(acts.act, 6, layer=layer), repeats)
    stages["layer_to_layer_positions"], _ = timed(device, lambda: layer_to_layer(model, x, layer, upper), repeats)
    stages["group_flow"], _ = timed(device, lambda: group_flow(model, x, groups, bb.upper_groups), repeats)
    stages["summary_json"], _ = timed(device, lambda: summary_json(bb), repeats)
    with torch.no_grad():
        stages["plain_forward_reference"], _ = timed(device, lambda: model(x[None]), repeats)
    return {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "seconds_complete_set": round(total, 4),
        "stages_seconds": {k: round(v, 4) for k, v in stages.items()},
        "grid": list(bb.grid.grid_shape),
        "upper_grid": list(bb.layer_to_layer.upper_shape),
        "nmf_relative_error": round(bb.groups.relative_error, 4),
        "nmf_iterations": bb.groups.n_iter,
        "group_mode": bb.groups.mode,
        "summary_json_bytes": len(json.dumps(summary)),
    }


def bench_icons(device: str, layer: str, upper: str) -> dict:
    """Seconds to render the stage's icons for one image and layer (one timed run)."""
    import timm

    from generator.methods import featurevis as fv
    from generator.pipeline.stages.blocks import direction_rows, render_icons, used_channels
    from generator.settings.blocks import BlocksSettings

    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)

    class Spec:  # what featurevis.render needs of a model spec
        input_size, channels, mean, std = (3, 224, 224), 3, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    x = torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    bb = building_blocks(model, x, layer, top_k=5, n_channels=6, n_groups=6, upper_layer=upper, seed=0)
    icons = BlocksSettings().icons_for(device)
    own, up = used_channels(summary_json(bb))
    h, w = bb.grid.grid_shape
    out = {"settings": icons, "grid_cells": h * w, "channels": len(own), "groups": bb.groups.k + bb.upper_groups.k}
    sync(device)
    t = time.perf_counter()
    render_icons(model, Spec, fv.direction(layer, direction_rows(bb.grid.directions.reshape(h * w, -1))), icons,
                 icons["grid_size"], 0, device)
    sync(device)
    out["grid_icons_seconds"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    objs = [fv.direction(layer, d) for d in direction_rows(bb.groups.unit_directions())]
    objs += [fv.direction(upper, d) for d in direction_rows(bb.upper_groups.unit_directions())]
    render_icons(model, Spec, fv.stack(objs), icons, icons["size"], 0, device)
    sync(device)
    out["group_icons_seconds"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    render_icons(model, Spec, fv.channel(layer, sorted(own)), icons, icons["size"], 0, device)
    sync(device)
    out["channel_icons_seconds"] = round(time.perf_counter() - t, 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--layer", default="blocks.4")
    p.add_argument("--upper", default="blocks.5")
    p.add_argument("--devices", default="cpu,cuda")
    p.add_argument("--icons", action="store_true", help="also time the feature-visualisation icons")
    args = p.parse_args()
    results = []
    for device in args.devices.split(","):
        if device == "cuda" and not torch.cuda.is_available():
            results.append({"device": "cuda", "skipped": "CUDA not available"})
            continue
        results.append(bench(device, args.layer, args.upper, args.repeats))
        if args.icons:
            results[-1]["icons"] = bench_icons(device, args.layer, args.upper)
    print(json.dumps({
        "benchmark": "building_blocks",
        "model": "tf_efficientnet_lite0 (random weights)",
        "input": [3, 224, 224],
        "precision": "fp32 (the blocks functions turn TF32 off while they run)",
        "layer": args.layer,
        "upper_layer": args.upper,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
