"""Stage: interpreting the model's features (feature visualisation at Microscope scale).

For each model (once, on its first dataset pair) this plans what to show from the
``features`` settings and the profile, then computes one artifact per piece:

* ``features_filters``: the first convolution's weights as an image grid;
* per chosen layer: ``features_gallery`` (one visualisation per channel, all channels of the
  layer in one batched render; Olah et al. 2017), ``features_diversity`` (a set of images per
  unit pushed apart by a Gram-matrix penalty), ``features_negative`` (what a unit dislikes),
  ``features_examples`` (top-activating dataset images and crops, with activation values) and
  ``features_deconv`` (the strongest example projected back to pixels, Zeiler & Fergus 2014);
* ``features_classes``: class-logit visualisations (Simonyan et al. 2013);
* ``features_deepdream``: each photo dreamed at a few layers, shallow to deep (Mordvintsev,
  Olah & Tyka 2015).

Every render is seeded, so the same settings give the same images; every key holds what
determines the result (model identity, layer, channels, effective settings, seed, device).

Vision transformers: the default layers are the model's repeated blocks; a token layer's units
are visualised averaged over the patch tokens (the class token left out) and the records say so
(``settings.tokens``). A model that accepts one input size only is rendered at that size
whatever ``features.size`` asks, found with one small forward pass before optimising; the
records say so too (``settings.size_requested``, ``settings.size_note``).
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Dict, Iterator, List, Optional

from generator.capability import Unsupported
from generator.config import ModelConfig, ReportConfig
from generator.pipeline.context import RunContext
from generator.pipeline.stages import Stage, register_stage
from generator.pipeline.units import Unit

# Units per model, an estimate for the progress bar (the plan decides: filters, and per layer
# a gallery, a diversity set, negatives, dataset examples and deconvnet projections, classes,
# DeepDream).
UNITS = 12
SMALL_INPUT = 64  # px: models with smaller inputs are cheap enough to show every channel


@dataclass
class FeaturePlan:
    """What the stage computes for one model (all settings resolved)."""

    profile: Any  # featurevis Profile, with the settings' overrides applied
    layers: List[str]
    channels: Dict[str, List[int]]
    layer_channels: Dict[str, int]
    examples: int
    dataset_id: str
    classes: List[int]
    dream_layers: List[str]
    dream_images: int
    dream_size: int
    # layer -> how its token output is read (vision transformers); {} for a CNN
    token_layers: Dict[str, str] = dc_field(default_factory=dict)


def spread(names: List[str], count: Optional[int]) -> List[str]:
    """``count`` names evenly inside the list, leaving out both ends when it can (the first
    stage shows little more than colour blobs and the last is the most expensive to render):
    7 stages, 2 picked -> the 3rd and 5th; 3 picked -> 2nd, 4th, 6th."""
    n = len(names)
    if count is None or count >= n:
        return list(names)
    return [names[int((i + 1) * n / (count + 1))] for i in range(count)]


def feature_dataset(ctx: RunContext, mc: ModelConfig) -> Optional[str]:
    """The dataset a model's dataset examples and DeepDream use: the configured one, else the
    model's first dataset pair."""
    chosen = ctx.config.features.examples_dataset.get(mc.id)
    if chosen is not None:
        if chosen not in ctx.datasets:
            raise ctx.config.error(("features", "examples_dataset", mc.id),
                                   f"dataset {chosen!r} is not defined or failed to load "
                                   f"(loaded: {sorted(ctx.datasets)})")
        return chosen
    return next((ds for m, ds in ctx.pairs() if m.id == mc.id), None)


