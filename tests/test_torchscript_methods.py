"""TorchScript models: work that needs hooks is listed as not applicable, once per reason, with one
clear line; methods that need only gradients and outputs still produce maps; the run exits 0."""

from __future__ import annotations

import json
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL_MODULE
from torch import nn

from generator.capability import Unsupported
from generator.cli import main
from generator.engine.hooks import capture_activations, forward_hook, script_hook_refusal, torchscript_reason

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

GRADIENT_METHODS = ["saliency", "integrated_gradients", "smoothgrad", "occlusion"]
HOOK_REASON = torchscript_reason()


def _scripted_tiny() -> nn.Module:
    namespace: dict = {}
    exec(TINY_MODEL_MODULE, namespace)
    model, _ = namespace["build"]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.script(model.eval())


class Wrapped(nn.Module):
    """A Python model holding a TorchScript part: hooks on the Python parts still work."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.head = nn.Identity()

    def forward(self, x):
        return self.head(self.inner(x))


def test_hooks_on_torchscript_raise_unsupported_and_attach_nothing():
    scripted = _scripted_tiny()
    with pytest.raises(Unsupported) as info:
        forward_hook(scripted.relu1, lambda *a: None)
    assert str(info.value) == HOOK_REASON
    assert "load the model from its Python code (a `python:` source)" in HOOK_REASON
    wrapped = Wrapped(scripted)
    x = torch.randn(1, 3, 32, 32)
    before = wrapped(x)
    # one hookable layer and one TorchScript layer: refused before anything is attached
    with pytest.raises(Unsupported):
        with capture_activations(wrapped, {"head": wrapped.head, "relu1": scripted.relu1}):
            pass
    assert not wrapped.head._forward_hooks
    with capture_activations(wrapped, {"head": wrapped.head}) as store:
        wrapped(x)
    assert torch.equal(store["head"], before) and not wrapped.head._forward_hooks
    assert torch.equal(wrapped(x), before)


def test_torchs_own_refusal_reads_as_the_same_reason():
    scripted = _scripted_tiny()
    with pytest.raises(RuntimeError) as info:
        scripted.register_forward_hook(lambda *a: None)
    translated = script_hook_refusal(info.value)
    assert isinstance(translated, Unsupported) and str(translated) == HOOK_REASON
    assert script_hook_refusal(RuntimeError("CUDA out of memory")) is None
    assert script_hook_refusal(ValueError("register_forward_hook is not supported on ScriptModules")) is None


def test_torchscript_run_lists_hook_work_once_and_gradient_maps_are_made(tmp_path: Path, image_folder: Path, capsys):
    _scripted_tiny().save(str(tmp_path / "cnn.pt"))
    config = tmp_path / "report.yaml"
    config.write_text(textwrap.dedent(f"""
        title: Scripted
        device: cpu
        models:
          - id: ts
            source: torchscript:cnn.pt
            class_names: [ant, bee, cat, dog]
            input_size: [3, 32, 32]
            layers: [relu1, relu2]
            cam_layer: relu2
        datasets:
          - id: pics
            source: folder:{image_folder}
        outcome:
          methods: [{", ".join(GRADIENT_METHODS)}, gradcam, gradcam_pp]
          images: 2
          params: {{integrated_gradients: {{steps: 8}}, smoothgrad: {{n_samples: 4}}}}
        blocks: {{enabled: true, max_images: 1}}
        features: {{enabled: false}}
        evaluation: {{enabled: false}}
        data: {{enabled: false}}
    """))
    assert main(["build", "-q", str(config)]) == 0
    out = capsys.readouterr().out
    work = tmp_path / ".modelcard"
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["failures"] == [{"what": f"dataset pics: skipped {image_folder}/cat/broken.jpg",
                                     "why": manifest["failures"][0]["why"]}]  # the unreadable test image only
    hooked = [u["what"] for u in manifest["unsupported"] if u["why"] == HOOK_REASON]
    assert {"gradcam on ts/pics", "gradcam_pp on ts/pics"} <= set(hooked)
    assert any(w.startswith("building blocks of ts/") for w in hooked)
    assert all(u["why"] == HOOK_REASON for u in manifest["unsupported"])
    # the gradient methods made finite, non-trivial maps
    made = {e["method"]: e for e in manifest["artifacts"] if e["kind"] == "attribution"}
    assert sorted(made) == sorted(GRADIENT_METHODS)
    for method, entry in made.items():
        maps = np.load(work / "artifacts" / entry["path"] / "maps.npz")["maps"]
        assert maps.shape[0] == 2 and np.isfinite(maps).all() and np.abs(maps).sum() > 0, method
    # the summary and the run page say the reason once, with the parts it covers
    assert out.count(HOOK_REASON) == 1
    assert f"not applicable ({len(hooked)} parts)" in out
    run_page = (work / "docs" / "run.md").read_text()
    assert run_page.count("hooks cannot be attached inside a TorchScript module") == 1
    assert f"| {len(hooked)}: " in run_page
    capabilities = (work / "docs" / "models" / "capabilities.md").read_text()
    assert "- **gradcam**: ✗ not applicable: hooks cannot be attached" in capabilities
    assert r"- **integrated\_gradients**: ✓ runs — completeness gap" in capabilities
    assert (tmp_path / "site" / "models" / "capabilities.html").exists()
