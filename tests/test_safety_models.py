"""Checkpoint refusals that give safe advice, and torchvision weights names on a fresh install.

The torch hub cache is pointed at a temporary TORCH_HOME; downloads are replaced by fakes, so
nothing here touches the network.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from generator.models.hub import WeightsUnavailableError
from generator.models.sources import LoadContext, ModelRequest, load_model, state_dict_digest

CTX = LoadContext()


class Thing:
    """An arbitrary Python object inside a checkpoint: the weights-only reader must refuse it."""

    def __init__(self) -> None:
        self.tag = "not a tensor"


def _refusal(tmp_path, payload, name: str) -> str:
    path = tmp_path / name
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        torch.save(payload, path)
    with pytest.raises(ValueError) as info:
        load_model(ModelRequest(id="t", source="timm:resnet10t", weights=str(path)), CTX)
    return str(info.value)


def test_checkpoint_with_custom_class_is_refused_without_unsafe_advice(tmp_path):
    message = _refusal(tmp_path, {"state_dict": {"fc.weight": torch.zeros(2, 2)}, "extra": Thing()}, "objects.pt")
    assert "\n" not in message
    assert "model 't'" in message and str(tmp_path / "objects.pt") in message
    assert "Python objects other than tensors" in message and "Thing" in message and "run code" in message
    assert "torch.save(model.state_dict(), path)" in message
    # torch's own text advises switching weights-only loading off: never passed on.
    assert "False" not in message and "weights_only" not in message and "safe_globals" not in message


def test_unreadable_checkpoint_says_so_without_unsafe_advice(tmp_path):
    message = _refusal(tmp_path, b"not a checkpoint at all", "garbage.pt")
    assert "\n" not in message and str(tmp_path / "garbage.pt") in message
    assert "False" not in message and "weights_only" not in message and "safe_globals" not in message


# ---------------------------------------------------------------------------------------------
# torchvision weights names and the torch hub cache

RESNET18_FILE = "resnet18-f37072fd.pth"  # basename of ResNet18_Weights.IMAGENET1K_V1.url


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """A fresh TORCH_HOME without a hub/checkpoints folder, online unless a test says otherwise."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # torch.hub.set_dir (called by other tests) would take precedence over TORCH_HOME.
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    for name in ("MODELCARD_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


def _random_resnet18(seed: int) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).eval()


def _request() -> ModelRequest:
    return ModelRequest(id="r", source="torchvision:resnet18", weights="IMAGENET1K_V1")


def test_weights_name_downloads_into_fresh_torch_home(torch_home, monkeypatch):
    from torchvision.models import ResNet18_Weights

    assert ResNet18_Weights.IMAGENET1K_V1.url.endswith(RESNET18_FILE)
    reference = _random_resnet18(2)
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        torch.save(reference.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    assert not torch_home.exists()
    loaded = load_model(_request(), CTX)
    assert loaded.spec.weights_digest == state_dict_digest(reference)
    [(url, dst, hash_prefix)] = calls
    assert url == ResNet18_Weights.IMAGENET1K_V1.url and hash_prefix == "f37072fd"
    assert dst == str(torch_home / (RESNET18_FILE + ".partial"))  # renamed only once complete
    assert sorted(os.listdir(torch_home)) == [RESNET18_FILE]
    assert loaded.spec.extra["weights_source"] == url and loaded.spec.extra["weights_licence"] == "not provided"


def test_cached_weights_name_loads_without_download(torch_home, monkeypatch):
    reference = _random_resnet18(3)
    torch_home.mkdir(parents=True)
    torch.save(reference.state_dict(), torch_home / RESNET18_FILE)

    def no_download(*args, **kwargs):
        raise AssertionError("the cached file must be used")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setenv("MODELCARD_OFFLINE", "1")  # offline mode still loads what is cached
    loaded = load_model(_request(), CTX)
    assert loaded.spec.weights_digest == state_dict_digest(reference)
    assert loaded.spec.class_names[0] == "tench"


@pytest.mark.parametrize("switch", ["MODELCARD_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_missing_weights_name_fails_in_one_line_without_network(torch_home, monkeypatch, switch):
    called = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: called.append(a))
    monkeypatch.setenv(switch, "1")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        load_model(_request(), CTX)
    assert time.monotonic() - start < 5 and not called
    message = str(info.value)
    assert "\n" not in message and "model 'r'" in message and "IMAGENET1K_V1" in message
    assert str(torch_home / RESNET18_FILE) in message and f"{switch}=1" in message
    assert "torchvision.models.get_model('resnet18', weights='IMAGENET1K_V1')" in message


def test_failed_download_names_path_reason_and_command(torch_home, monkeypatch):
    def failing_download(url, dst, hash_prefix=None, progress=True):
        with open(dst, "wb") as f:
            f.write(b"half a file")
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", failing_download)
    with pytest.raises(WeightsUnavailableError) as info:
        load_model(_request(), CTX)
    message = str(info.value)
    assert "\n" not in message and str(torch_home / RESNET18_FILE) in message
    assert "Name or service not known" in message and "get_model('resnet18'" in message
    assert os.listdir(torch_home) == []  # no partial file is left to look like a cached one