def _applies(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> bool:
    models = ctx.config.features.models
    if models is not None and mc.id not in models:
        return False
    # Feature visualisation belongs to the model, not to a (model, dataset) pair: run once.
    first = next((ds for m, ds in ctx.pairs() if m.id == mc.id), None)
    return dataset_id == first


def _check_settings(config: ReportConfig) -> None:
    """Per-model maps must name configured models (a typo would silently do nothing)."""
    import difflib

    ids = [m.id for m in config.models]
    feats = config.features
    for model_id in feats.models or []:
        if model_id not in ids:
            close = difflib.get_close_matches(model_id, ids, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise config.error(("features", "models"), f"unknown model id {model_id!r}{hint} (models: {ids})")
    for field in ("layers", "examples_dataset", "classes", "deepdream_layers"):
        for model_id in getattr(feats, field):
            if model_id not in ids:
                close = difflib.get_close_matches(model_id, ids, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise config.error(("features", field, model_id),
                                   f"unknown model id {model_id!r}{hint} (models: {ids})")


def make_plan(ctx: RunContext, mc: ModelConfig) -> FeaturePlan:
    """Resolve the profile, layers, channels, classes and DeepDream inputs of one model."""
    import torch

    from generator.methods import featurevis as fv
    from generator.pipeline.inputs import displayed, model_input

    config, feats = ctx.config, ctx.config.features
    _check_settings(config)
    loaded = ctx.models[mc.id]
    model, spec = loaded.module, loaded.spec
    name = feats.profile if feats.profile != "auto" else ("full" if ctx.device.type == "cuda" else "quick")
    prof = fv.get_profile(name)
    changes: Dict[str, Any] = {}
    if feats.steps is not None:
        changes["steps"] = feats.steps
    if feats.size is not None:
        changes["size"] = feats.size
    prof = prof.with_(**changes)
    small = int(spec.input_size[1]) < SMALL_INPUT

    stages = fv.default_layers(model)
    if mc.id in feats.layers:
        layers = list(feats.layers[mc.id])
    else:
        count = feats.layer_count if feats.layer_count is not None else (2 if name == "quick" else None)
        layers = spread(stages, count)
    sizes: Dict[str, int] = {}
    channels: Dict[str, List[int]] = {}
    for i, layer in enumerate(layers):
        try:
            sizes[layer] = fv.layer_channels(model, spec, layer)
        except Unsupported:  # TorchScript: listed as not applicable with its reason, not a config error
            raise
        except Exception as exc:  # unknown layer name: say where it came from
            where = ("features", "layers", mc.id, i) if mc.id in feats.layers else ("features",)
            raise config.error(where, f"layer {layer!r} of model {mc.id!r}: {exc}") from None
        if feats.channels == "all" or (feats.channels is None and (small or prof.channels_per_layer is None)):
            count_c = None
        else:
            count_c = feats.channels if isinstance(feats.channels, int) else prof.channels_per_layer
        channels[layer] = fv.spread_channels(sizes[layer], count_c)

    dataset_id = feature_dataset(ctx, mc)
    examples = prof.dataset_examples if feats.examples is None else feats.examples
    dataset = ctx.datasets.get(dataset_id) if dataset_id else None

    if mc.id in feats.classes:
        try:
            classes = [spec.class_index(c) for c in feats.classes[mc.id]]
        except ValueError as exc:
            raise config.error(("features", "classes", mc.id), str(exc)) from None
    elif dataset is not None and feats.max_classes > 0:
        # the classes the model predicts for the images the report shows
        n = min(config.outcome.images, len(dataset))
        with torch.no_grad():
            logits = model(model_input(spec, displayed(spec, dataset, n), ctx.device))
        predicted = logits.argmax(1).cpu().numpy().tolist()
        classes = list(dict.fromkeys(int(c) for c in predicted))
    else:
        classes = []
    classes = classes[: feats.max_classes] if mc.id not in feats.classes else classes

    dream_layers = list(feats.deepdream_layers.get(mc.id, spread(stages, 3 if name == "quick" else 4)))
    dream_images = 0 if dataset is None else min(
        len(dataset), config.outcome.images if feats.deepdream_images is None else feats.deepdream_images)
    native = int(spec.input_size[1])
    dream_size = feats.deepdream_size or (min(native, 160) if name == "quick" else native)
    token_layers = fv.token_layers(model, spec, list(layers) + dream_layers)
    return FeaturePlan(profile=prof, layers=layers, channels=channels, layer_channels=sizes, examples=examples,
                       dataset_id=dataset_id or "", classes=classes, dream_layers=dream_layers,
                       dream_images=dream_images, dream_size=dream_size, token_layers=token_layers)


def declare_features(ctx: RunContext, mc: ModelConfig, dataset_id: str) -> Iterator[Unit]:
    from generator.pipeline.stages import features_compute as fc

    yield from fc.FeatureJob(ctx, mc, make_plan(ctx, mc)).units()


register_stage(Stage(name="features (feature visualisation)", order=40, declare=declare_features,
                     enabled=lambda config: config.features.enabled, expected=lambda config: UNITS,
                     applies=_applies))
