"""The rendering loop: optimise a batch of images so each maximises its objective.

Activation maximisation in the style of Lucid (Olah, Mordvintsev & Schubert, "Feature
Visualization", Distill 2017; Erhan et al. 2009; Simonyan et al. 2013): a decorrelated,
sigmoid-bounded image parameterisation, a random transform per image and step, Adam.

Speed comes from batching, not from tricks per image: many objectives (e.g. every channel of
a layer) share one batch, the forward pass stops at the deepest layer any objective reads,
weights are frozen (no weight gradients are computed), and on CUDA the network can run under
bf16 autocast while the parameterisation, transforms and objectives stay in fp32.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from generator.engine.hooks import capture_activations, forward_hook, hooks_removed_after, run_until_stopped
from generator.engine.layers import get_layer, model_device

from .objectives import OUTPUT, Objective, as_objective
from .param import ImageParam, Normalizer, make_param
from .sizes import fit_size
from .spatial import SpatialView
from .transforms import TransformSchedule, resolve_transforms

# ---------------------------------------------------------------------------------------
# model state: frozen, eval mode, no in-place activations; all restored afterwards


@contextlib.contextmanager
def frozen_model(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, ``requires_grad=False`` on every parameter, in-place activations off.

    In-place activations are switched off because a captured activation that a later
    in-place ReLU overwrites would silently change value (and redirected-ReLU hooks need the
    pre-activation input). Every flag is restored exactly, per module, even on error.
    """
    grads = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    inplace = [m for m in model.modules() if getattr(m, "inplace", None) is True]
    try:
        for p, _ in grads:
            p.requires_grad_(False)
        model.eval()
        for m in inplace:
            m.inplace = False
        yield model
    finally:
        for m in inplace:
            m.inplace = True
        for m, mode in modes:
            m.training = mode
        for p, flag in grads:
            p.requires_grad_(flag)


# ---------------------------------------------------------------------------------------
# redirected ReLU (Lucid's ``redirected_relu_grad`` / ``redirected_relu6_grad``)


class _RedirectedClamp(torch.autograd.Function):
    """``clamp(x, lo, hi)`` whose gradient, for an image whose ordinary gradient through
    this unit is zero everywhere, is passed through wherever it would move ``x`` back into
    the active range. Early in optimisation many units are dead for a random image; this
    lets the objective "find" them instead of getting no signal (Lucid, Olah et al. 2017).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, lo: float, hi: Optional[float]):
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return x.clamp(min=lo) if hi is None else x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        below = x < ctx.lo
        outside = below if ctx.hi is None else below | (x > ctx.hi)
        ordinary = grad.masked_fill(outside, 0)
        # We minimise -objective: a positive gradient pushes x lower.
        wrong_way = below & (grad > 0)
        if ctx.hi is not None:
            wrong_way = wrong_way | ((x > ctx.hi) & (grad < 0))
        redirected = grad.masked_fill(wrong_way, 0)
        alive = ordinary.reshape(grad.shape[0], -1).abs().amax(dim=1) > 0
        alive = alive.reshape((-1,) + (1,) * (grad.dim() - 1))
        return torch.where(alive, ordinary, redirected), None, None


def _clamp_bounds(module: nn.Module) -> Optional[Tuple[float, Optional[float]]]:
    """(lo, hi) for ReLU-like modules (ReLU, ReLU6, Hardtanh(0, x)), else None."""
    if isinstance(module, nn.ReLU):
        return 0.0, None
    if isinstance(module, nn.Hardtanh) and module.min_val == 0:  # ReLU6 is a Hardtanh(0, 6)
        return 0.0, float(module.max_val)
    return None


@contextlib.contextmanager
def redirected_relu(model: nn.Module) -> Iterator[int]:
    """Replace the gradient of every ReLU/ReLU6 module of ``model`` by the redirected one.

    Implemented with forward hooks that recompute the output through
    :class:`_RedirectedClamp`; the hooks are removed on exit. Yields the number of modules
    hooked. Functional ``F.relu`` calls are not module calls and keep their usual gradient.
    """
    with hooks_removed_after() as handles:
        for m in model.modules():
            bounds = _clamp_bounds(m)
            if bounds is None:
                continue
            lo, hi = bounds

            def hook(_m, inputs, _output, lo=lo, hi=hi):
                return _RedirectedClamp.apply(inputs[0], lo, hi)

            # prepend: run before capture hooks, so a captured ReLU output is redirected too
            handles.append(forward_hook(m, hook, prepend=True))
        yield len(handles)


# ---------------------------------------------------------------------------------------
# seeds


def image_seeds(seed: int, start: int, count: int) -> List[Tuple[torch.Generator, np.random.Generator]]:
    """Independent generators for images ``start .. start+count`` of a render.

    Derived from ``(seed, global image index)`` only, so an image's initialisation and
    transforms are the same whatever batch it lands in.
    """
    out = []
    for g in range(start, start + count):
        state = np.random.SeedSequence([int(seed), int(g)]).generate_state(4, dtype=np.uint32)
        tgen = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        out.append((tgen, np.random.default_rng([int(state[2]), int(state[3])])))
    return out


# ---------------------------------------------------------------------------------------


@dataclass
class RenderResult:
    """Images (N, H, W, C) in [0, 1] and how the objective evolved.

    ``trajectory[t, i]`` is image ``i``'s objective at step ``t`` (on its transformed
    input); ``final_values[i]`` is the objective of the final image without transforms.
    """

    images: np.ndarray
    trajectory: np.ndarray
    final_values: np.ndarray
    descriptions: List[str]
    description: str
    seconds: float
    settings: Dict[str, object] = field(default_factory=dict)


def resolve_precision(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """None for fp32; bf16 autocast where asked (``auto``: bf16 on CUDA, fp32 elsewhere)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision in ("fp32", "float32"):
        return None
    if precision in ("bf16", "bfloat16"):
        return torch.bfloat16
    if precision in ("fp16", "float16"):
        return torch.float16
    raise ValueError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")


