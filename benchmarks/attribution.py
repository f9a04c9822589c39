"""Attribution throughput against Captum in the same process; prints JSON.

CUDA: ResNet-50 (random weights), batch 32 at 224 px. CPU: ResNet-18, batch 4 at 112 px.
Ours and Captum are timed in turn, call by call, and compared by the median time per call;
``ratio`` = ours / Captum images/s.
Ours runs in fp32 and in bf16 autocast (with the rank correlation of the bf16 map against
fp32, so the speed-up can be judged against faithfulness). Also times deletion curves for
many images x 10 methods x 20 steps.

    python benchmarks/attribution.py [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from generator.engine import batching  # noqa: E402
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


def interleaved(fns, reps):
    """Median seconds per call of each function, timed in turn (a, b, c, a, b, c, ...) after
    one warm-up call each, so clock and thermal drift of the device hit every contender alike.
    (Timing ours and then Captum in separate blocks moved ratios of ~20 ms calls by 20%.)"""
    for fn in fns.values():
        fn()
    sync()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def without_channels_last(fn):
    def run():
        batching.CHANNELS_LAST_ON_CUDA = False
        try:
            return fn()
        finally:
            batching.CHANNELS_LAST_ON_CUDA = True
    return run


def main():
    if CUDA:
        arch, B, px, max_batch = "resnet50", 32, 224, 512
        steps, samples = 50, 50
        reps_fast, reps_slow = 25, 5
    else:
        arch, B, px, max_batch = "resnet18", 4, 112, 64
        steps, samples = (10, 10) if QUICK else (50, 50)
        reps_fast, reps_slow = 3, 1
    model = getattr(torchvision.models, arch)(weights=None).eval().to(dev)
    torch.manual_seed(0)
    x = torch.randn(B, 3, px, px, device=dev)
    target = torch.randint(0, 1000, (B,), device=dev)
    log(name="setup", device=torch.cuda.get_device_name() if CUDA else "cpu", arch=arch, batch=B, px=px,
        torch=torch.__version__, timing=f"median of {reps_fast} (fast methods) or {reps_slow} (IG, SmoothGrad, "
        "occlusion) interleaved calls")

    try:
        from captum.attr import GuidedBackprop, IntegratedGradients, LayerGradCam, NoiseTunnel, Occlusion, Saliency
    except ImportError:
        captum = None
        log(name="captum", error="not installed")
    else:
        # Captum gets its own frozen copy with separate, not in-place ReLUs (its guided
        # backprop needs them to be correct); ours runs on the model as a user would pass it.
        frozen = getattr(torchvision.models, arch)(weights=None).eval().to(dev)
        frozen.load_state_dict(model.state_dict())
        for p in frozen.parameters():
            p.requires_grad_(False)
        for mod in frozen.modules():
            if isinstance(mod, torch.nn.ReLU):
                mod.inplace = False
        xo, to = x[:4], target[:4]
        captum = {
            "saliency": (lambda: Saliency(frozen).attribute(x, target=target), B),
            "integrated_gradients": (lambda: IntegratedGradients(frozen).attribute(
                x, target=target, n_steps=steps, internal_batch_size=max_batch), B),
            "smoothgrad": (lambda: NoiseTunnel(Saliency(frozen)).attribute(
                x, target=target, nt_type="smoothgrad", nt_samples=samples,
                nt_samples_batch_size=max(1, max_batch // B), stdevs=0.15), B),
            "guided_backprop": (lambda: GuidedBackprop(frozen).attribute(x, target=target), B),
            "gradcam": (lambda: LayerGradCam(frozen, frozen.layer4).attribute(x, target=target), B),
            "occlusion": (lambda: Occlusion(frozen).attribute(xo, target=to, sliding_window_shapes=(3, 16, 16),
                                                              strides=(3, 8, 8), perturbations_per_eval=64), 4),
        }

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
    slow = {"integrated_gradients", "smoothgrad", "occlusion"}
    for name, (params, reg) in cases.items():
        cls = ATTRIBUTION_METHODS.get(reg)
        mb = max_batch if name != "occlusion" else max_batch * 2
        ours = {p: cls(model, None, max_batch=mb, precision=p, **params) for p in ("fp32", "bf16")}
        fns = {p: (lambda m=m: m.attribute(x, target)) for p, m in ours.items()}
        counts = {"fp32": B, "bf16": B}
        if name == "occlusion" and CUDA:  # ablation: the same without the channels-last input layout
            fns["bf16_nchw"] = without_channels_last(fns["bf16"])
            counts["bf16_nchw"] = B
        if captum is not None and name in captum:
            fns["captum"], counts["captum"] = captum[name]
        try:
            med = interleaved(fns, reps_slow if name in slow else reps_fast)
        except Exception as e:  # noqa: BLE001 - report and go on with the next method
            log(name=name, error=repr(e)[:300])
            continue
        rate = {k: counts[k] / v for k, v in med.items()}
        rho = float(spearman(fns["bf16"]().maps, fns["fp32"]().maps).mean())
        row = {"name": name, "fp32_images_per_s": rate["fp32"], "bf16_images_per_s": rate["bf16"],
               "bf16_spearman_vs_fp32": rho}
        if "bf16_nchw" in rate:
            row["bf16_nchw_input_images_per_s"] = rate["bf16_nchw"]
        if "captum" in rate:
            row.update(captum_images_per_s=rate["captum"], ratio_fp32=rate["fp32"] / rate["captum"],
                       ratio_bf16=rate["bf16"] / rate["captum"])
        log(**row)

    # deletion curves: N images x 10 methods x 20 steps
    N = 100 if CUDA else (8 if QUICK else 16)
    xs = torch.randn(N, 3, px, px, device=dev)
    ts = torch.randint(0, 1000, (N,), device=dev)
    maps = {f"m{i}": torch.rand(N, px, px, device=dev) for i in range(10)}
    for precision in ("fp32", "bf16"):
        t = timed(lambda: deletion_insertion(model, xs, maps, ts, steps=20, modes=("deletion",),
                                             max_batch=max_batch * 2,
                                             precision=precision), repeat=1)
        log(name="ours.deletion_curves", precision=precision, images=N, methods=10, steps=20, seconds=t)


if __name__ == "__main__":
    main()
