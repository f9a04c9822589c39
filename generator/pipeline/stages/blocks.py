"""Stage: Building Blocks interfaces (Olah et al. 2018, "The Building Blocks of Interpretability").

Per (model, image, layer) one ``blocks`` artifact: the summary JSON of
:func:`generator.methods.blocks.building_blocks` (semantic dictionary, activation grid,
spatial/channel attribution, competing classes, NMF groups, layer-to-layer attribution and the
group flow to the next configured layer), the spatial maps as float arrays, the displayed image,
and feature-visualisation icons as uint8 arrays: one per activation-grid cell (direction
objective of the cell's activation vector) and one per neuron group (direction objective of the
group's channel factor), for this layer's groups and the next layer's.

Channel icons do not depend on the image, so they are rendered once per (model, layer) for the
union of channels any page shows (``blocks-icons`` artifact) rather than once per image.
Icons are rendered with :func:`generator.methods.featurevis.render`, each set in one batched
call; image ``i`` of a call has its own seed, so results are deterministic.

Vision transformers: a token layer is read on its patch grid (cells are patch tokens); the
class token is not a place in the image, and the summary's ``tokens`` entry says what it carries
of each class's attribution. A model that refuses the icon size (one fixed input size) renders
its icons at its own size, scaled down to the icon size; the record's ``icons`` says so
(``rendered_size``, ``size_note``).
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from generator.artifacts.store import json_bytes, npz_bytes
from generator.config import ModelConfig
from generator.data.imageio import unit_to_uint8
from generator.engine.preprocess import display_images
from generator.pipeline.context import RunContext
from generator.pipeline.inputs import model_input
from generator.pipeline.stages import Stage, register_stage
from generator.pipeline.units import SYNC, Sync, Unit

KIND = "blocks"
ICON_KIND = "blocks-icons"
VERSION = "1"


# ---------------------------------------------------------------------------------------------
# what to explain


def selected_images(settings, dataset) -> List[int]:
    """Indices of the dataset items to explain: ``images`` by id (in that order), else the first
    ``max_images``."""
    if settings.images:
        ids = [it.id for it in dataset.items]
        return [ids.index(i) for i in settings.images if i in ids]  # a dataset without them is skipped
    return list(range(min(settings.max_images, len(dataset))))


def resolve_layers(settings, spec) -> List[str]:
    """The configured layers, else the last two of the model's spec layers."""
    if settings.layers:
        return list(settings.layers)
    return list(spec.layers[-2:])


def resolve_classes(settings, spec) -> List[int]:
    """Extra classes by index or name (names must match the model's class names exactly)."""
    out = []
    for c in settings.classes:
        if isinstance(c, int):
            if not 0 <= c < spec.num_classes:
                raise ValueError(f"blocks.classes: class index {c} is outside 0..{spec.num_classes - 1}")
            out.append(c)
        else:
            if c not in spec.class_names:
                raise ValueError(f"blocks.classes: {c!r} is not a class name of model {spec.id!r}")
            out.append(spec.class_names.index(c))
    return out


