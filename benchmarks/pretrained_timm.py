"""Time to first page for a timm model named with its published weights, from a filled cache,
with the network off; prints JSON.

    python benchmarks/pretrained_timm.py [--name convnext_tiny.fb_in22k_ft_in1k]

The Hugging Face Hub cache is filled here with random weights saved under the real name and
layout (this machine has no network; the time does not depend on the weights' values), then
``modelcard build`` of a small report (model card, predictions, saliency and Grad-CAM on the
sample photos) runs as a user would run it, with ``HF_HUB_OFFLINE=1``. The anchor, measured in
the same run, is the floor every tool pays: ``timm.create_model(name, pretrained=True)`` from
the same cache plus one forward pass of the report's images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

REPORT = """
title: "{name} with its published weights"
device: cpu
models:
  - id: timm-model
    source: timm:{name}
    weights: pretrained
datasets:
  - id: photos
    source: samples
outcome:
  methods: [saliency, gradcam]
  images: 4
features: {{enabled: false}}
blocks: {{enabled: false}}
evaluation: {{enabled: false}}
data: {{enabled: false}}
site_src: []
"""


def fill_cache(cache: Path, name: str) -> None:
    import timm
    import torch
    from safetensors.torch import save_file

    from generator.models.hub import add_to_hub_cache

    torch.manual_seed(0)
    module = timm.create_model(name, pretrained=False)
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    add_to_hub_cache(cache, f"timm/{name}", {"model.safetensors": lambda p: save_file(state, str(p))})


def floor_seconds(name: str, env: dict) -> float:
    """timm.create_model from the cache and one forward of four 224 px images, in a fresh process."""
    code = textwrap.dedent(f"""
        import time; t = time.perf_counter()
        import timm, torch
        m = timm.create_model({name!r}, pretrained=True).eval()
        with torch.no_grad():
            m(torch.rand(4, 3, 224, 224))
        print(time.perf_counter() - t)
    """)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def main() -> None:
    args = sys.argv[1:]
    name = args[args.index("--name") + 1] if "--name" in args else "convnext_tiny.fb_in22k_ft_in1k"
    work = Path(tempfile.mkdtemp(prefix="modelcard-timm-bench-"))
    cache = work / "hf" / "hub"
    fill_cache(cache, name)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    (work / "report.yaml").write_text(REPORT.format(name=name))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "generator.cli", "build", "-q", str(work / "report.yaml")],
                          env=env, capture_output=True, text=True, cwd=work)
    build = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"build failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    floor = floor_seconds(name, env)
    print(json.dumps({"benchmark": "pretrained_timm_first_page", "model": name, "cores": os.cpu_count(),
                      "build_seconds": round(build, 1), "anchor_create_model_and_forward_seconds": round(floor, 1),
                      "ratio_to_anchor": round(build / floor, 2),
                      "site_index": str(work / "site" / "index.html"),
                      "summary": proc.stdout.strip().splitlines()[0]}, indent=1))


if __name__ == "__main__":
    main()
