"""timm models by name with their published weights, through a local Hugging Face Hub cache.

Each test builds a Hub-layout cache in tmp_path (``models--org--name/{blobs,refs,snapshots}``)
holding random weights of timm's tiny ``test_resnet`` and points huggingface_hub at it, so the
real lookup code runs and nothing touches the network: the Hub endpoint is a closed local port.
"""

from __future__ import annotations

import json
import math
import socket
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from generator.models.hub import WeightsUnavailableError
from generator.models.hub import add_to_hub_cache as publish
from generator.models.sources import LoadContext, ModelRequest, load_model, state_dict_digest

CTX = LoadContext()
NAME = "test_resnet.r160_in1k"  # 0.5 M parameters; its config differs from timm's defaults


def _closed_port_url() -> str:
    """A local URL nothing listens on: a connection to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty Hub cache, offline, with an unreachable endpoint as a second guard."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    # huggingface_hub reads its constants at import (already done by now): set both.
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "ENDPOINT", _closed_port_url())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the environment variable is the switch here
    monkeypatch.delenv("MODELCARD_OFFLINE", raising=False)
    return cache


def _random_test_resnet(seed: int, **kwargs) -> torch.nn.Module:
    import timm

    torch.manual_seed(seed)
    return timm.create_model("test_resnet", pretrained=False, **kwargs).eval()


def _safetensors(module: torch.nn.Module) -> Callable[[Path], None]:
    from safetensors.torch import save_file

    return lambda path: save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))


def test_registry_name_loads_published_weights_from_cache_offline(hub):
    import timm

    reference = _random_test_resnet(0)
    commit = publish(hub, f"timm/{NAME}", {"model.safetensors": _safetensors(reference)})
    loaded = load_model(ModelRequest(id="tr", source=f"timm:{NAME}", weights="pretrained"), CTX)

    # The weights are the ones saved in the cache, not a fresh random initialisation.
    assert torch.equal(loaded.module.state_dict()["fc.weight"], reference.state_dict()["fc.weight"])
    assert loaded.spec.weights_digest == state_dict_digest(reference)
    # The spec is the weights' pretrained config.
    cfg = timm.models.get_pretrained_cfg(NAME)
    spec = loaded.spec
    assert spec.input_size == tuple(cfg.input_size) == (3, 160, 160)
    assert spec.mean == tuple(cfg.mean) and spec.std == tuple(cfg.std) == (0.5, 0.5, 0.5)
    assert spec.interpolation == cfg.interpolation == "bilinear"
    assert spec.resize == math.floor(160 / cfg.crop_pct)
    assert spec.num_classes == 1000 and spec.class_names[0] == "tench"
    assert spec.extra["weights_licence"] == spec.licence == "apache-2.0"
    assert f"timm/{NAME}" in spec.extra["weights_source"] and commit[:12] in spec.extra["weights_source"]
    assert NAME in spec.weights and "published" in spec.weights


def test_pickled_weights_are_used_when_no_safetensors(hub):
    reference = _random_test_resnet(1)
    publish(hub, f"timm/{NAME}", {"pytorch_model.bin": lambda p: torch.save(reference.state_dict(), p)})
    loaded = load_model(ModelRequest(id="tr", source=f"timm:{NAME}", weights="pretrained"), CTX)
    assert loaded.spec.weights_digest == state_dict_digest(reference)


class Payload:
    """A Python object inside a cached .bin: timm's weights-only read refuses it, and so must we."""


def test_cached_pickle_with_objects_is_refused_in_one_line(hub):
    reference = _random_test_resnet(4)
    bad = {**reference.state_dict(), "payload": Payload()}
    publish(hub, f"timm/{NAME}", {"pytorch_model.bin": lambda p: torch.save(bad, p)})
    with pytest.raises(ValueError) as info:
        load_model(ModelRequest(id="tr", source=f"timm:{NAME}", weights="pretrained"), CTX)
    message = str(info.value)
    assert "\n" not in message and "pytorch_model.bin" in message and "Payload" in message
    assert "False" not in message and "weights_only" not in message


