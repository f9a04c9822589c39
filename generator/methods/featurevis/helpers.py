"""What the site shows, built on :func:`render`: galleries, diversity sets, negative
visualisations, class visualisations, DeepDream, dataset examples, first-layer filters, and
a default spread of layers for a model."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from generator.engine.hooks import capture_activations, refuse_script, run_until_stopped
from generator.engine.layers import get_layer

from . import objectives as obj
from .param import Normalizer
from .profiles import Profile, get_profile
from .render import RenderResult, frozen_model, model_device, render, resolve_precision
from .sizes import refusal
from .spatial import SpatialView

# ---------------------------------------------------------------------------------------
# layers


def layer_channels(model: nn.Module, spec, layer: str, device=None) -> int:
    """Number of channels of ``layer``'s output (one small forward pass that stops there); for
    a token layer (B, N, C) of a vision transformer, C (the units per token)."""
    dev = torch.device(device) if device is not None else model_device(model)
    c, h, w = spec.input_size
    x = torch.zeros(1, c, h, w, device=dev)
    with frozen_model(model), torch.no_grad(), capture_activations(
        model, {layer: get_layer(model, layer)}, stop_after=[layer]
    ) as store:
        run_until_stopped(model, x)
    return int(SpatialView.for_spec(model, spec)(store[layer], (h, w)).shape[1])


def token_layers(model: nn.Module, spec, layers: Sequence[str], device=None) -> Dict[str, str]:
    """layer -> how its token output is read (see :mod:`.spatial`), for the layers of ``layers``
    whose outputs are token sequences (a vision transformer's); one forward pass at the spec's
    input size that stops after the deepest of them. {} for a CNN."""
    names = sorted(set(layers))
    if not names:
        return {}
    dev = torch.device(device) if device is not None else model_device(model)
    c, h, w = spec.input_size
    view = SpatialView.for_spec(model, spec)
    modules = {n: get_layer(model, n) for n in names}
    with frozen_model(model), torch.no_grad(), capture_activations(model, modules, stop_after=names) as store:
        run_until_stopped(model, torch.zeros(1, c, h, w, device=dev))
    notes = {n: view.describe(t, (h, w)) for n, t in store.items()}
    return {n: note for n, note in sorted(notes.items()) if note}


def _has_conv(m: nn.Module) -> bool:
    return any(isinstance(x, nn.Conv2d) for x in m.modules())


def _repeated_blocks(model: nn.Module) -> List[str]:
    """The children of the shallowest ``ModuleList``/``Sequential`` made of two or more non-leaf
    modules of one type (a transformer's blocks or stages), breadth first; [] if none."""
    queue = [("", model)]
    while queue:
        prefix, node = queue.pop(0)
        kids = list(node.named_children())
        if (isinstance(node, (nn.ModuleList, nn.Sequential)) and len(kids) >= 2
                and len({type(m) for _, m in kids}) == 1 and not _is_leaf(kids[0][1])):
            return [prefix + n for n, _ in kids]
        queue.extend((prefix + n + ".", m) for n, m in kids)
    return []


def _is_leaf(m: nn.Module) -> bool:
    return next(iter(m.children()), None) is None


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Tanh, nn.Sigmoid,
                nn.Hardtanh)


def default_layers(model: nn.Module, max_layers: Optional[int] = None) -> List[str]:
    """A sensible spread of layers, shallow to deep, found from the module tree.

    Walk down from the root while a module has exactly one non-leaf child containing
    convolutions; the first module with two or more such children is the *stage* container
    and its conv-containing children are the stages (ResNet: ``layer1..4``; timm
    EfficientNet: ``blocks.0..6``). A network of leaf layers only (a plain ``Sequential``
    CNN) yields each convolution's activation output (the activation module right after it
    among its siblings, else the convolution itself). A model where this finds fewer than two
    layers (a vision transformer: one convolution, the patch embedding) yields its repeated
    blocks instead (timm ViT: ``blocks.0..11``; Swin: ``layers.0..3``), when it has any.
    ``max_layers`` keeps an even spread that always includes the deepest.
    """
    prefix, node = "", model
    names: List[str] = []
    while True:
        kids = [(n, m) for n, m in node.named_children() if _has_conv(m)]
        containers = [(n, m) for n, m in kids if not _is_leaf(m)]
        if len(containers) >= 2:
            names = [prefix + n for n, _ in containers]
            break
        if len(containers) == 1:
            n, node = containers[0]
            prefix = prefix + n + "."
            continue
        siblings = list(node.named_children())
        for i, (n, m) in enumerate(siblings):
            if not isinstance(m, nn.Conv2d):
                continue
            chosen = n
            for n2, m2 in siblings[i + 1 :]:
                if isinstance(m2, nn.Conv2d):
                    break
                if isinstance(m2, _ACTIVATIONS):
                    chosen = n2
                    break
            names.append(prefix + chosen)
        break
    if len(names) < 2:
        names = _repeated_blocks(model) or names
    if max_layers is not None and len(names) > max_layers:
        picks = np.unique(np.round(np.linspace(0, len(names) - 1, max_layers)).astype(int))
        names = [names[i] for i in picks]
    return names


def spread_channels(n_channels: int, count: Optional[int]) -> List[int]:
    """``count`` channels spread evenly over ``0..n_channels-1`` (all when None)."""
    if count is None or count >= n_channels:
        return list(range(n_channels))
    return sorted({int(round(x)) for x in np.linspace(0, n_channels - 1, count)})


# ---------------------------------------------------------------------------------------
# renders for the site


def _render_kwargs(profile: Profile, spec) -> Dict[str, object]:
    return dict(
        steps=profile.steps,
        size=profile.size_for(spec),
        lr=profile.lr,
        precision=profile.precision,
        redirected_relu_steps=profile.redirected_relu_steps,
        batch_size=profile.batch_size,
    )


def channel_gallery(
    model: nn.Module, spec, layer: str, channels: Optional[Sequence[int]] = None, *, profile="quick", seed: int = 0,
    **overrides
) -> RenderResult:
    """One visualisation per channel of ``layer`` (default: the profile's number of channels,
    spread over the layer), all channels in a few batches."""
    prof = get_profile(profile)
    if channels is None:
        channels = spread_channels(layer_channels(model, spec, layer), prof.channels_per_layer)
    kw = {**_render_kwargs(prof, spec), **overrides}
    return render(model, spec, obj.channel(layer, list(channels)), seed=seed, **kw)


def diversity_set(
    model: nn.Module,
    spec,
    layer: str,
    channels: Sequence[int],
    *,
    n: Optional[int] = None,
    weight: Optional[float] = None,
    profile="quick",
    seed: int = 0,
    **overrides,
) -> RenderResult:
    """``n`` images per channel, pushed apart by the Gram-matrix diversity term (Olah et al.
    2017, "Feature Visualization", section on diversity). Images ``k*n .. k*n+n-1`` belong
    to ``channels[k]``; groups are rendered side by side in one batch.

    The diversity term is a cosine similarity (scale-free) while channel activations have
    a model-dependent scale, so ``weight`` is relative: the objective is
    ``channel + weight * scale * diversity`` with ``scale`` the typical per-channel
    magnitude of the layer measured once on grey images with a little noise.
    """
    prof = get_profile(profile)
    n = n or prof.diversity_images
    weight = prof.diversity_weight if weight is None else weight
    scale = _activation_scale(model, spec, layer)
    reps = [int(c) for c in channels for _ in range(n)]
    objective = obj.channel(layer, reps) + (weight * scale) * obj.diversity(layer, group_size=n)
    kw = {**_render_kwargs(prof, spec), **overrides}
    kw["batch_size"] = max(n, (int(kw["batch_size"]) // n) * n)
    return render(model, spec, objective, seed=seed, **kw)


@torch.no_grad()
def _activation_scale(model: nn.Module, spec, layer: str) -> float:
    """Typical per-channel magnitude of ``layer`` on random mid-grey images."""
    dev = model_device(model)
    c, h, w = spec.input_size
    gen = torch.Generator().manual_seed(0)
    pixels = (0.5 + 0.1 * torch.randn(4, c, h, w, generator=gen)).clamp(0, 1).to(dev)
    x = Normalizer.from_spec(spec, dev)(pixels)
    with frozen_model(model), capture_activations(model, {layer: get_layer(model, layer)}, stop_after=[layer]) as st:
        run_until_stopped(model, x)
    act = SpatialView.for_spec(model, spec)(st[layer], (h, w)).float()
    per_channel = act.reshape(act.shape[0], act.shape[1], -1).mean(dim=2).abs()
    return float(per_channel.mean().clamp_min(1e-3))


def negative_gallery(
    model: nn.Module, spec, layer: str, channels: Sequence[int], *, profile="quick", seed: int = 0, **overrides
) -> RenderResult:
    """What each channel dislikes: maximise minus its mean activation."""
    prof = get_profile(profile)
    kw = {**_render_kwargs(prof, spec), **overrides}
    return render(model, spec, obj.negative(obj.channel(layer, list(channels))), seed=seed, **kw)


def class_visualisations(
    model: nn.Module, spec, classes: Sequence["int | str"], *, profile="quick", seed: int = 0, **overrides
) -> RenderResult:
    """One image per class maximising its logit (Simonyan et al. 2013), Lucid-style."""
    prof = get_profile(profile)
    idx = [spec.class_index(c) for c in classes]
    kw = {**_render_kwargs(prof, spec), **overrides}
    return render(model, spec, obj.class_logit(idx, spec.class_names), seed=seed, **kw)


def _to_nchw(photos: "np.ndarray | torch.Tensor", channels: int) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(photos) if isinstance(photos, np.ndarray) else photos, dtype=torch.float32)
    if x.dim() == 3:
        x = x[None]
    if x.shape[-1] == channels and x.shape[1] != channels:
        x = x.permute(0, 3, 1, 2)
    return x.contiguous()


def octave_sizes(hw: Tuple[int, int], octaves: int, octave_scale: float = 1.4) -> List[Tuple[int, int]]:
    """DeepDream's octave sizes, smallest first, the last one ``hw`` itself."""
    h, w = hw
    out = []
    for o in range(octaves):
        s = octave_scale ** (o - octaves + 1)
        out.append((max(8, round(h * s)), max(8, round(w * s))))
    return out


def dream_octaves(model: nn.Module, spec, hw: Tuple[int, int], octaves: int, layers: Sequence[str],
                  octave_scale: float = 1.4, device=None) -> int:
    """How many of :func:`deepdream`'s octaves run at ``hw``: those at sizes the model accepts
    (up to ``layers``), the full size always (checked once per size, cached)."""
    sizes = octave_sizes(hw, octaves, octave_scale)
    return 1 + sum(refusal(model, spec.channels, s, layers, device) is None for s in sizes[:-1])


def deepdream(
    model: nn.Module,
    spec,
    photos: "np.ndarray | torch.Tensor",
    layers: Sequence[str],
    *,
    steps: int = 10,
    octaves: int = 3,
    octave_scale: float = 1.4,
    step_size: float = 0.012,
    jitter: int = 16,
    seed: int = 0,
    precision: str = "auto",
    device=None,
) -> Dict[str, np.ndarray]:
    """DeepDream (Mordvintsev, Olah & Tyka 2015) of each photo at each layer.

    ``photos``: (N, H, W, C) or (N, C, H, W) pixels in [0, 1] at the size to dream at.
    Gradient ascent on the layer objective (mean squared activation) in pixel space, with
    the gradient normalised per image, a random shift (jitter) per step, and octaves: the
    photo is processed from a small to its full size, carrying the added detail up.
    Returns layer -> (N, H, W, C) in [0, 1]. All photos go through one batch per layer.
    A token layer (vision transformer) is dreamed over its patch tokens. Octaves at a size the
    model refuses (a fixed-size vision transformer accepts only its own) are skipped: such a
    model dreams at its one size only.
    """
    dev = torch.device(device) if device is not None else model_device(model)
    amp = resolve_precision(precision, dev)
    base = _to_nchw(photos, spec.channels).to(dev)
    n, _, h, w = base.shape
    normalize = Normalizer.from_spec(spec, dev)
    view = SpatialView.for_spec(model, spec)
    rng = np.random.default_rng(seed)
    out: Dict[str, np.ndarray] = {}
    for name in layers:
        objective = obj.layer(name)
        with frozen_model(model), capture_activations(
            model, {name: get_layer(model, name)}, keep_graph=True, stop_after=[name]
        ) as store:
            detail = torch.zeros_like(base)
            sizes = octave_sizes((h, w), octaves, octave_scale)
            for o, (oh, ow) in enumerate(sizes):
                if o < len(sizes) - 1 and refusal(model, spec.channels, (oh, ow), [name], dev) is not None:
                    continue
                octave_base = F.interpolate(base, size=(oh, ow), mode="bilinear", align_corners=False)
                detail = F.interpolate(detail, size=(oh, ow), mode="bilinear", align_corners=False)
                img = (octave_base + detail).clamp(0, 1)
                for _ in range(steps):
                    dy, dx = (int(v) for v in rng.integers(-jitter, jitter + 1, size=2))
                    shifted = torch.roll(img, shifts=(dy, dx), dims=(2, 3)).requires_grad_(True)
                    ctx = torch.autocast(dev.type, dtype=amp) if amp is not None else contextlib.nullcontext()
                    store.clear()
                    with ctx:
                        run_until_stopped(model, normalize(shifted))
                    acts = {k: view(t, (oh, ow)) for k, t in store.items()}
                    value = objective(acts).float().sum()
                    (grad,) = torch.autograd.grad(value, shifted)
                    grad = torch.roll(grad, shifts=(-dy, -dx), dims=(2, 3))
                    grad = grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
                    img = (img + step_size * grad).clamp(0, 1).detach()
                detail = img - octave_base
        out[name] = img.permute(0, 2, 3, 1).float().cpu().numpy()
    return out


# ---------------------------------------------------------------------------------------
# dataset examples


@dataclass
class DatasetExamples:
    """Top-``k`` images of a dataset for each channel of a layer.

    ``values[j, r]`` is channel ``channels[j]``'s activation (spatial max or mean) on image
    ``indices[j, r]`` (its position in the iteration), rank ``r`` (descending);
    ``positions[j, r]`` the (y, x) of the maximum in the activation map of size ``act_hw``.
    """

    layer: str
    channels: np.ndarray
    values: np.ndarray
    indices: np.ndarray
    positions: np.ndarray
    act_hw: Tuple[int, int]
    input_hw: Tuple[int, int]
    reduce: str

    def boxes(self, crop: Optional[int] = None) -> np.ndarray:
        """(channels, k, 4) crop boxes (top, left, bottom, right) in input pixels, centred on
        the strongest position; ``crop`` defaults to about three activation cells (a rough
        receptive-field size), at least an eighth of the input."""
        ih, iw = self.input_hw
        ah, aw = self.act_hw
        if crop is None:
            crop = int(min(ih, max(ih / 8, 3 * ih / ah)))
        cy = (self.positions[..., 0] + 0.5) * ih / ah
        cx = (self.positions[..., 1] + 0.5) * iw / aw
        top = np.clip(np.round(cy - crop / 2), 0, ih - crop).astype(int)
        left = np.clip(np.round(cx - crop / 2), 0, iw - crop).astype(int)
        return np.stack([top, left, top + crop, left + crop], axis=-1)

    def crops(self, images: np.ndarray, crop: Optional[int] = None) -> np.ndarray:
        """Crops (channels, k, crop, crop, C) from ``images`` (M, H, W, C), indexed by
        ``indices`` (the images of the same iteration order, or any array so indexed)."""
        boxes = self.boxes(crop)
        c, k = self.indices.shape
        size = boxes[0, 0, 2] - boxes[0, 0, 0]
        out = np.zeros((c, k, size, size, images.shape[-1]), dtype=images.dtype)
        for j in range(c):
            for r in range(k):
                t, l, b, rr = boxes[j, r]
                out[j, r] = images[self.indices[j, r], t:b, l:rr]
        return out


@torch.no_grad()
def top_activating(
    model: nn.Module,
    spec,
    layer: str,
    batches: Iterable,
    *,
    channels: Optional[Sequence[int]] = None,
    k: int = 9,
    reduce: str = "max",
    preprocessed: bool = True,
    precision: str = "fp32",
    device=None,
) -> DatasetExamples:
    """Streaming top-``k`` dataset examples for channels of ``layer``.

    ``batches`` yields tensors (B, C, H, W) (or tuples whose first item is one): model
    inputs when ``preprocessed`` else pixels in [0, 1] that the spec normalises. Each
    image's score for a channel is the spatial ``max`` (Microscope-style) or ``mean`` of
    its activation map. Memory is O(channels x k) whatever the dataset size; the forward
    pass stops at ``layer``. A token layer (vision transformer) is scored over its patch tokens
    (positions on the patch grid; special tokens left out).
    """
    dev = torch.device(device) if device is not None else model_device(model)
    amp = resolve_precision(precision, dev)
    normalize = Normalizer.from_spec(spec, dev)
    view = SpatialView.for_spec(model, spec)
    module = get_layer(model, layer)
    best_v = best_i = best_p = None
    seen = 0
    act_hw: Tuple[int, int] = (1, 1)
    input_hw: Tuple[int, int] = tuple(spec.input_size[1:])  # type: ignore[assignment]
    chan_idx = None
    with frozen_model(model), capture_activations(model, {layer: module}, stop_after=[layer]) as store:
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = torch.as_tensor(x).to(dev, torch.float32)
            if not preprocessed:
                x = normalize(x)
            input_hw = (int(x.shape[-2]), int(x.shape[-1]))
            ctx = torch.autocast(dev.type, dtype=amp) if amp is not None else contextlib.nullcontext()
            with ctx:
                run_until_stopped(model, x)
            act = view(store[layer], input_hw).float()
            if act.dim() == 2:
                act = act[:, :, None, None]
            if chan_idx is None:
                chan_idx = torch.arange(act.shape[1]) if channels is None else torch.as_tensor(list(channels))
                chan_idx = chan_idx.to(dev)
            act = act[:, chan_idx]
            b, c, ah, aw = act.shape
            act_hw = (ah, aw)
            flat = act.reshape(b, c, -1)
            if reduce == "max":
                score, pos = flat.max(dim=2)
            elif reduce == "mean":
                score, pos = flat.mean(dim=2), flat.argmax(dim=2)
            else:
                raise ValueError(f"reduce must be 'max' or 'mean', not {reduce!r}")
            score, pos = score.T, pos.T  # (c, b)
            ids = torch.arange(seen, seen + b, device=dev).expand(c, b)
            if best_v is None:
                best_v, best_i, best_p = score, ids, pos
            else:
                best_v = torch.cat([best_v, score], dim=1)
                best_i = torch.cat([best_i, ids], dim=1)
                best_p = torch.cat([best_p, pos], dim=1)
            kk = min(k, best_v.shape[1])
            best_v, order = best_v.topk(kk, dim=1)
            best_i = best_i.gather(1, order)
            best_p = best_p.gather(1, order)
            seen += b
    if best_v is None:
        raise ValueError("top_activating: the batch iterator yielded no images")
    pos = best_p.cpu().numpy()
    return DatasetExamples(
        layer=layer,
        channels=chan_idx.cpu().numpy(),
        values=best_v.cpu().numpy(),
        indices=best_i.cpu().numpy(),
        positions=np.stack([pos // act_hw[1], pos % act_hw[1]], axis=-1),
        act_hw=act_hw,
        input_hw=input_hw,
        reduce=reduce,
    )


# ---------------------------------------------------------------------------------------
# first-layer filters


def first_conv(model: nn.Module) -> Tuple[str, nn.Conv2d]:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    # a TorchScript model's layers are script modules, not nn.Conv2d: say that, not "no Conv2d"
    refuse_script(model, "first-layer filters")
    raise ValueError(f"{type(model).__name__} has no Conv2d layer")


def filter_grid(model: nn.Module, *, zoom: int = 8, pad: int = 1, columns: Optional[int] = None) -> np.ndarray:
    """The first convolution's filters as one image grid, (H, W, 3) float in [0, 1].

    Each filter is scaled by its own largest absolute weight and centred on grey, so a
    filter's colour and sign structure show regardless of its norm. Filters over 3 input
    channels are shown in colour, others (grayscale input, or the mean over channels) in grey.
    Weights are read, never changed.
    """
    _, conv = first_conv(model)
    w = conv.weight.detach().float().cpu().numpy()  # (O, I, kh, kw)
    o, i, kh, kw = w.shape
    if i != 3:
        w = np.repeat(w.mean(axis=1, keepdims=True), 3, axis=1)
    scale = np.abs(w).reshape(o, -1).max(axis=1).clip(1e-12)[:, None, None, None]
    w = 0.5 + 0.5 * w / scale
    cols = columns or int(math.ceil(math.sqrt(o)))
    rows = int(math.ceil(o / cols))
    ch, cw = kh * zoom, kw * zoom
    grid = np.ones((rows * (ch + pad) + pad, cols * (cw + pad) + pad, 3), dtype=np.float32)
    for f in range(o):
        r, c = divmod(f, cols)
        tile = np.kron(w[f].transpose(1, 2, 0), np.ones((zoom, zoom, 1)))
        y, x = pad + r * (ch + pad), pad + c * (cw + pad)
        grid[y : y + ch, x : x + cw] = tile
    return grid
