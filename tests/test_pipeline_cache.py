"""Artifacts: a second run recomputes nothing; a changed parameter recomputes only its method."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from generator.artifacts.store import ArtifactStore, artifact_key
from generator.config import load_config
from generator.pipeline.run import run_report


def test_second_run_reuses_everything_and_param_change_recomputes_one_method(tiny_report: Path):
    config = load_config(tiny_report)
    first = run_report(config, show_progress=False)
    kinds = {c.split("/")[0] for c in first.computed}
    assert {"attribution", "dataset", "model", "predictions"} <= kinds
    # An unreadable image is named and skipped; it is not a failed unit.
    assert first.failed == []
    assert first.skipped == [("dataset pics: skipped " + str(config.datasets[0].source.split(":", 1)[1]) +
                              "/cat/broken.jpg", first.skipped[0][1])]

    second = run_report(load_config(tiny_report), show_progress=False)
    assert second.computed == []
    assert sorted(second.reused) == sorted(first.computed)

    text = tiny_report.read_text() + "  params:\n    gradcam: {layer: relu1}\n"
    tiny_report.write_text(text)
    third = run_report(load_config(tiny_report), show_progress=False)
    # Only Grad-CAM and what is derived from it is recomputed.
    assert _methods_of(third.manifest, third.computed) == {"gradcam"}
    assert any(c.startswith("attribution/") for c in third.computed)
    assert len(third.reused) > 0


def _methods_of(manifest_path: str, computed: list) -> set:
    """The methods of the computed attribution artifacts (artifacts derived from them, such as
    CAM segmentations, carry no method label and are not counted)."""
    manifest = json.loads(Path(manifest_path).read_text())
    keys = {c.split("/", 1)[1] for c in computed if c.startswith("attribution/")}
    return {e["method"] for e in manifest["artifacts"] if e["key"] in keys}


def test_interrupted_write_leaves_no_artifact(tmp_path: Path):
    store = ArtifactStore(tmp_path)
    key = artifact_key("k", "1", a=1)

    def crash(path: Path) -> None:
        path.write_bytes(b"half")
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        store.put("k", key, {"x": 1}, {"data": ("data.bin", crash)})
    assert store.get("k", key) is None
    assert not any(p.name == key for p in (tmp_path / "k").iterdir())
    art, computed = store.get_or_compute("k", key, lambda: ({"x": 1}, {"data": ("data.bin", b"whole")}))
    assert computed and art.file("data").read_bytes() == b"whole"


def test_key_depends_on_every_part():
    base = artifact_key("attribution", "1", method="saliency", params={"a": 1}, data="d", weights="w")
    assert base == artifact_key("attribution", "1", weights="w", data="d", params={"a": 1}, method="saliency")
    assert base != artifact_key("attribution", "2", method="saliency", params={"a": 1}, data="d", weights="w")
    assert base != artifact_key("attribution", "1", method="saliency", params={"a": 2}, data="d", weights="w")
    assert base != artifact_key("attribution", "1", method="saliency", params={"a": 1}, data="e", weights="w")


def test_attribution_artifact_holds_maps_for_each_image(tiny_report: Path):
    from generator.render.manifest import Manifest

    config = load_config(tiny_report)
    run_report(config, show_progress=False)
    manifest = Manifest.load(config.work_dir)
    art = manifest.one("attribution", model="tiny", method="saliency")
    maps = art.load_npz("maps")["maps"]
    assert maps.shape == (4, 32, 32) and np.isfinite(maps).all() and maps.max() > 0
    assert len(art.record["targets"]) == 4 and art.record["target_names"][0] in ["ant", "bee", "cat", "dog"]


def test_a_failing_method_does_not_stop_the_report(tiny_report: Path):
    text = tiny_report.read_text() + "  params:\n    gradcam: {layer: fc}\n"
    tiny_report.write_text(text)
    summary = run_report(load_config(tiny_report), show_progress=False)
    failures = [w for w, _ in summary.failed if w.startswith("gradcam")]
    assert failures == ["gradcam on tiny/pics"]
    assert any(c.startswith("attribution/") for c in summary.computed)  # saliency still ran


def test_interrupted_run_resumes_without_recomputing(tiny_report: Path, monkeypatch):
    from generator.methods.attribution import ATTRIBUTION_METHODS

    gradcam = ATTRIBUTION_METHODS.get("gradcam")
    original = gradcam.attribute

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt()

    monkeypatch.setattr(gradcam, "attribute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_report(load_config(tiny_report), show_progress=False)
    monkeypatch.setattr(gradcam, "attribute", original)
    resumed = run_report(load_config(tiny_report), show_progress=False)
    # Everything finished before the interruption is reused; what was cut off is computed now.
    assert "gradcam" in _methods_of(resumed.manifest, resumed.computed)
    for kind in ("predictions", "dataset", "model"):
        assert any(r.startswith(kind + "/") for r in resumed.reused)
        assert not any(c.startswith(kind + "/") for c in resumed.computed)
