"""The capability matrix: `modelcard list methods --model report.yaml` probes every attribution
method on every model with one input, and the Capabilities page says the same from a run's records:
runs with its axiom figure, not applicable or failed with the reason, not requested."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import pytest

from generator import catalogue
from generator.capabilities import FAILED, NOT_APPLICABLE, NOT_REQUESTED, RUNS, axiom_figure, probe_params
from generator.cli import main
from generator.config import parse_config
from generator.records import ManifestRecord


def test_lrp_figure_is_the_median_of_finite_values_with_the_flagged_count():
    extras = [{"conservation": [0.5, 0.98, float("nan")], "reliable": [False, True, False]},
              {"conservation": [1.02], "reliable": [True]}]
    # median of 0.5, 0.98, 1.02 (NaN left out and counted), 2 of 4 maps flagged by LRP itself
    assert axiom_figure("lrp_epsilon", extras) == ("conservation 0.98 (median of 3 maps); 1 without a finite value; "
                                                   "2 of 4 flagged unreliable")


def test_completeness_gap_figure_and_methods_without_a_figure():
    assert axiom_figure("integrated_gradients", [{"completeness_gap": [0.02, 0.01, 0.5, 0.03]}]) == \
        "completeness gap 0.025 (median of 4 maps)"
    assert axiom_figure("deeplift", [{"completeness_gap": [float("inf")]}]) == \
        "completeness gap not available (no finite value in 1 map)"
    assert axiom_figure("saliency", [{"completeness_gap": [0.1]}]) == ""  # saliency has no axiom: nothing invented
    assert axiom_figure("lrp_epsilon", [{}]) == "conservation not recorded"


def test_probe_settings_cap_only_cost_parameters():
    assert probe_params("integrated_gradients", {"steps": 64, "baseline": "blur"}) == {"steps": 8, "baseline": "blur"}
    assert probe_params("smoothgrad", {})["n_samples"] == 4
    assert probe_params("occlusion", {"window": 0.25, "stride": 0.1})["stride"] == 0.25
    assert probe_params("saliency", {"precision": "fp32"}) == {"precision": "fp32"}


# ------------------------------------------------------------------------------------------ page


@dataclass
class _Rec:
    extras: Dict[str, Any]


@dataclass
class _Art:
    rec: _Rec


@dataclass
class _Manifest:
    """The part of generator.render.manifest.Manifest the page reads."""

    record: ManifestRecord
    arts: Dict[tuple, List[_Art]] = field(default_factory=dict)

    @property
    def models(self):
        return list(self.record.models)

    @property
    def pairs(self):
        return [list(p) for p in self.record.pairs]

    def find(self, kind, **labels):
        assert kind == "attribution"
        return self.arts.get((labels["model"], labels["method"]), [])


def _page(tmp_path: Path) -> str:
    from generator.render.pages import SiteContext
    from generator.render.pages.capability import capability_pages
    from generator.render.site import SiteWriter, environment

    config = parse_config(textwrap.dedent("""
        models:
          - {id: cnn, source: "python:m:build", title: "CNN <b>one</b>"}
          - {id: ts, source: "torchscript:m.pt"}
          - {id: gone, source: "python:m:build"}
        datasets: [{id: a, source: samples}, {id: b, source: samples}]
        outcome: {methods: [saliency, lrp_epsilon, integrated_gradients, gradcam]}
    """), str(tmp_path / "report.yaml"))
    record = ManifestRecord.model_validate({
        "models": ["cnn", "ts"], "pairs": [["cnn", "a"], ["cnn", "b"], ["ts", "a"]],
        "unsupported": [{"what": "lrp_epsilon on ts/a", "why": "not for <TorchScript> | here"},
                        {"what": "gradcam on ts/a", "why": "hooks cannot be attached"}],
        "failures": [{"what": "gradcam on cnn/b", "why": "RuntimeError: <boom>"},
                     {"what": "model gone", "why": "FileNotFoundError: m.py"}]})
    manifest = _Manifest(record, {
        ("cnn", "lrp_epsilon"): [_Art(_Rec({"conservation": [0.9, 1.0], "reliable": [True, False]})),
                                 _Art(_Rec({"conservation": [1.1], "reliable": [True]}))],
        ("cnn", "integrated_gradients"): [_Art(_Rec({"completeness_gap": [0.004, 0.002, 0.001]}))],
        ("cnn", "saliency"): [_Art(_Rec({}))], ("ts", "saliency"): [_Art(_Rec({}))],
        ("ts", "integrated_gradients"): [_Art(_Rec({"completeness_gap": [0.01]}))],
        ("cnn", "gradcam"): [_Art(_Rec({}))]})
    writer = SiteWriter(tmp_path / "docs", environment())
    nav = capability_pages(SiteContext(config=config, manifest=manifest, writer=writer))
    assert nav == [{"Capabilities": "models/capabilities.md"}]
    return writer.pages["models/capabilities.md"]


def test_page_figures_reasons_and_not_requested(tmp_path: Path):
    from generator.render.pages.capability import model_capabilities  # noqa: F401  (import check)

    page = _page(tmp_path)
    # figures from the stored extras, over every dataset of the model
    assert r"✓ runs — conservation 1\.00 \(median of 3 maps\); 1 of 3 flagged unreliable" in page
    assert r"✓ runs — completeness gap 0\.002 \(median of 3 maps\)" in page
    # reasons, escaped (HTML and Markdown table syntax)
    assert r"✗ not applicable: not for &lt;TorchScript&gt; \| here" in page
    assert "<TorchScript>" not in page and "<boom>" not in page
    assert r"✗ failed: RuntimeError: &lt;boom&gt;" in page  # failed on one dataset: said, not hidden
    assert r"✗ failed: the model did not load: FileNotFoundError: m\.py" in page
    assert "CNN &lt;b&gt;one&lt;/b&gt;" in page and "<b>" not in page
    # the methods nobody asked for: one line, not one row each
    line = next(ln for ln in page.splitlines() if ln.startswith("Not requested"))
    assert "`smoothgrad`" in line and "`deeplift`" in line and "`saliency`" not in line
    assert "| Gradient x input" not in page
    assert "{ #capabilities-ts }" in page


def test_page_modules_import_no_torch():
    code = ("import sys; import generator.render.pages.capability, generator.capabilities; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


# ------------------------------------------------------------------------------------------- CLI


def test_list_methods_with_a_model_probes_every_method(tiny_report: Path, capsys):
    assert main(["list", "methods", "--model", str(tiny_report)]) == 0
    out = capsys.readouterr().out
    rows = {ln.split()[0]: ln for ln in out.splitlines() if ln.split()}
    names = [e.name for e in catalogue.entries("attribution")]
    for name in names:
        assert name in rows, name
    # the tiny CNN has ReLUs and plain layers: the gradient and LRP families run, with their figures
    assert "✓ runs" in rows["saliency"] and "✓ runs" in rows["occlusion"]
    lrp = rows["lrp_epsilon"]
    assert "✓ conservation" in lrp and "(median of 1 map); 0 of 1 flagged unreliable" in lrp
    assert "✓ completeness gap" in rows["integrated_gradients"]
    assert "nan" not in out.lower()
    assert "input of tiny: the first image of dataset pics" in out


def test_list_methods_model_reports_reasons_not_crashes(tmp_path: Path, image_folder: Path, capsys):
    """A model a method is not defined for: the reason, once, as a note; exit 0."""
    (tmp_path / "gelumodel.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        def build():
            torch.manual_seed(0)
            model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(4, 2))
            return model, {"input_size": (3, 16, 16), "class_names": ["a", "b"], "layers": ["1"],
                           "cam_layer": "1"}
    '''))
    config = tmp_path / "report.yaml"
    config.write_text(textwrap.dedent(f"""
        models: [{{id: gelu, source: "python:gelumodel:build"}}]
        datasets: [{{id: pics, source: "folder:{image_folder}"}}]
        outcome: {{methods: [saliency]}}
    """))
    assert main(["list", "methods", "--model", str(config)]) == 0
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if ln.startswith("guided_backprop"))
    assert "✗ not applicable [" in row
    note = row.split("[")[-1].rstrip("]")
    assert any(ln.startswith(f"[{note}] ") and "ReLU" in ln for ln in out.splitlines())


def test_list_model_option_only_for_methods(tiny_report: Path, capsys):
    assert main(["list", "models", "--model", str(tiny_report)]) == 2
    assert "--model works with `modelcard list methods` only" in capsys.readouterr().err


def test_list_methods_model_validates_the_config_first(tmp_path: Path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [{id: m, source: 'python:nowhere:build'}]\ndatasets: [{id: d, source: samples}]\n"
                   "outcome: {methods: [saliencyy]}\n")
    assert main(["list", "methods", "--model", str(bad)]) == 2
    assert "did you mean 'saliency'" in capsys.readouterr().err


@pytest.mark.parametrize("status", [RUNS, NOT_APPLICABLE, FAILED, NOT_REQUESTED])
def test_every_status_says_it_in_words(status):
    from generator.capabilities import Capability

    cap = Capability("m", "x", status, reason="why")
    assert status in cap.text() and status in cap.short()
