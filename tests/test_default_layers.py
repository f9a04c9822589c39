"""Default layers, CAM layer and embedding layer found from the module tree, for models loaded
through ``load_model``: timm ViT and ConvNeXt (random weights), torchvision ResNet and DenseNet,
and a TorchScript file."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from generator.engine.hooks import capture_activations
from generator.engine.layers import get_layer
from generator.models.sources import LoadContext, ModelRequest, _penultimate, load_model
from generator.models.tokens import TokenLayout, to_spatial

CTX = LoadContext()
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def _traced_cnn_file(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential()
    for name, layer in [("conv1", nn.Conv2d(3, 4, 3, padding=1)), ("bn1", nn.BatchNorm2d(4)), ("relu1", nn.ReLU()),
                        ("conv2", nn.Conv2d(4, 8, 3, stride=2)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
                        ("conv3", nn.Conv2d(8, 8, 3, padding=1)), ("relu3", nn.ReLU()),
                        ("gap", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()), ("fc", nn.Linear(8, 3))]:
        net.add_module(name, layer)
    path = tmp_path / "cnn.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(net.eval(), torch.randn(1, 3, 32, 32)).save(str(path))
    return f"torchscript:{path}", {"class_names": ["a", "b", "c"], "input_size": (3, 32, 32)}


# source, overrides (or a factory of both), layers, CAM layer, embedding layer, input size
CASES = {
    # a class-token ViT: its last block's patch tokens get no gradient, so CAMs read the last attention's input
    "timm_vit": ("timm:test_vit", {}, ["blocks.1", "blocks.2", "blocks.4", "blocks.5"], "blocks.5.norm1",
                 "head_drop", 160),
    "timm_convnext": ("timm:test_convnext", {}, ["stages.0", "stages.1", "stages.2", "stages.3"], "stages.3",
                      "head.drop", 64),
    "resnet18": ("torchvision:resnet18", {}, ["layer1", "layer2", "layer3", "layer4"], "layer4", "avgpool", 64),
    "densenet121": ("torchvision:densenet121", {}, [f"features.denseblock{i}" for i in range(1, 5)],
                    "features.denseblock4", None, 64),  # DenseNet pools with a function call: no module has it
    "torchscript": (_traced_cnn_file, None, ["relu1", "pool2", "relu3"], "relu3", "flat", 32),
}


@pytest.mark.parametrize("case", list(CASES))
def test_default_layers_load_and_resolve(case, tmp_path):
    if case.startswith("timm"):
        pytest.importorskip("timm")
    source, overrides, layers, cam, embedding, size = CASES[case]
    if callable(source):
        source, overrides = source(tmp_path)
    loaded = load_model(ModelRequest(id=case, source=source, overrides=dict(overrides)), CTX)
    spec, model = loaded.spec, loaded.module
    assert (spec.layers, spec.cam_layer, spec.embedding_layer) == (layers, cam, embedding)
    named = {n: get_layer(model, n) for n in [*layers, *(x for x in (cam, embedding) if x)]}
    if isinstance(model, torch.jit.ScriptModule):
        return  # hooks do not work on TorchScript; the names resolve, which is what the spec needs
    # every layer runs in eval mode, and the CAM layer has a spatial (B,K,h,w) map
    with torch.no_grad(), capture_activations(model, named) as store:
        model(torch.randn(1, 3, size, size))
    assert set(store) == set(named)
    if cam:  # a spatial (B,K,h,w) map, directly or through the inferred token grid
        assert to_spatial(store[cam], TokenLayout.from_json(spec.tokens), (size, size)).dim() == 4
    if embedding:
        assert store[embedding].flatten(1).shape[1] < 1000


def test_timm_vit_with_other_sizes_loads():
    """A user's ViT (here vit_tiny with a smaller image and patch) loads with default layers."""
    timm = pytest.importorskip("timm")
    from generator.models.sources import _default_layers

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=4)
    assert _default_layers(vit) == (["blocks.0", "blocks.1", "blocks.2", "blocks.3"], "blocks.3.norm1")
    assert _penultimate(vit) == "head_drop"


def test_penultimate_skips_a_parallel_head():
    """DeiT's distillation head sits beside the classifier: the embedding is what both read."""

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.drop = nn.Dropout()
            self.head, self.head_dist = nn.Linear(4, 2), nn.Linear(4, 2)

    assert _penultimate(TwoHeads()) == "drop"
