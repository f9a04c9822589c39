"""Up-front validation: a typo anywhere in a report config fails in a second with
``file:line: field: message`` and close matches, before any model loads or any file is written;
``modelcard check`` does only this, without importing torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from generator.cli import main
from generator.config import ConfigError, load_config, parse_config
from generator.validation import DATASET_OPTIONS, EMBEDDED_MODELS, MODEL_SOURCES, check_config, config_problems

# A model whose module leaves a marker when it is imported: proof that nothing loaded it.
MARKED_MODEL = textwrap.dedent('''
    from pathlib import Path
    Path(__file__).with_name("MODEL_LOADED").write_text("imported")
    import torch
    from torch import nn

    def build():
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(4, 2))
        return model, {"input_size": (3, 16, 16), "class_names": ["ant", "bee"], "cam_layer": "1"}
''')

BASE = """\
title: validation
device: cpu
site_src: []
models:
  - id: tiny
    source: python:marked_model:build
    class_names: [ant, bee]
datasets:
  - id: pics
    source: folder:{folder}
outcome:
  methods: [saliency, smoothgrad, gradcam]
  images: 2
"""

# (name, the typo, text replaced (empty: append), replacement, the field in the message, part of the message)
TYPOS = [
    ("outcome.methods", "gradcm", "methods: [saliency, smoothgrad, gradcam]", "methods: [saliency, smoothgrad, gradcm]",
     "outcome.methods[2]", "unknown attribution method 'gradcm'; did you mean 'gradcam'"),
    ("outcome.params name", "n_sampels", "  images: 2\n", "  images: 2\n  params:\n    smoothgrad: {n_sampels: 3}\n",
     "outcome.params.smoothgrad.n_sampels", "did you mean 'n_samples'"),
    ("outcome.params type", "noise_level", "  images: 2\n",
     "  images: 2\n  params:\n    smoothgrad: {noise_level: high}\n",
     "outcome.params.smoothgrad.noise_level", "expected number >= 0, got 'high' (str)"),
    ("evaluation.methods", "smoothgrd", "", "evaluation:\n  methods: [saliency, smoothgrd]\n",
     "evaluation.methods[1]", "did you mean 'smoothgrad'"),
    ("evaluation.params", "precison", "", "evaluation:\n  params:\n    saliency: {precison: bf16}\n",
     "evaluation.params.saliency.precison", "did you mean 'precision'"),
    ("evaluation.roar.methods", "intgrated_gradients", "",
     "evaluation:\n  roar: {methods: [saliency, intgrated_gradients]}\n",
     "evaluation.roar.methods[1]", "did you mean 'integrated_gradients'"),
    ("evaluation models", "tinyy", "", "evaluation:\n  sanity: {models: [tinyy]}\n",
     "evaluation.sanity.models[0]", "unknown model id 'tinyy'; did you mean 'tiny'"),
    ("features.layers", "tny", "", "features:\n  layers: {tny: [relu]}\n",
     "features.layers.tny", "unknown model id 'tny'; did you mean 'tiny'"),
    ("features.examples_dataset", "pix", "", "features:\n  examples_dataset: {tiny: pix}\n",
     "features.examples_dataset.tiny", "unknown dataset id 'pix'; did you mean 'pics'"),
    ("features.classes", "bea", "", "features:\n  classes: {tiny: [ant, bea]}\n",
     "features.classes.tiny[1]", "did you mean 'bee'"),
    ("features.deepdream_layers", "Tiny", "", "features:\n  deepdream_layers: {Tiny: ['1']}\n",
     "features.deepdream_layers.Tiny", "did you mean 'tiny'"),
    ("models[].source", "pyton", "python:marked_model:build", "pyton:marked_model:build",
     "models[0].source", "unknown model source 'pyton'; did you mean 'python'"),
    ("datasets[].source", "foldr", "source: folder:", "source: foldr:",
     "datasets[0].source", "unknown dataset source 'foldr'; did you mean 'folder'"),
    ("datasets[].options", "recursiv", "source: folder:{folder}",
     "source: folder:{folder}\n    options: {recursiv: true}",
     "datasets[0].options.recursiv", "did you mean 'recursive'"),
    ("blocks.models", "tiy", "", "blocks:\n  models: [tiy]\n", "blocks.models[0]", "did you mean 'tiny'"),
    ("blocks field", "n_chanels", "", "blocks:\n  n_chanels: 3\n", "blocks.n_chanels", "did you mean 'n_channels'"),
    ("data field", "per_clas", "", "data:\n  prototypes: {per_clas: 3}\n", "data.prototypes.per_clas",
     "did you mean 'per_class'"),
    ("data.influence.methods", "tracn", "", "data:\n  influence: {methods: [tracn]}\n", "data.influence.methods[0]",
     "'tracin' or 'influence_functions'"),
]


def _write(root: Path, old: str = "", new: str = "") -> Path:
    from conftest import write_image_folder

    folder = write_image_folder(root / "images")
    (root / "marked_model.py").write_text(MARKED_MODEL)
    text = BASE.format(folder=folder)
    old, new = old.replace("{folder}", str(folder)), new.replace("{folder}", str(folder))
    text = text.replace(old, new) if old else text + new
    path = root / "report.yaml"
    path.write_text(text)
    return path


def _line_of(path: Path, fragment: str) -> int:
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if fragment in line)


def _nothing_happened(root: Path) -> None:
    assert not (root / "MODEL_LOADED").exists(), "the model was imported"
    assert not (root / ".modelcard").exists(), "an artifact folder was written"
    assert not (root / "site").exists()


@pytest.mark.parametrize("name, typo, old, new, field, message", TYPOS, ids=[t[0] for t in TYPOS])
def test_a_typo_in_any_section_fails_with_its_line_before_any_model_loads(tmp_path, capsys, name, typo, old, new,
                                                                         field, message):
    path = _write(tmp_path, old, new)
    where = f"{path}:{_line_of(path, typo)}: {field}: "
    for argv in (["check", str(path)], ["run", "-q", str(path)], ["build", "-q", str(path)],
                 ["render", "--no-build", str(path)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert any(line.startswith(where) and message in line for line in err.splitlines()), (where, err)
        _nothing_happened(tmp_path)


def test_the_named_line_holds_the_typo(tmp_path, capsys):
    path = _write(tmp_path, "", "features:\n  enabled: false\n  layers:\n    tny: [relu]\n")
    assert main(["check", str(path)]) == 2
    assert f"{path}:{_line_of(path, 'tny:')}: features.layers.tny: unknown model id 'tny'" in capsys.readouterr().err


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    path = _write(tmp_path, "methods: [saliency, smoothgrad, gradcam]",
                  "methods: [salency, smoothgrad]\n  params:\n    smoothgrad: {seed: -1, steps: 3}")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "outcome.methods[0]: unknown attribution method 'salency'" in err
    assert "outcome.params.smoothgrad.seed: expected whole number >= 0, got -1" in err
    assert "outcome.params.smoothgrad.steps: unknown parameter(s) ['steps'] for smoothgrad" in err


def test_check_of_a_valid_config_says_ok_and_imports_no_torch(tmp_path):
    good = _write(tmp_path / "good")
    bad = _write(tmp_path / "bad", "methods: [saliency, smoothgrad, gradcam]", "methods: [saliency, gradcm]")
    code = ("import sys; from generator.cli import main; rc = main(['check', sys.argv[1]]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    ok = subprocess.run([sys.executable, "-c", code, str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"ok: {good}"
    failed = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True)
    assert failed.returncode == 2, failed.stderr
    assert f"{bad}:12: outcome.methods[1]: unknown attribution method 'gradcm'" in failed.stderr
    for root in (tmp_path / "good", tmp_path / "bad"):
        _nothing_happened(root)


def test_the_default_report_and_a_full_valid_config_pass():
    check_config()
    assert main(["check"]) == 0
    text = """\
