"""Artifact keys cover everything that determines a result, and nothing else.

* a changed default recomputes that method (and what is derived from it) and nothing else;
* an unchanged report recomputes nothing, also after "reinstalling" the same source files
  elsewhere (the code fingerprint is content-based);
* a change to one family's code recomputes that family only;
* two models with the same weights but different code (``python:`` or ``torchscript:``) get
  different keys.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from generator.artifacts import keys
from generator.artifacts.keys import ModelIdentity, effective_key, effective_method_params
from generator.config import load_config
from generator.pipeline.run import run_report

GENERATOR = Path(keys.__file__).resolve().parent.parent

FEATURES = textwrap.dedent("""
    features:
      enabled: true
      profile: quick
      steps: 2
      channels: 2
      diversity: 2
      examples: 2
      deepdream_images: 1
      max_classes: 1
""")

#: The kinds each code family produces in the tiny report.
FAMILY_KINDS = {
    "predictions": {"predictions"},
    "attribution": {"attribution", "cam_segmentation"},
    "features": {"features_filters", "features_gallery", "features_diversity", "features_negative",
                 "features_examples", "features_deconv", "features_classes", "features_deepdream"},
}


@pytest.fixture()
def fresh_fingerprints():
    """Fingerprints are cached per process; tests that move or edit the sources recompute them."""
    keys._fingerprint_of.cache_clear()
    yield
    keys._fingerprint_of.cache_clear()


def _kinds(entries) -> set:
    return {e.split("/")[0] for e in entries}


def _attribution_methods(summary) -> set:
    manifest = json.loads(Path(summary.manifest).read_text())
    computed = {c.split("/", 1)[1] for c in summary.computed if c.startswith("attribution/")}
    return {e["method"] for e in manifest["artifacts"] if e["kind"] == "attribution" and e["key"] in computed}


# --- effective parameters --------------------------------------------------------------------

def _ig_key(params) -> str:
    return effective_key("attribution", family="attribution", method="integrated_gradients",
                         params=effective_method_params("integrated_gradients", params))


def test_a_default_written_out_is_the_same_key_and_a_changed_value_is_not():
    assert _ig_key({}) == _ig_key({"steps": 50}) == _ig_key({"steps": 50.0})  # 50 is the default
    assert _ig_key({}) != _ig_key({"steps": 8})
    assert effective_method_params("integrated_gradients", {"steps": 8})["baseline"] == "black"


def test_changing_a_default_recomputes_that_method_and_nothing_else(tiny_report: Path, monkeypatch):
    from generator.methods.attribution import ATTRIBUTION_METHODS

    first = run_report(load_config(tiny_report), show_progress=False)
    assert {"saliency", "gradcam"} <= _attribution_methods(first)
    # A default lives in the catalogue; the method class reads it from there at import.
    from dataclasses import replace

    from generator import catalogue

    real_get = catalogue.get
    entry = real_get("gradcam")
    changed = replace(entry, params=tuple(replace(p, default="relu1") if p.name == "layer" else p
                                          for p in entry.params))
    monkeypatch.setattr(catalogue, "get", lambda name, family="attribution":
                        changed if (name, family) == ("gradcam", "attribution") else real_get(name, family))
    gradcam = ATTRIBUTION_METHODS.get("gradcam")
    monkeypatch.setattr(gradcam, "defaults", {**gradcam.defaults, "layer": "relu1"})
    second = run_report(load_config(tiny_report), show_progress=False)
    assert _attribution_methods(second) == {"gradcam"}
    # the CAM segmentation is Grad-CAM thresholded: it depends on the default too
    assert _kinds(second.computed) == {"attribution", "cam_segmentation"}
    assert {"predictions", "dataset", "model"} <= _kinds(second.reused)
    third = run_report(load_config(tiny_report), show_progress=False)
    assert third.computed == [] and second.failed == []


# --- code fingerprints -----------------------------------------------------------------------

def _copy_package(to: Path) -> Path:
    """The package's source files somewhere else, as a reinstall would put them."""
    shutil.copytree(GENERATOR, to, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return to


def test_reinstalling_the_same_files_recomputes_nothing(tiny_report: Path, tmp_path: Path, monkeypatch,
                                                         fresh_fingerprints):
    first = run_report(load_config(tiny_report), show_progress=False)
    assert first.computed
    before = {family: keys.code_fingerprint(family) for family in keys.FAMILIES}
    monkeypatch.setattr(keys, "_PACKAGE", _copy_package(tmp_path / "site-packages" / "generator"))
    keys._fingerprint_of.cache_clear()
    assert {family: keys.code_fingerprint(family) for family in keys.FAMILIES} == before
    again = run_report(load_config(tiny_report), show_progress=False)
    assert again.computed == []
    assert sorted(again.reused) == sorted(first.computed)


def test_an_edited_file_changes_only_the_families_that_contain_it(tmp_path: Path, monkeypatch, fresh_fingerprints):
    before = {family: keys.code_fingerprint(family) for family in keys.FAMILIES}
    copy = _copy_package(tmp_path / "generator")
    monkeypatch.setattr(keys, "_PACKAGE", copy)
    render = copy / "methods" / "featurevis" / "render.py"
    render.write_text(render.read_text() + "\n# a new release of feature visualisation\n")
    keys._fingerprint_of.cache_clear()
    after = {family: keys.code_fingerprint(family) for family in keys.FAMILIES}
    changed = {family for family in keys.FAMILIES if after[family] != before[family]}
    assert changed == {"features", "blocks"}  # blocks renders its icons with feature visualisation


def test_changing_one_familys_code_recomputes_that_family_only(tiny_report: Path, monkeypatch):
    tiny_report.write_text(tiny_report.read_text() + FEATURES)
    first = run_report(load_config(tiny_report), show_progress=False)
    assert first.failed == []
    for kinds in FAMILY_KINDS.values():
        assert kinds & _kinds(first.computed)
    real = keys.code_fingerprint
    for family, kinds in FAMILY_KINDS.items():
        monkeypatch.setattr(keys, "code_fingerprint", lambda f, family=family: real(f) + ("+" if f == family else ""))
        summary = run_report(load_config(tiny_report), show_progress=False)
        assert summary.computed, family
        assert _kinds(summary.computed) <= kinds, (family, _kinds(summary.computed))
        assert _kinds(summary.computed) == kinds & _kinds(first.computed)
        assert {"dataset", "model"} <= _kinds(summary.reused)
    monkeypatch.setattr(keys, "code_fingerprint", real)
    assert run_report(load_config(tiny_report), show_progress=False).computed == []


def test_a_new_schema_version_of_one_kind_recomputes_that_kind_only(tiny_report: Path, monkeypatch):
    records = pytest.importorskip("generator.records")
    run_report(load_config(tiny_report), show_progress=False)
    monkeypatch.setitem(records.SCHEMA_VERSIONS, "predictions", "999")
    again = run_report(load_config(tiny_report), show_progress=False)
    assert _kinds(again.computed) == {"predictions"}


def test_unknown_family_names_close_matches():
    with pytest.raises(KeyError, match="did you mean 'features'"):
        keys.code_fingerprint("featres")


# --- model identity --------------------------------------------------------------------------

NET = textwrap.dedent('''
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            h = self.conv(x).relu(){extra}
            return self.fc(h.mean((2, 3)))

    def build():
        torch.manual_seed(0)
        return Net(), {{"input_size": (3, 16, 16), "class_names": ["a", "b", "c"], "layers": ["conv"],
                        "cam_layer": "conv"}}
''')


def _load_python(tmp_path: Path, extra: str, name: str = "keys_net"):
    """Load ``python:<name>:build`` from a freshly written file, as a new process would (the
    module is dropped from ``sys.modules`` so the edited file is imported again)."""
    from generator.models.sources import LoadContext, ModelRequest, load_model

    (tmp_path / f"{name}.py").write_text(NET.format(extra=extra))
    sys.modules.pop(name, None)
    try:
        return load_model(ModelRequest(id="m", source=f"python:{name}:build", base_dir=tmp_path), LoadContext())
    finally:
        sys.modules.pop(name, None)


def _outcome_key(spec) -> str:
    return effective_key("attribution", family="attribution", method="saliency",
                         params=effective_method_params("saliency", {}), model=ModelIdentity.of(spec))


def test_python_models_with_equal_weights_but_different_forward_get_different_keys(tmp_path: Path):
    plain = _load_python(tmp_path, "")
    edited = _load_python(tmp_path, " * 2")  # the same file, its forward edited
    assert plain.spec.weights_digest == edited.spec.weights_digest
    assert plain.spec.code_digest != edited.spec.code_digest
    assert _outcome_key(plain.spec) != _outcome_key(edited.spec)
    again = _load_python(tmp_path, "")  # edited back: the key comes back too
    assert again.spec.code_digest == plain.spec.code_digest and _outcome_key(again.spec) == _outcome_key(plain.spec)


def test_an_edited_forward_is_recomputed_in_a_run(tiny_report: Path):
    """The same model id, module name and weights; only the code differs."""
    from conftest import TINY_MODEL_MODULE

    module = tiny_report.parent / "tinymodel.py"
    sys.modules.pop("tinymodel", None)
    first = run_report(load_config(tiny_report), show_progress=False)
    assert first.computed
    edited = TINY_MODEL_MODULE.replace("        return model,", "        model.add_module('scale', Doubled())\n"
                                       "        return model,")
    module.write_text(edited.replace("def build():", "class Doubled(nn.Module):\n    def forward(self, x):\n"
                                                     "        return 2 * x\n\ndef build():"))
    sys.modules.pop("tinymodel", None)
    try:
        second = run_report(load_config(tiny_report), show_progress=False)
    finally:
        sys.modules.pop("tinymodel", None)
    assert second.failed == []
    assert {"predictions", "attribution", "cam_segmentation", "model"} <= _kinds(second.computed)
    assert _kinds(second.reused) == {"dataset"}


class Scaled(nn.Module):
    """A model whose output depends on a non-weight attribute (stored with the scripted code)."""

    def __init__(self, factor: float):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 2, 3)
        self.factor = factor

    def forward(self, x):
        return self.conv(x) * self.factor


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_code_digest_sees_code_not_file_names(tmp_path: Path):
    from generator.models.sources import torchscript_code_digest

    one, two = torch.jit.script(Scaled(1.0)), torch.jit.script(Scaled(2.0))
    for name, scripted in (("one.pt", one), ("renamed.pt", one), ("two.pt", two)):
        torch.jit.save(scripted, str(tmp_path / name))
    digest = {name: torchscript_code_digest(tmp_path / name) for name in ("one.pt", "renamed.pt", "two.pt")}
    assert digest["one.pt"] == digest["renamed.pt"]  # saved twice under another name: same code
    assert digest["one.pt"] != digest["two.pt"]  # same weights, another constant in forward


def test_library_models_are_identified_by_library_version_and_architecture():
    from generator.models.spec import code_digest, library_version

    assert library_version("torch") == torch.__version__
    assert code_digest("torchvision resnet18", libraries=("torchvision",)) != \
        code_digest("torchvision resnet34", libraries=("torchvision",))


# --- structure -------------------------------------------------------------------------------

def test_keys_import_no_torch():
    code = "import sys, generator.artifacts.keys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=GENERATOR.parent)


def test_every_stage_key_goes_through_the_one_helper():
    stages = GENERATOR / "pipeline" / "stages"
    for path in [*stages.glob("*.py"), GENERATOR / "pipeline" / "run.py", GENERATOR / "models" / "fashion_training.py"]:
        assert "artifact_key(" not in path.read_text(), f"{path.name} computes a key by hand"


def test_fashion_training_does_not_import_model_sources():
    """The import cycle between models/sources.py and models/fashion_training.py is gone."""
    tree = ast.parse((GENERATOR / "models" / "fashion_training.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "generator.models.sources" not in imported
