"""timm models with their published weights: ``timm:<name>[.<tag>]`` and ``timm:hf-hub:<org>/<repo>``.

The weights file is found (or fetched) by :mod:`generator.models.hub`, then timm builds the model
with ``pretrained=True`` and that file as the weights' location, so timm's own checkpoint filters
and strict loading apply while the network stays out of timm's hands.

The spec comes from the pretrained config published with the weights (input size, crop, resize
interpolation, mean/std, classes, licence), never from defaults of the architecture.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from torch import nn

from generator.models.hub import HubFile, hub_file, split_revision, torch_hub_checkpoint
from generator.models.sources import NOT_PROVIDED, checkpoint_refusal

HF_HUB_PREFIX = "hf-hub:"
_SYNSET = re.compile(r"^n\d{8}$")


@dataclass
class PretrainedTimm:
    """A timm model built with published weights, and what the card must say about them."""

    module: nn.Module
    name: str  # the weights' full name: convnext_tiny.fb_in22k_ft_in1k or hf-hub:org/repo
    cfg: Dict[str, Any]  # the pretrained config the weights were published with
    source: str  # where the weights came from (Hub repository and commit, or URL)
    licence: str  # NOT_PROVIDED when the publisher gave none
    file: Path  # the cached weights file


def _fill_command(name: str) -> str:
    return f"`python -c \"import timm; timm.create_model('{name}', pretrained=True)\"`"


def _weight_candidates(filename: Optional[str]) -> List[str]:
    """File names to look for in a Hub repository, safetensors first (it cannot carry code).

    Follows timm's own preference: ``pytorch_model.bin`` has ``model.safetensors`` as its safe
    twin, any other ``x.bin`` has ``x.safetensors``.
    """
    if not filename or filename == "pytorch_model.bin":
        return ["model.safetensors", "pytorch_model.bin"]
    if filename.endswith(".bin"):
        return [filename[: -len(".bin")] + ".safetensors", filename]
    return [filename]


def _hub_source(found: HubFile) -> str:
    from huggingface_hub import constants

    return f"{constants.ENDPOINT}/{found.repo_id} ({found.filename}, commit {found.commit[:12]})"


def _registry_weights(model_id: str, name: str) -> PretrainedTimm:
    """``name`` is ``architecture`` (its default weights) or ``architecture.tag``."""
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    arch, _ = split_model_name_tag(name)
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:  # an unknown tag
        cfg = None
    if cfg is None or not cfg.has_weights:
        known = timm.list_pretrained(f"{arch}.*")
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        if close:
            hint = f"did you mean {', '.join(close)}?"
        elif known:
            hint = f"published for {arch}: {', '.join(known[:8])}{' ...' if len(known) > 8 else ''}"
        else:
            hint = f"timm publishes no weights for {arch}; give a local checkpoint file instead"
        raise ValueError(f"model {model_id!r}: timm has no published weights {name!r}; {hint}")
    full = f"{arch}.{cfg.tag}" if cfg.tag else arch
    what = f"timm weights {full}"
    if cfg.hf_hub_id:
        found = hub_file(model_id, cfg.hf_hub_id, _weight_candidates(cfg.hf_hub_filename), what,
                         _fill_command(full))
        path, source = found.path, _hub_source(found)
    elif isinstance(cfg.url, str) and cfg.url:
        path = torch_hub_checkpoint(cfg.url, model_id, what, _fill_command(full))
        source = cfg.url
    else:
        raise ValueError(f"model {model_id!r}: timm weights {full} have no download location this tool "
                         "can cache; save them with torch.save(model.state_dict(), path) and give that file")
    # custom_load is kept: the cached file has the registry source's format (e.g. original .npz).
    module = _build(model_id, full, path, lambda: timm.create_model(
        full, pretrained=True, pretrained_cfg_overlay={"file": str(path), "custom_load": cfg.custom_load}))
    return _described(module, full, source, path)


def _parse_hub_config(raw: Dict[str, Any]) -> Tuple[str, Dict[str, Any], Dict[str, Any]]:
    """(architecture, pretrained config, model arguments) from a timm ``config.json``.

    Two layouts exist: the current one nests ``pretrained_cfg`` and keeps ``num_classes`` and
    ``label_names`` at the top; the legacy one is a single flat dict with ``labels``.
    """
    raw = dict(raw)
    if "pretrained_cfg" not in raw:
        arch = raw.pop("architecture", None)
        pretrained = raw
        if "labels" in pretrained:
            pretrained["label_names"] = pretrained.pop("labels")
        model_args: Dict[str, Any] = {}
    else:
        arch = raw.get("architecture")
        pretrained = dict(raw["pretrained_cfg"])
        for key in ("num_classes", "label_names", "label_descriptions"):
            if key in raw:
                pretrained[key] = raw[key]
        model_args = dict(raw.get("model_args") or {})
    return arch, pretrained, model_args


def _hub_repo_weights(model_id: str, repo_spec: str) -> PretrainedTimm:
    """A Hub repository holding timm weights and their ``config.json``."""
    import timm
    from timm.models import PretrainedCfg

    name = HF_HUB_PREFIX + repo_spec
    config = hub_file(model_id, repo_spec, ["config.json"], f"the config of {name}", _fill_command(name))
    try:
        raw = json.loads(config.path.read_text(encoding="utf-8"))
        arch, pretrained, model_args = _parse_hub_config(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"model {model_id!r}: {config.path} is not a timm config.json ({exc}); "
                         f"delete it and fill the cache again with {_fill_command(name)}") from None
    if not arch or not timm.is_model(arch):
        raise ValueError(f"model {model_id!r}: {config.path} names architecture {arch!r}, which this timm "
                         f"{timm.__version__} does not have; upgrade timm (pip install -U timm)")
    repo_id, _ = split_revision(repo_spec)
    # Pin the weights to the config's snapshot so both files come from one commit.
    pinned = f"{repo_id}@{config.commit}"
    weights = hub_file(model_id, pinned, _weight_candidates(pretrained.get("hf_hub_filename")),
                       f"timm weights {name}", _fill_command(name))
    fields = {f.name for f in dataclasses.fields(PretrainedCfg)}
    pretrained = {k: v for k, v in pretrained.items() if k in fields}  # newer timm may add keys
    pretrained.update(hf_hub_id=repo_spec, file=str(weights.path), source=None, architecture=arch)
    module = _build(model_id, name, weights.path,
                    lambda: timm.create_model(arch, pretrained=True, pretrained_cfg=pretrained, **model_args))
    return _described(module, name, _hub_source(weights), weights.path)


def _build(model_id: str, name: str, path: Path, create: Callable[[], nn.Module]) -> nn.Module:
    """Run timm's constructor; a cached file it cannot use becomes one line naming that file."""
    try:
        return create()
    except Exception as exc:
        # timm reads .bin files weights-only too, and wraps torch's refusal in its own error; both
        # texts advise switching weights-only off, so the refusal is reworded from the innermost one.
        inner: Optional[BaseException] = exc
        while inner is not None and not isinstance(inner, pickle.UnpicklingError):
            inner = inner.__cause__ or inner.__context__
        if inner is not None or "weights_only" in str(exc):
            raise ValueError(checkpoint_refusal(path, f"model {model_id!r}", inner or exc)) from None
        detail = " ".join(str(exc).split())[:300]
        raise ValueError(f"model {model_id!r}: timm could not build {name} from the cached weights {path} "
                         f"({type(exc).__name__}: {detail}); delete that file and fill the cache again with "
                         f"{_fill_command(name)}") from None