def applies(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> bool:
    models = ctx.config.blocks.models
    return models is None or mc.id in models


def _units(config) -> int:
    s = config.blocks
    return (len(s.images) or s.max_images) * (len(s.layers) or 2) + (len(s.layers) or 2)


# ---------------------------------------------------------------------------------------------
# icons


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Feature-visualisation images in [0, 1] (N, H, W, C) -> uint8 RGB."""
    out = unit_to_uint8(images)
    return np.repeat(out, 3, axis=3) if out.shape[3] == 1 else out


def render_icons(model, spec, objective, icons: Dict[str, Any], size: int, seed: int, device,
                 notes: Optional[Dict[str, Any]] = None) -> np.ndarray:
    """One batched render call; uint8 (N, size, size, 3).

    A model that refuses ``size`` (one fixed input size) is rendered at its own size and scaled
    down to ``size`` (area-averaged); ``notes`` (a dict) then receives ``rendered_size`` and
    ``size_note``."""
    from generator.methods import featurevis as fv

    native = int(spec.input_size[1])
    size = native if native < 64 else size  # a 28 px model keeps its own size
    res = fv.render(model, spec, objective, steps=icons["steps"], size=size, lr=icons["lr"], seed=seed,
                    precision="fp32", device=device, redirected_relu_steps=min(4, icons["steps"] // 4),
                    batch_size=256)
    images = res.images
    if images.shape[1:3] != (size, size):
        t = torch.as_tensor(images).permute(0, 3, 1, 2)
        t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                                            antialias=True).clamp(0, 1)
        images = t.permute(0, 2, 3, 1).numpy()
        if notes is not None:
            notes["rendered_size"] = [int(v) for v in res.images.shape[1:3]]
            notes["size_note"] = str(res.settings.get("size_note", ""))
    return to_uint8(images)


def direction_rows(vectors: torch.Tensor) -> torch.Tensor:
    """Rows for a batched direction objective; an all-zero row (a dead cell) gets a tiny uniform
    vector so the objective stays defined (its icon is faded out on the page anyway)."""
    v = vectors.detach().float().cpu().clone()
    dead = v.norm(dim=1) == 0
    v[dead] = 1e-6
    return v


# ---------------------------------------------------------------------------------------------
# one (image, layer)


def compute_blocks(ctx: RunContext, mc: ModelConfig, dataset_id: str, item, pixels: np.ndarray, layer: str,
                   upper: Optional[str], classes: Sequence[int]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    from generator.methods import featurevis as fv
    from generator.methods.blocks import building_blocks, summary_json

    s = ctx.config.blocks
    loaded = ctx.models[mc.id]
    spec, model = loaded.spec, loaded.module
    icons = s.icons_for(ctx.device.type)
    x = model_input(spec, pixels[None], ctx.device)[0]
    bb = building_blocks(model, x, layer, top_k=s.top_k, classes=classes, n_channels=s.n_channels,
                         n_groups=s.n_groups, upper_layer=upper, seed=ctx.config.seed, layout=fv.spec_layout(spec))
    summary = summary_json(bb, spec.class_names)
    h, w = bb.grid.grid_shape
    grid_dirs = direction_rows(bb.grid.directions.reshape(h * w, -1))
    notes: Dict[str, Any] = {}
    grid_icons = render_icons(model, spec, fv.direction(layer, grid_dirs), icons, icons["grid_size"],
                              ctx.config.seed, ctx.device, notes)
    group_objs = [fv.direction(layer, d) for d in direction_rows(bb.groups.unit_directions())]
    if bb.upper_groups is not None:
        group_objs += [fv.direction(upper, d) for d in direction_rows(bb.upper_groups.unit_directions())]
    group_icons = render_icons(model, spec, fv.stack(group_objs), icons, icons["size"], ctx.config.seed, ctx.device,
                               notes)
    k = bb.groups.k
    ca, ga = bb.attribution, bb.group_attr
    arrays = {
        "pixels": pixels.astype(np.uint8),
        "grid_icons": grid_icons,
        "group_icons": group_icons[:k],
        "magnitude": bb.grid.magnitude.cpu().numpy().astype(np.float32),
        "class_maps": ca.spatial.detach().cpu().numpy().astype(np.float32),  # K x h x w
        "group_maps": bb.groups.spatial.cpu().numpy().astype(np.float32),  # k x h x w
        "group_class_maps": ga.spatial.detach().cpu().numpy().astype(np.float32),  # K x k x h x w
    }
    if bb.upper_groups is not None:
        arrays["upper_group_icons"] = group_icons[k:]
        arrays["upper_group_maps"] = bb.upper_groups.spatial.cpu().numpy().astype(np.float32)
    if bb.layer_to_layer is not None:
        arrays["layer_to_layer"] = bb.layer_to_layer.matrix().cpu().numpy().astype(np.float32)  # Q x (h*w)
    record = {
        "model": mc.id, "dataset": dataset_id, "image": item.id, "title": item.title or item.id,
        "licence": item.licence, "layer": layer, "upper": upper, "grid": [h, w],
        "top_classes": [int(c) for c in bb.top_classes],
        "top_names": [spec.class_names[c] for c in bb.top_classes],
        "icons": {**icons, **notes}, "group_mode": bb.groups.mode,
    }
    return record, {"summary": ("summary.json", json_bytes(summary)), "arrays": ("arrays.npz", npz_bytes(**arrays))}


def used_channels(summary: Dict[str, Any]) -> Tuple[set, set]:
    """Channels of the layer, and of the upper layer, that the pages show with an icon."""
    own: set = set()
    for cell in summary["cells"]:
        own.update(c for c, _ in cell["channels"])
    for r in summary["channel_attribution"]:
        own.update(c for c, _ in r["support"] + r["oppose"])
    if "competing" in summary:
        own.update(c for c, _ in summary["competing"]["for_a"] + summary["competing"]["for_b"])
    for g in summary["groups"]:
        own.update(c for c, _ in g["channels"])
    upper: set = set()
    for g in summary.get("flow", {}).get("upper_groups", []):
        upper.update(c for c, _ in g["channels"])
    return own, upper


# ---------------------------------------------------------------------------------------------
# the stage


def declare_blocks(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> Iterator[Union[Unit, Sync]]:
    """One unit per (image, layer), then one icon unit per layer for the channels they show.

    The icon units are declared only after the image units ran (this is a generator), because
    which channels need icons is read from their summaries."""
    s = ctx.config.blocks
    loaded, dataset = ctx.models[mc.id], ctx.datasets[dataset_id]
    spec = loaded.spec
    if spec.input_size is None or len(spec.input_size) != 3:
        raise ValueError(f"Building Blocks needs an image model; {mc.id} has input size {spec.input_size}")
    indices = selected_images(s, dataset)
    layers = resolve_layers(s, spec)
    classes = resolve_classes(s, spec)
    icons = s.icons_for(ctx.device.type)
    # Only the chosen images (an image near the end of a large folder must not decode those before it).
    display = {i: display_images([dataset.items[i].pixels], spec)[0] for i in indices}
    params = dict(top_k=s.top_k, classes=classes, n_channels=s.n_channels, n_groups=s.n_groups, icons=icons)
    run = {"seed": ctx.config.seed, "device": ctx.device.type}
    channels: Dict[str, set] = {layer: set() for layer in layers}

    def collect(layer: str, upper: Optional[str]):
        def after(artifact) -> None:
            own, up = used_channels(artifact.load_json("summary"))
            channels[layer] |= own
            if upper is not None:
                channels[upper] |= up
        return after

    for i in indices:
        item = dataset.items[i]
        pixels = display[i]
        # The image's own pixels, not the dataset's digest: adding an image to the dataset
        # recomputes nothing for the others (these units are the expensive ones).
        pixel_digest = hashlib.sha256(pixels.tobytes()).hexdigest()[:16]
        for li, layer in enumerate(layers):
            upper = layers[li + 1] if li + 1 < len(layers) else None
            yield Unit(kind=KIND, family="blocks", version=VERSION,
                       label=f"building blocks of {mc.id}/{item.id} at {layer}",
                       compute=lambda item=item, pixels=pixels, layer=layer, upper=upper: compute_blocks(
                           ctx, mc, dataset_id, item, pixels, layer, upper, classes),
                       model=mc.id, dataset=dataset_id, dataset_digest=False,
                       inputs={"image": item.id, "pixels": pixel_digest},
                       params={**params, "layer": layer, "upper": upper}, settings=run,
                       labels={"image": item.id, "layer": layer}, after=collect(layer, upper))
    yield SYNC  # the channels come from every unit's ``after``, on whichever rank computed it
    for layer in layers:
        wanted = sorted(channels[layer])
        if wanted:
            yield _icons_unit(ctx, mc, dataset_id, layer, wanted, icons)
        # A layer without channels to show has no unit; run.py's top-up keeps the bar's count.


def _icons_unit(ctx: RunContext, mc: ModelConfig, dataset_id: str, layer: str, wanted: List[int],
                icons: Dict[str, Any]) -> Unit:
    from generator.methods import featurevis as fv

    loaded = ctx.models[mc.id]

    def compute():
        notes: Dict[str, Any] = {}
        pics = render_icons(loaded.module, loaded.spec, fv.channel(layer, wanted), icons, icons["size"],
                            ctx.config.seed, ctx.device, notes)
        record = {"model": mc.id, "layer": layer, "channels": wanted, "icons": {**icons, **notes}}
        return record, {"icons": ("icons.npz", npz_bytes(icons=pics, channels=np.asarray(wanted, np.int64)))}

    # Icons do not depend on any image: shared by every dataset of the model (labelled with this one).
    return Unit(kind=ICON_KIND, family="blocks", version=VERSION, label=f"channel icons of {mc.id} at {layer}",
                compute=compute, model=mc.id, params={"layer": layer, "channels": wanted, "icons": icons},
                settings={"seed": ctx.config.seed, "device": ctx.device.type},
                labels={"dataset": dataset_id, "layer": layer})


register_stage(Stage(name="building blocks", order=40, declare=declare_blocks,
                     enabled=lambda config: config.blocks.enabled, expected=_units, applies=applies))
