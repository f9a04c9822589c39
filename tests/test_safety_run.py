"""What a careless or hostile config does to a run: refused early with one clear line, failures
reflected in the exit status, NaN kept off the pages, one writer per report folder.

Each test is one fault from the reliability probe, on a tiny model in a temporary folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import TINY_MODEL_MODULE

from generator.cli import main
from generator.config import ConfigError, load_config, parse_config


def _report(tmp_path: Path, image_folder: Path, *, module: str = "tinymodel", extra_model: str = "",
            dataset_source: str = "", methods: str = "[saliency]") -> Path:
    config = tmp_path / "report.yaml"
    config.write_text(textwrap.dedent(f"""
        title: Safety
        device: cpu
        models:
          - id: tiny
            source: python:{module}:build
        {extra_model}
        datasets:
          - id: pics
            source: {dataset_source or f'folder:{image_folder}'}
        outcome:
          methods: {methods}
          images: 2
        features: {{enabled: false}}
        blocks: {{enabled: false}}
        evaluation: {{enabled: false}}
        data: {{enabled: false}}
    """))
    return config


def _artifact_files(work: Path) -> list:
    return [p for p in (work / "artifacts").rglob("record.json")] if (work / "artifacts").exists() else []


# ---------------------------------------------------------------------------------------------
# config files that would hang or crash the parser


def test_billion_laughs_is_refused_quickly_naming_the_file(tmp_path: Path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [{', '.join(['*a' + str(i - 1)] * 9)}]")
    lines.append("title: *a9")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(bomb)
    assert time.perf_counter() - started < 2.0
    message = str(info.value)
    assert str(bomb) in message and "aliases expand" in message


def test_small_anchors_still_work():
    config = parse_config(textwrap.dedent("""
        models: [{id: m, source: "embedded:efficientnet_lite0"}]
        datasets: [&d {id: a, source: samples}]
        title: &t "Anchored title"
        description: *t
    """), "inline.yaml")
    assert config.description == "Anchored title"


def test_non_utf8_config_is_one_clear_line(tmp_path: Path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("title: caf\xe9\nmodels: []\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}:1: not UTF-8" in str(info.value) and "0xe9" in str(info.value)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not UTF-8" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# configured paths are checked before any model loads


def test_missing_weights_and_dataset_fail_before_any_work(tmp_path: Path, image_folder: Path, capsys):
    (tmp_path / "tinymodel.py").write_text(TINY_MODEL_MODULE)
    config = _report(tmp_path, image_folder, dataset_source="folder:no/such/folder",
                     extra_model="    weights: checkpoints/missing.pth")
    assert main(["run", "-q", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}:7: models[0].weights: weights file {tmp_path / 'checkpoints/missing.pth'} does not exist" in err
    assert f"{config}:10: datasets[0].source: image folder {tmp_path / 'no/such/folder'} does not exist" in err
    assert _artifact_files(tmp_path / ".modelcard") == []  # nothing ran


def test_unwritable_output_is_found_before_the_run(tmp_path: Path, image_folder: Path, capsys):
    (tmp_path / "tinymodel.py").write_text(TINY_MODEL_MODULE)
    config = _report(tmp_path, image_folder)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    config.write_text(config.read_text() + f"output: {{work_dir: {blocker}/work}}\n")
    assert main(["build", "-q", str(config)]) == 2
    err = capsys.readouterr().err
    assert "output.work_dir: cannot write the output there" in err and "is a file" in err
    assert not (tmp_path / ".modelcard").exists()
    config.write_text(config.read_text().replace(f"{{work_dir: {blocker}/work}}", f"{{site_dir: {blocker}/site}}"))
    assert main(["build", "-q", str(config)]) == 1
    err = capsys.readouterr().err
    assert "output.site_dir: cannot create" in err and "Traceback" not in err
    assert _artifact_files(tmp_path / ".modelcard") == []


def test_torchvision_weights_names_are_not_taken_for_files(tmp_path: Path):
    from generator.preflight import weights_path

    assert weights_path("torchvision:resnet18", "IMAGENET1K_V1") is None
    assert weights_path("torchvision:resnet18", "ResNet18_Weights.IMAGENET1K_V1") is None
    assert weights_path("timm:resnet18", "pretrained") is None
    assert weights_path("torchvision:resnet18", "best.pth") == "best.pth"
    assert weights_path("timm:resnet18", "ckpt/model.bin") == "ckpt/model.bin"


# ---------------------------------------------------------------------------------------------
# failures are reflected in the exit status


FAILING_MODULE = textwrap.dedent("""
    def build():
        raise RuntimeError("this model cannot be built")