class _Forward:
    """Runs the model and returns the activations an objective needs, stopping early.

    With a ``view``, token outputs (a vision transformer's (B, N, C)) reach the objectives as
    (B, C, h, w) maps over the patch grid, special tokens left out (see :mod:`.spatial`).
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], stack: contextlib.ExitStack,
                 view: Optional[SpatialView] = None):
        self.model = model
        self.view = view
        self.token_notes: Dict[str, str] = {}  # layer -> how its token output was read (filled when run)
        self.needs_output = OUTPUT in layers
        names = sorted(l for l in layers if l != OUTPUT)
        self.names = names
        modules = {n: get_layer(model, n) for n in names}
        stop = () if self.needs_output else names
        self.store = stack.enter_context(capture_activations(model, modules, keep_graph=True, stop_after=stop))

    def __call__(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        self.store.clear()
        if self.needs_output:
            out = self.model(x)
            acts = self._spatial(dict(self.store), x)
            acts[OUTPUT] = out
            return acts
        run_until_stopped(self.model, x)
        acts = self._spatial(dict(self.store), x)
        missing = [n for n in self.names if n not in acts]
        if missing:
            raise RuntimeError(f"layers {missing} produced no output during the forward pass (not used by forward()?)")
        return acts

    def _spatial(self, acts: Dict[str, torch.Tensor], x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if self.view is None:
            return acts
        hw = x.shape[-2:]
        if not self.token_notes:
            notes = {name: self.view.describe(t, hw) for name, t in sorted(acts.items())}
            self.token_notes = {name: note for name, note in notes.items() if note}
        return {name: self.view(t, hw) for name, t in acts.items()}


def render(
    model: nn.Module,
    spec,
    objective: "Objective | Sequence[Objective]",
    *,
    steps: int = 512,
    size: Optional[int] = None,
    param: "str | Callable[..., ImageParam]" = "fft",
    param_kwargs: Optional[Dict[str, object]] = None,
    transforms="standard",
    lr: float = 0.05,
    seed: int = 0,
    precision: str = "auto",
    device: "torch.device | str | None" = None,
    redirected_relu_steps: int = 0,
    batch_size: int = 64,
    n_images: int = 1,
    init_pixels: Optional[torch.Tensor] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    first_image: int = 0,
) -> RenderResult:
    """Render feature visualisations; returns images (N, H, W, C) in [0, 1].

    ``objective`` is an :class:`Objective` (batched: one image per sub-objective, e.g.
    ``channel("layer3", range(1024))``; broadcast: ``n_images`` images) or a list of
    single-image objectives. Images are rendered in chunks of ``batch_size`` (rounded down
    to a multiple of a diversity objective's group size). ``size`` defaults to the spec's
    input size; pixels pass through ``transforms`` (``"standard"``, ``"none"`` or a list),
    then the spec's mean/std, then the model. ``redirected_relu_steps`` uses the redirected
    ReLU gradient for that many first steps. ``init_pixels`` (N, C, H, W in [0, 1]) starts
    from given images instead of noise. ``first_image`` numbers the images from there for their
    seeds: channels 64..127 rendered with ``first_image=64`` are the same images as those of one
    render of channels 0..127 (a layer split into parts over ranks). The model is left exactly as it was.

    A model that refuses ``size`` (a vision transformer with a fixed input size, say) is found
    with one small forward pass before optimising and rendered at its own input size instead;
    ``settings`` then holds ``size_requested`` and a one-line ``size_note``. Objectives on a token
    layer read it over the patch grid (``channel``: averaged over the patch tokens; ``neuron``:
    the centre patch token; special tokens left out); ``settings["tokens"]`` says so per layer.
    """
    obj = as_objective(objective)
    dev = torch.device(device) if device is not None else model_device(model)
    amp = resolve_precision(precision, dev)
    channels = spec.channels
    if size is None:
        size = (int(spec.input_size[1]), int(spec.input_size[2]))
    hw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    fit = fit_size(model, spec, hw, layers=sorted(obj.layers), device=dev)
    hw = fit.hw
    if init_pixels is not None and tuple(init_pixels.shape[-2:]) != hw:
        init_pixels = torch.nn.functional.interpolate(init_pixels.float(), size=hw, mode="bilinear",
                                                      align_corners=False, antialias=True).clamp(0, 1)
    total = obj.batch_size if obj.batch_size is not None else n_images
    group = obj.group_size
    chunk = max(group, (batch_size // group) * group)
    tlist = resolve_transforms(transforms, min(hw))
    normalize = Normalizer.from_spec(spec, dev)
    kwargs = dict(param_kwargs or {})

    images, trajs, finals, descs = [], [], [], []
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.enter_context(frozen_model(model))
        forward = _Forward(model, sorted(obj.layers), stack, SpatialView.for_spec(model, spec))
        autocast = (
            (lambda: torch.autocast(dev.type, dtype=amp)) if amp is not None else contextlib.nullcontext
        )
        for start in range(0, total, chunk):
            stop = min(total, start + chunk)
            n = stop - start
            sub = obj.slice(start, stop)
            gens = image_seeds(seed, first_image + start, n)
            p = make_param(param, n, channels, hw, generators=[g for g, _ in gens], **kwargs).to(dev)
            if init_pixels is not None:
                p.set_from_pixels(init_pixels[start:stop])
            opt = torch.optim.Adam(p.parameters(), lr=lr, **({"fused": True} if dev.type == "cuda" else {}))
            schedule = TransformSchedule(tlist, [r for _, r in gens], steps, hw, dev)
            traj = torch.zeros(steps, n, device=dev)
            for step in range(steps):
                with redirected_relu(model) if step < redirected_relu_steps else contextlib.nullcontext():
                    opt.zero_grad(set_to_none=True)
                    x = normalize(schedule(p(), step))
                    with autocast():
                        acts = forward(x)
                    values = sub(acts).float()
                    (-values.sum()).backward()
                    opt.step()
                traj[step] = values.detach()
            with torch.no_grad():
                pixels = p()
                with autocast():
                    final = sub(forward(normalize(pixels))).float()
            images.append(pixels.permute(0, 2, 3, 1).float().cpu())
            trajs.append(traj.cpu())
            finals.append(final.cpu())
            descs.extend(sub.describe(i) for i in range(n))
            if progress is not None:
                progress(stop, total)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    extra: Dict[str, object] = {}
    if fit.changed:
        extra["size_requested"] = list(fit.requested)
        extra["size_note"] = fit.note
    if forward.token_notes:
        extra["tokens"] = forward.token_notes
    return RenderResult(
        images=torch.cat(images).numpy(),
        trajectory=torch.cat(trajs, dim=1).numpy(),
        final_values=torch.cat(finals).numpy(),
        descriptions=descs,
        description=obj.description,
        seconds=seconds,
        settings={
            "steps": steps,
            "size": list(hw),
            "param": param if isinstance(param, str) else getattr(param, "__name__", str(param)),
            "param_kwargs": kwargs,
            "transforms": [repr(t) for t in tlist],
            "lr": lr,
            "seed": seed,
            "precision": "fp32" if amp is None else str(amp).replace("torch.", ""),
            "redirected_relu_steps": redirected_relu_steps,
            "batch_size": chunk,
            "device": str(dev),
            **extra,
        },
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    spec,
    objective: "Objective | Sequence[Objective]",
    pixels: "torch.Tensor | np.ndarray",
    *,
    precision: str = "fp32",
    device: "torch.device | str | None" = None,
) -> np.ndarray:
    """The objective's per-image values on given images (N, H, W, C or N, C, H, W in [0, 1])."""
    obj = as_objective(objective)
    dev = torch.device(device) if device is not None else model_device(model)
    x = torch.as_tensor(np.asarray(pixels) if isinstance(pixels, np.ndarray) else pixels, dtype=torch.float32)
    if x.shape[-1] == spec.channels and x.shape[1] != spec.channels:
        x = x.permute(0, 3, 1, 2)
    x = Normalizer.from_spec(spec, dev)(x.to(dev))
    amp = resolve_precision(precision, dev)
    with contextlib.ExitStack() as stack:
        stack.enter_context(frozen_model(model))
        forward = _Forward(model, sorted(obj.layers), stack, SpatialView.for_spec(model, spec))
        if amp is not None:
            stack.enter_context(torch.autocast(dev.type, dtype=amp))
        return obj(forward(x)).float().cpu().numpy()