models: [{id: m, source: "embedded:fashion_mnist_cnn", class_names: [a, b, c]}]
datasets: [{id: d, source: samples, options: {names: [coffee], limit: 1}}]
outcome:
  methods: [occlusion, interior_gradients]
  params:
    occlusion: {window: 0.25, stride: 4, baseline: 0.5, output: probability}
    interior_gradients: {alphas: [0.5, 1], alpha: 1}
evaluation:
  methods: [occlusion]
  params: {occlusion: {window: 8}, gradcam: {layer: conv2}}
  roar: {methods: [gradcam], models: [m]}
  selectivity: {images_by_model: {m: 2}}
features: {layers: {m: [conv1]}, classes: {m: [a, 2, "1"]}, examples_dataset: {m: d}}
blocks: {models: [m]}
"""
    assert config_problems(parse_config(text, "r.yaml")) == []


def test_params_for_a_method_evaluation_does_not_run():
    text = """\
models: [{id: m, source: "embedded:fashion_mnist_cnn"}]
datasets: [{id: d, source: samples}]
evaluation:
  methods: [saliency]
  roar: {methods: [gradcam]}
  params: {smoothgrad: {n_samples: 2}}
"""
    (problem,) = config_problems(parse_config(text, "r.yaml"))
    assert problem.startswith("r.yaml:6: evaluation.params.smoothgrad: params given for method 'smoothgrad', "
                              "which evaluation does not run (it runs: saliency, gradcam)")


def test_class_references_and_embedded_names():
    text = """\
models:
  - {id: m, source: "embedded:fashion_mnist_cnm", num_classes: 3}
  - {id: n, source: "embedded:fashion_mnist_cnn", class_names: [a, b]}
datasets: [{id: d, source: samples, options: {limit: "3"}}]
features: {classes: {m: [3], n: [c, 1]}}
"""
    problems = config_problems(parse_config(text, "r.yaml"))
    assert problems[0].startswith("r.yaml:2: models[0].source: unknown embedded model 'fashion_mnist_cnm'; "
                                  "did you mean 'fashion_mnist_cnn'?")
    assert problems[1].startswith("r.yaml:4: datasets[0].options.limit: dataset source 'samples': options.limit")
    assert "features.classes.m[0]: class index 3 out of range (3 classes)" in problems[2]
    assert "features.classes.n[0]: unknown class of model 'n': 'c'" in problems[3]
    assert len(problems) == 4


def test_validate_names_is_the_full_validation(tmp_path):
    from generator.pipeline.validate import validate_names

    path = _write(tmp_path, "", "features:\n  layers: {tny: [relu]}\n")
    with pytest.raises(ConfigError, match="features.layers.tny: unknown model id"):
        validate_names(load_config(path))


def test_torch_free_name_lists_match_the_registries():
    from generator.data.sources import DATASET_SOURCES
    from generator.models import sources

    assert sorted(MODEL_SOURCES) == sources.MODEL_SOURCES.names()
    assert list(EMBEDDED_MODELS) == list(sources.EMBEDDED_MODELS)
    assert sorted(DATASET_OPTIONS) == DATASET_SOURCES.names()
    for name, allowed in DATASET_OPTIONS.items():
        with pytest.raises(ValueError) as err:
            DATASET_SOURCES.get(name)(None, {"zz_not_an_option": 1})
        assert str(err.value).endswith(f"allowed: {sorted([*allowed, 'limit'])}")