""")


def test_failed_units_exit_non_zero_unless_partial_is_allowed(tmp_path: Path, image_folder: Path, capsys):
    (tmp_path / "brokenmodel_safety.py").write_text(FAILING_MODULE)
    config = _report(tmp_path, image_folder, module="brokenmodel_safety")
    assert main(["run", "-q", str(config)]) == 1
    captured = capsys.readouterr()
    assert "FAILED model tiny" in captured.out and "1 unit(s) failed" in captured.err
    assert main(["run", "-q", "--allow-partial", str(config)]) == 0


def test_skipped_unreadable_images_are_named_but_not_a_failure(tiny_report: Path, capsys):
    assert main(["run", "-q", str(tiny_report)]) == 0  # the fixture folder holds one corrupt image
    out = capsys.readouterr().out
    assert "skipped" in out and "broken.jpg" in out and "FAILED" not in out
    manifest = json.loads((tiny_report.parent / ".modelcard" / "manifest.json").read_text())
    assert any("broken.jpg" in f["what"] for f in manifest["failures"])  # still listed on the run page


# ---------------------------------------------------------------------------------------------
# NaN never reaches a page


NAN_MODULE = textwrap.dedent("""
    import torch
    from torch import nn

    class NanHead(nn.Module):
        def forward(self, x):
            return x * float("nan")

    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(4, 3), NanHead())
        return model, {"input_size": (3, 16, 16), "class_names": ["a", "b", "c"], "layers": ["1"],
                       "cam_layer": "1"}
