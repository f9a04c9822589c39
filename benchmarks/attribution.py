"""Attribution throughput against Captum in the same process; prints JSON.

CUDA: ResNet-50 (random weights), batch 32 at 224 px. CPU: ResNet-18, batch 4 at 112 px.
Each method is timed as best of a few runs after a warm-up; ``ratio`` = ours / Captum images/s.
Ours runs in fp32 and in bf16 autocast (with the rank correlation of the bf16 map against
fp32, so the speed-up can be judged against faithfulness). Also times deletion curves for
many images x 10 methods x 20 steps.

    python benchmarks/attribution.py [--quick]
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from generator.evaluation import deletion_insertion, spearman  # noqa: E402
from generator.methods.attribution import ATTRIBUTION_METHODS  # noqa: E402

CUDA = torch.cuda.is_available()
QUICK = "--quick" in sys.argv
dev = torch.device("cuda" if CUDA else "cpu")
torch.backends.cudnn.benchmark = True
rows = []


def log(**kw):
    rows.append(kw)
    print(json.dumps(kw), flush=True)


def sync():
    if CUDA:
        torch.cuda.synchronize()


def timed(fn, repeat=2):
    fn()
    sync()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    if CUDA:
        arch, B, px, max_batch = "resnet50", 32, 224, 256
        steps, samples = 50, 50
    else:
        arch, B, px, max_batch = "resnet18", 4, 112, 64
        steps, samples = (10, 10) if QUICK else (50, 50)
    model = getattr(torchvision.models, arch)(weights=None).eval().to(dev)
    torch.manual_seed(0)
    x = torch.randn(B, 3, px, px, device=dev)
    target = torch.randint(0, 1000, (B,), device=dev)
    log(name="setup", device=torch.cuda.get_device_name() if CUDA else "cpu", arch=arch, batch=B, px=px,
        torch=torch.__version__)

    cases = {
        "saliency": ({}, "saliency"),
        "integrated_gradients": ({"steps": steps, "baseline": "zeros"}, "integrated_gradients"),
        "smoothgrad": ({"n_samples": samples, "noise_level": 0.15}, "smoothgrad"),
        "guided_backprop": ({}, "guided_backprop"),
        "gradcam": ({"layer": "layer4"}, "gradcam"),
        "occlusion": ({"window": 16, "stride": 8, "baseline": "zeros"}, "occlusion"),
        "lrp_zplus_flat": ({}, "lrp_zplus_flat"),
        "deeplift": ({"baseline": "zeros"}, "deeplift"),
    }
    ours = {}
    for name, (params, reg) in cases.items():
        cls = ATTRIBUTION_METHODS.get(reg)
        maps = {}
        for precision in ("fp32", "bf16"):
            mb = max_batch if name != "occlusion" else max_batch * 2
            m = cls(model, None, max_batch=mb, precision=precision, **params)
            holder = {}
            t = timed(lambda: holder.__setitem__("r", m.attribute(x, target)))
            maps[precision] = holder["r"].maps
            ours[(name, precision)] = B / t
        rho = float(spearman(maps["bf16"], maps["fp32"]).mean())
        log(name=f"ours.{name}", fp32_images_per_s=ours[(name, "fp32")], bf16_images_per_s=ours[(name, "bf16")],
            bf16_spearman_vs_fp32=rho)

    try:
        from captum.attr import GuidedBackprop, IntegratedGradients, LayerGradCam, NoiseTunnel, Occlusion, Saliency
    except ImportError:
        log(name="captum", error="not installed")
        return
    frozen = getattr(torchvision.models, arch)(weights=None).eval().to(dev)
    frozen.load_state_dict(model.state_dict())
    for p in frozen.parameters():
        p.requires_grad_(False)
    for mod in frozen.modules():  # Captum's guided backprop needs separate, not in-place ReLUs to be correct
        if isinstance(mod, torch.nn.ReLU):
            mod.inplace = False
    xo = x[:4]
    captum_cases = {
        "saliency": (lambda: Saliency(frozen).attribute(x, target=target), B),
        "integrated_gradients": (lambda: IntegratedGradients(frozen).attribute(
            x, target=target, n_steps=steps, internal_batch_size=max_batch), B),
        "smoothgrad": (lambda: NoiseTunnel(Saliency(frozen)).attribute(
            x, target=target, nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=max(1, max_batch // B), stdevs=0.15), B),
        "guided_backprop": (lambda: GuidedBackprop(frozen).attribute(x, target=target), B),
        "gradcam": (lambda: LayerGradCam(frozen, frozen.layer4).attribute(x, target=target), B),
        "occlusion": (lambda: Occlusion(frozen).attribute(xo, target=target[:4], sliding_window_shapes=(3, 16, 16),
                                                          strides=(3, 8, 8), perturbations_per_eval=64), 4),
    }
    for name, (fn, n) in captum_cases.items():
        try:
            t = timed(fn, repeat=1 if name == "occlusion" else 2)
            cap = n / t
            log(name=f"captum.{name}", images_per_s=cap,
                ratio_fp32=ours[(name, "fp32")] / cap, ratio_bf16=ours[(name, "bf16")] / cap)
        except Exception as e:  # noqa: BLE001
            log(name=f"captum.{name}", error=repr(e)[:300])

    # deletion curves: N images x 10 methods x 20 steps
    N = 100 if CUDA else (8 if QUICK else 16)
    xs = torch.randn(N, 3, px, px, device=dev)
    ts = torch.randint(0, 1000, (N,), device=dev)
    maps = {f"m{i}": torch.rand(N, px, px, device=dev) for i in range(10)}
    for precision in ("fp32", "bf16"):
        t = timed(lambda: deletion_insertion(model, xs, maps, ts, steps=20, modes=("deletion",), max_batch=max_batch * 2,
                                             precision=precision), repeat=1)
        log(name="ours.deletion_curves", precision=precision, images=N, methods=10, steps=20, seconds=t)


if __name__ == "__main__":
    main()
