"""Every model source through local files, the espresso check, and checkpoint safety."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from generator.data.sources import load_dataset
from generator.engine.preprocess import prepare_batch
from generator.models.sources import LoadContext, ModelRequest, load_model, state_dict_digest

CTX = LoadContext()


def test_embedded_lite0_calls_coffee_espresso():
    loaded = load_model(ModelRequest(id="lite0", source="embedded:efficientnet_lite0"), CTX)
    photos = load_dataset("p", "samples", {"names": ["coffee", "chelsea"]})
    x, _ = prepare_batch([it.pixels for it in photos.items], loaded.spec)
    with torch.no_grad():
        probs = loaded.module(x).softmax(1)
    names = loaded.spec.class_names
    assert names[int(probs[0].argmax())] == "espresso" and float(probs[0].max()) > 0.9
    assert "cat" in names[int(probs[1].argmax())]
    assert not any(p.requires_grad for p in loaded.module.parameters())


def test_torchvision_local_weights_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None, num_classes=7).eval()
    torch.save(reference.state_dict(), tmp_path / "r18.pt")
    loaded = load_model(ModelRequest(id="r", source="torchvision:resnet18", weights="r18.pt", base_dir=tmp_path), CTX)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), reference(x))
    assert loaded.spec.num_classes == 7 and loaded.spec.cam_layer == "layer4"
    assert loaded.spec.weights_digest == state_dict_digest(reference)


def test_torchvision_weights_name_uses_torch_cache(tmp_path, monkeypatch):
    import torchvision
    from torchvision.models import ResNet18_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        cached = tmp_path / "hub" / "checkpoints" / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
        cached.parent.mkdir(parents=True)
        torch.manual_seed(1)
        reference = torchvision.models.resnet18(weights=None).eval()
        torch.save(reference.state_dict(), cached)
        loaded = load_model(ModelRequest(id="r", source="torchvision:resnet18", weights="IMAGENET1K_V1"), CTX)
        assert loaded.spec.weights_digest == state_dict_digest(reference)
        assert loaded.spec.class_names[0] == "tench" and loaded.spec.resize == 256
    finally:
        torch.hub.set_dir(os.path.join(os.path.expanduser("~"), ".cache", "torch", "hub"))


def test_torchvision_unknown_architecture_suggests():
    with pytest.raises(ValueError, match="did you mean resnet18"):
        load_model(ModelRequest(id="r", source="torchvision:resnet81"), CTX)


def test_timm_local_checkpoint(tmp_path):
    import timm

    torch.manual_seed(0)
    reference = timm.create_model("resnet10t", pretrained=False, num_classes=5).eval()
    torch.save({"state_dict": reference.state_dict()}, tmp_path / "ck.pth")
    loaded = load_model(ModelRequest(id="t", source="timm:resnet10t", weights=str(tmp_path / "ck.pth")), CTX)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), reference(x))
    assert loaded.spec.num_classes == 5


def test_checkpoint_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"state_dict": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt.*weights-only"):
        load_model(ModelRequest(id="t", source="timm:resnet10t", weights=str(tmp_path / "evil.pt")), CTX)


def test_mismatched_checkpoint_names_keys(tmp_path):
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "w.pt")
    with pytest.raises(ValueError, match="w.pt does not fit the architecture.*fc.weight"):
        load_model(ModelRequest(id="r", source="torchvision:resnet18", weights=str(tmp_path / "w.pt")), CTX)


def test_torchscript_file(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    torch.jit.script(net).save(str(tmp_path / "m.pt"))
    loaded = load_model(ModelRequest(id="s", source=f"torchscript:{tmp_path / 'm.pt'}",
                                     overrides={"class_names": ["a", "b", "c"]}), CTX)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), net(x))
    assert loaded.spec.class_names == ["a", "b", "c"]


def test_python_function_with_overrides_and_weights(tmp_path):
    from tests.conftest import TINY_MODEL_MODULE

    (tmp_path / "tinymodel.py").write_text(TINY_MODEL_MODULE)
    loaded = load_model(ModelRequest(id="p", source="python:tinymodel:build", base_dir=tmp_path), CTX)
    assert loaded.spec.input_size == (3, 32, 32) and loaded.spec.class_names[2] == "cat"
    state = {k: torch.ones_like(v) for k, v in loaded.module.state_dict().items()}
    torch.save(state, tmp_path / "ones.pt")
    again = load_model(ModelRequest(id="p", source="python:tinymodel:build", weights="ones.pt", base_dir=tmp_path), CTX)
    assert all(torch.all(v == 1) for v in again.module.state_dict().values())
    assert again.spec.weights_digest != loaded.spec.weights_digest


def test_python_source_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot import module 'nomodule'"):
        load_model(ModelRequest(id="p", source="python:nomodule:build", base_dir=tmp_path), CTX)
    (tmp_path / "notmodel.py").write_text("def build():\n    return 3\n")
    with pytest.raises(ValueError, match="returned int, expected a torch.nn.Module"):
        load_model(ModelRequest(id="p", source="python:notmodel:build", base_dir=tmp_path), CTX)


def test_unknown_layer_override_lists_close_matches():
    with pytest.raises(KeyError, match="close matches: blocks.6"):
        load_model(ModelRequest(id="l", source="embedded:efficientnet_lite0", overrides={"layers": ["block.6"]}), CTX)


def test_unknown_embedded_model():
    with pytest.raises(ValueError, match="did you mean .*efficientnet_lite0"):
        load_model(ModelRequest(id="x", source="embedded:efficientnet_lite9"), CTX)


def test_fashion_cnn_trains_caches_and_reuses(tmp_path):
    from generator.artifacts.store import ArtifactStore
    from generator.data.sources import FASHION_MNIST_DIRS

    if not any(Path(d).exists() for d in FASHION_MNIST_DIRS):
        pytest.skip("Fashion-MNIST not installed")
    store = ArtifactStore(tmp_path / "artifacts")
    request = lambda: ModelRequest(id="f", source="embedded:fashion_mnist_cnn",  # noqa: E731
                                   overrides={"training": {"epochs": 1, "train_subset": 3000}})
    first = load_model(request(), LoadContext(store=store))
    assert len(store.stats.computed) == 1
    record = store.get("training", first.artifacts["training"]).record
    assert record["test_accuracy"] > 0.6  # 3,000 images, 1 epoch: well above chance (0.1)
    assert len(record["history"]) == 1
    second = load_model(request(), LoadContext(store=store))
    assert len(store.stats.computed) == 1 and len(store.stats.reused) == 1
    assert second.spec.weights_digest == first.spec.weights_digest
    checkpoints = torch.load(store.get("training", first.artifacts["training"]).file("checkpoints"), weights_only=True)
    assert checkpoints[0]["epoch"] == 1 and "fc2.weight" in checkpoints[0]["state_dict"]