def test_hf_hub_repo_uses_its_config_json(hub):
    reference = _random_test_resnet(2, num_classes=3)
    config = {"architecture": "test_resnet", "num_classes": 3, "label_names": ["ant", "bee", "cicada"],
              "pretrained_cfg": {"input_size": [3, 96, 96], "interpolation": "bicubic", "crop_pct": 1.0,
                                 "crop_mode": "squash", "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6],
                                 "first_conv": "conv1.0", "classifier": "fc"}}
    publish(hub, "someone/bugs", {"config.json": lambda p: p.write_text(json.dumps(config)),
                                  "model.safetensors": _safetensors(reference)})
    loaded = load_model(ModelRequest(id="bugs", source="timm:hf-hub:someone/bugs"), CTX)
    spec = loaded.spec
    assert spec.weights_digest == state_dict_digest(reference)
    assert spec.class_names == ["ant", "bee", "cicada"] and spec.input_size == (3, 96, 96)
    assert spec.mean == (0.1, 0.2, 0.3) and spec.std == (0.4, 0.5, 0.6) and spec.interpolation == "bicubic"
    assert spec.resize is None  # squash: resized straight to the input size
    assert spec.extra["weights_licence"] == spec.licence == "not provided"


def test_missing_model_offline_fails_fast_in_one_line(hub, monkeypatch):
    import huggingface_hub

    def no_download(*args, **kwargs):
        raise AssertionError("offline mode must not try the network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        load_model(ModelRequest(id="tr", source=f"timm:{NAME}", weights="pretrained"), CTX)
    assert time.monotonic() - start < 3
    message = str(info.value)
    assert "\n" not in message and "model 'tr'" in message and "HF_HUB_OFFLINE=1" in message
    assert str(hub / f"models--timm--{NAME}") in message
    assert f"timm.create_model('{NAME}', pretrained=True)" in message


def test_missing_model_without_network_fails_fast(hub, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")  # online mode, but the endpoint refuses connections
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="cannot be reached") as info:
        load_model(ModelRequest(id="tr", source=f"timm:{NAME}", weights="pretrained"), CTX)
    assert time.monotonic() - start < 10
    assert "\n" not in str(info.value) and str(hub) in str(info.value)


def test_missing_model_online_is_downloaded_into_the_cache(hub, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    from generator.models import hub as hub_module

    reference = _random_test_resnet(3)
    asked = []

    def fake_download(repo_id, filename, *, revision=None, cache_dir=None, **kwargs):
        asked.append(filename)
        if filename == "model.safetensors":
            raise EntryNotFoundError(f"{repo_id} has no {filename}")  # an older repository
        commit = publish(Path(cache_dir), repo_id, {filename: lambda p: torch.save(reference.state_dict(), p)})
        return str(Path(cache_dir) / f"models--{repo_id.replace('/', '--')}" / "snapshots" / commit / filename)

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub_module, "_hub_unreachable", lambda: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    loaded = load_model(ModelRequest(id="tr", source=f"timm:{NAME}", weights="pretrained"), CTX)
    assert asked == ["model.safetensors", "pytorch_model.bin"]  # the safe format first
    assert loaded.spec.weights_digest == state_dict_digest(reference)
    asked.clear()
    load_model(ModelRequest(id="tr", source=f"timm:{NAME}", weights="pretrained"), CTX)
    assert asked == []  # now cached: no second download, no question to the network


def test_unknown_tag_suggests_published_names(hub):
    with pytest.raises(ValueError, match=r"did you mean test_resnet.r160_in1k"):
        load_model(ModelRequest(id="tr", source="timm:test_resnet.r16_in1k", weights="pretrained"), CTX)


def test_class_names_follow_the_weights():
    import timm

    from generator.models.sources import imagenet_classes
    from generator.models.timm_pretrained import timm_class_names

    in1k = imagenet_classes()
    names, _ = timm_class_names({"label_names": ["n01440764"] * 1000}, 1000, in1k)
    assert names == in1k  # bare WordNet ids: the readable ImageNet-1k names instead
    names, origin = timm_class_names({"label_names": ["a", "b"]}, 2, in1k)
    assert names == ["a", "b"] and "label_names" in origin
    in22k = timm.models.get_pretrained_cfg("convnext_tiny.fb_in22k").to_dict()
    names, origin = timm_class_names(in22k, 21841, in1k)
    if "ImageNetInfo" in dir(timm.data):
        assert len(names) == 21841 and names[0] != "class 0" and "imagenet-22k" in origin
    names, _ = timm_class_names({}, 4, in1k)
    assert names == ["class 0", "class 1", "class 2", "class 3"]