def _described(module: nn.Module, name: str, source: str, path: Path) -> PretrainedTimm:
    cfg = dict(getattr(module, "pretrained_cfg", None) or {})
    licence = str(cfg.get("license") or "").strip() or NOT_PROVIDED
    return PretrainedTimm(module=module, name=name, cfg=cfg, source=source, licence=licence, file=path)


def load_pretrained_timm(model_id: str, argument: str) -> PretrainedTimm:
    """Build ``argument`` (a timm name with optional tag, or ``hf-hub:org/repo[@rev]``) with its weights."""
    if argument.startswith(HF_HUB_PREFIX):
        repo_spec = argument[len(HF_HUB_PREFIX):]
        if "/" not in split_revision(repo_spec)[0]:
            raise ValueError(f"model {model_id!r}: {argument!r} needs an organisation and a repository, "
                             "e.g. timm:hf-hub:timm/resnet18.a1_in1k")
        return _hub_repo_weights(model_id, repo_spec)
    return _registry_weights(model_id, argument)


def timm_class_names(cfg: Dict[str, Any], num_classes: int, imagenet_1k: List[str]) -> Tuple[List[str], str]:
    """Class names for published weights, and where they came from (for the card).

    In order: the weights' own ``label_names`` (unless they are bare WordNet ids); the torchvision
    ImageNet-1k names for 1,000 classes; timm's ImageNet subset descriptions (22k, 21k, 12k ...);
    else ``class i``.
    """
    labels = list(cfg.get("label_names") or [])
    synsets = bool(labels) and all(_SYNSET.match(str(x)) for x in labels)
    if labels and len(labels) == num_classes and not synsets:
        return [str(x) for x in labels], "the weights' label_names"
    if num_classes == 1000:
        return list(imagenet_1k), "ImageNet-1k (torchvision's class names)"
    try:  # ImageNetInfo arrived in timm 0.9.x; older versions fall through to numbered classes
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(cfg)
        if subset:
            info = ImageNetInfo(subset)
            if info.num_classes() == num_classes:
                return [info.index_to_description(i) for i in range(num_classes)], f"timm's {subset} descriptions"
    except (ImportError, ValueError, KeyError, FileNotFoundError):
        pass
    return [f"class {i}" for i in range(num_classes)], "numbered (the weights publish no class names)"