""")


def test_nan_outputs_fail_the_units_and_stay_off_the_pages(tmp_path: Path, image_folder: Path, capsys):
    (tmp_path / "nanmodel_safety.py").write_text(NAN_MODULE)
    config = _report(tmp_path, image_folder, module="nanmodel_safety", methods="[saliency, gradcam]")
    assert main(["build", "-q", str(config)]) == 1
    out = capsys.readouterr().out
    assert "FAILED predictions of tiny on pics" in out and "NaN or infinite outputs" in out
    assert "bee-gray" in out  # the images are named
    manifest = json.loads((tmp_path / ".modelcard" / "manifest.json").read_text())
    kinds = {entry["kind"] for entry in manifest["artifacts"]}
    assert "predictions" not in kinds and "attribution" not in kinds
    pages = [p.read_text() for p in (tmp_path / ".modelcard" / "docs").rglob("*.md")]
    assert not any("nan%" in text.lower() for text in pages)


def test_nan_maps_are_refused_naming_model_method_and_images():
    import torch

    from generator.pipeline.finite import NonFiniteError, check_logits, check_maps

    maps = torch.zeros(3, 1, 4, 4)
    maps[1, 0, 2, 2] = float("inf")
    with pytest.raises(NonFiniteError,
                       match=r"gradcam on model 'm' gave NaN or infinite maps for 1 of 3 image\(s\): b"):
        check_maps("m", "gradcam", maps, ["a", "b", "c"])
    check_maps("m", "gradcam", torch.zeros(3, 1, 4, 4), ["a", "b", "c"])  # finite maps pass
    with pytest.raises(NonFiniteError, match="model 'm' returned NaN"):
        check_logits("m", torch.tensor([[0.0, float("nan")]]), ["x"])


# ---------------------------------------------------------------------------------------------
# one writer per report folder


def test_second_process_on_the_same_report_is_refused_naming_the_holder(tiny_report: Path):
    from generator.artifacts.lock import report_lock

    work = tiny_report.parent / ".modelcard"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from generator.artifacts.lock import report_lock
        with report_lock(Path({str(work)!r}), "test holder"):
            print("held", flush=True)
            time.sleep(30)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = subprocess.run([sys.executable, "-m", "generator.cli", "render", str(tiny_report)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 3
        assert f"is in use by pid {holder.pid}" in proc.stderr and "run modelcard render again" in proc.stderr
    finally:
        holder.kill()
        holder.wait()
    with report_lock(work):  # released when its holder died
        with report_lock(work):  # and re-entrant within one process (build = run + render)
            pass


# ---------------------------------------------------------------------------------------------
# relative paths resolve against the config file, like every other path in it


def test_relative_folder_resolves_against_the_config_not_the_cwd(tmp_path: Path, image_folder: Path,
                                                                   monkeypatch, capsys):
    (tmp_path / "tinymodel.py").write_text(TINY_MODEL_MODULE)
    config = _report(tmp_path, image_folder, dataset_source="folder:images")  # image_folder is tmp_path/images
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["run", "-q", str(config)]) == 0
    manifest = json.loads((tmp_path / ".modelcard" / "manifest.json").read_text())
    assert manifest["datasets"] == ["pics"]


def test_bad_limit_is_a_config_error_with_its_line(tmp_path: Path, image_folder: Path, capsys):
    (tmp_path / "tinymodel.py").write_text(TINY_MODEL_MODULE)
    config = _report(tmp_path, image_folder)
    config.write_text(config.read_text().replace(f"source: folder:{image_folder}",
                                                 f"source: folder:{image_folder}\n    options: {{limit: '20'}}"))
    assert main(["run", "-q", str(config)]) == 2
    assert "datasets[0].options.limit: dataset source" in capsys.readouterr().err


def test_page_filters_never_print_nan():
    from generator.render.site import environment

    env = environment()
    assert env.filters["pct"](float("nan")) == "–" and env.filters["num"](float("inf")) == "–"
    assert env.filters["pct"](0.5) == "50.0%" and env.filters["num"](0.25, 2) == "0.25"


def test_build_writes_only_inside_its_output_folders(tiny_report: Path, tmp_path: Path, monkeypatch):
    def snapshot(root: Path) -> dict:
        return {p: p.stat().st_mtime_ns for p in root.rglob("*")}

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = snapshot(tmp_path)
    assert main(["build", "-q", str(tiny_report)]) == 0
    after = snapshot(tmp_path)
    outputs = (tmp_path / ".modelcard", tmp_path / "site")
    changed = [p for p in after if before.get(p) != after[p] and not any(o == p or o in p.parents for o in outputs)]
    assert changed == [] and list(cwd.iterdir()) == []


def test_every_test_the_guarantees_page_names_exists():
    import re

    root = Path(__file__).resolve().parent
    page = (root.parent / "site_src" / "common" / "guarantees.md").read_text()
    current = None
    missing = []
    checked = 0
    # A cell names `test_file.py::test_name`; a following `::test_other` is in the same file.
    for file, func in re.findall(r"`(test_[\w.]+\.py)?(::test_\w+)?`", page):
        current = file or current
        if not func:
            continue
        checked += 1
        if f"def {func[2:]}(" not in (root / current).read_text():
            missing.append(f"{current}{func}")
    assert checked >= 30 and missing == []


def test_check_reports_missing_paths_too(tmp_path: Path, image_folder: Path, capsys):
    (tmp_path / "tinymodel.py").write_text(TINY_MODEL_MODULE)
    config = _report(tmp_path, image_folder, dataset_source="folder:no/such/folder")
    assert main(["check", str(config)]) == 2
    assert "datasets[0].source: image folder" in capsys.readouterr().err
    assert main(["check", str(_report(tmp_path, image_folder))]) == 0


def test_a_method_not_defined_for_a_model_is_listed_not_failed(tmp_path: Path, image_folder: Path,
                                                                monkeypatch, capsys):
    from generator.capability import Unsupported
    from generator.methods.attribution import ATTRIBUTION_METHODS

    gradcam = ATTRIBUTION_METHODS.get("gradcam")

    def refuse(self, *args, **kwargs):
        raise Unsupported("Grad-CAM needs a (B,K,h,w) feature map; this model has none")

    monkeypatch.setattr(gradcam, "__init__", refuse)
    (tmp_path / "tinymodel.py").write_text(TINY_MODEL_MODULE)
    config = _report(tmp_path, image_folder, methods="[saliency, gradcam]")
    assert main(["build", "-q", str(config)]) == 0  # not a failure: the exit status stays 0
    out = capsys.readouterr().out
    # one reason, said once, with the parts it covers
    assert "not applicable (2 parts): Grad-CAM needs" in out and "FAILED" not in out
    assert "gradcam on tiny/pics; CAM segmentation on tiny/pics" in out
    manifest = json.loads((tmp_path / ".modelcard" / "manifest.json").read_text())
    why = "Grad-CAM needs a (B,K,h,w) feature map; this model has none"
    # CAM segmentation thresholds Grad-CAM, so it is not applicable either, for the same reason.
    assert manifest["unsupported"] == [{"what": "gradcam on tiny/pics", "why": why},
                                       {"what": "CAM segmentation on tiny/pics", "why": why}]
    assert {e.get("method") for e in manifest["artifacts"] if e["kind"] == "attribution"} == {"saliency"}
    run_page = (tmp_path / ".modelcard" / "docs" / "run.md").read_text()
    assert "## Not applicable" in run_page and "Grad\\-CAM needs" in run_page
