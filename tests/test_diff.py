"""``modelcard diff``: no change against itself; a changed model shows changed predictions."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from generator.cli import main
from generator.config import load_config
from generator.diff import diff_reports, map_similarity, summary_markdown
from generator.pipeline.run import run_report


def _copy_report(tiny_report: Path, folder: Path, weights: bool = False) -> Path:
    folder.mkdir()
    shutil.copy(tiny_report.parent / "tinymodel.py", folder / "tinymodel.py")
    text = tiny_report.read_text()
    if weights:
        text = text.replace("source: python:tinymodel:build", "source: python:tinymodel:build\n    weights: changed.pt")
    (folder / "report.yaml").write_text(text)
    return folder / "report.yaml"


def test_diff_against_itself_reports_no_change(tiny_report: Path, capsys):
    run_report(load_config(tiny_report), show_progress=False)
    diff = diff_reports(tiny_report, tiny_report)
    assert not diff.changed
    assert all(p["changed_count"] == 0 for p in diff.predictions)
    assert all(a["mean_spearman"] == 1.0 for a in diff.attributions if a["compared"])
    assert "No change" in summary_markdown(diff)
    assert main(["diff", "--exit-code", str(tiny_report), str(tiny_report)]) == 0


def test_diff_against_changed_model_reports_changed_predictions(tiny_report: Path, tmp_path: Path):
    base = _copy_report(tiny_report, tmp_path / "base")
    head = _copy_report(tiny_report, tmp_path / "head", weights=True)
    import importlib.util

    spec = importlib.util.spec_from_file_location("tinymodel_for_test", tmp_path / "head" / "tinymodel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net, _ = module.build()
    state = net.state_dict()
    state["fc.bias"] = torch.tensor([5.0, -5.0, -5.0, -5.0])  # now (almost) always "ant"
    torch.save(state, tmp_path / "head" / "changed.pt")
    run_report(load_config(base), show_progress=False)
    run_report(load_config(head), show_progress=False)
    diff = diff_reports(base, head)
    assert diff.changed
    pred = diff.predictions[0]
    base_top = [r["top"][0]["name"] for r in
                __import__("json").loads(next((tmp_path / "base/.modelcard/artifacts/predictions")
                                              .rglob("summary.json")).read_text())["shown"]]
    expected_changes = sum(name != "ant" for name in base_top)
    assert pred["changed_count"] >= expected_changes > 0
    assert all(e["head"] == "ant" for e in pred["changed_images"])
    assert main(["diff", "--exit-code", str(base), str(head)]) == 1
    # The HEAD site gets a Review page.
    assert main(["render", str(head)]) == 0
    review = (tmp_path / "head" / "site" / "review.html").read_text()
    assert "Review: what changed" in review and "ant" in review


def test_map_similarity_reference_values():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert map_similarity(a, a)["pearson"] == 1.0 and map_similarity(a, a)["spearman"] == 1.0
    assert abs(map_similarity(a, -a)["pearson"] + 1.0) < 1e-12
    b = np.array([[1.0, 20.0], [30.0, 400.0]])  # same order, different values
    sim = map_similarity(a, b)
    assert sim["spearman"] == 1.0 and sim["pearson"] < 0.99


def _fake_report(root: Path, gallery: np.ndarray, values: np.ndarray, rules: list, fidelity: float) -> Path:
    """A report folder with one feature-visualisation gallery and one decision set."""
    import json

    from generator.artifacts.store import ArtifactStore, artifact_key, npz_bytes

    store = ArtifactStore(root / "artifacts")
    g, _ = store.get_or_compute("features_gallery", artifact_key("g", "1", v=root.name), lambda: (
        {"model": "m", "layer": "l1"},
        {"images": ("images.npz", npz_bytes(images=gallery, channels=np.array([3, 7]), values=values))}))
    d, _ = store.get_or_compute("data_surrogate", artifact_key("d", "1", v=root.name), lambda: (
        _surrogate_record(rules, fidelity), {}))
    entries = [{"kind": a.kind, "key": a.key, "path": str(a.path.relative_to(store.root)), **labels}
               for a, labels in ((g, {"model": "m", "layer": "l1"}), (d, {"model": "m", "dataset": "d"}))]
    (root / "manifest.json").write_text(json.dumps({"models": ["m"], "datasets": ["d"], "pairs": [],
                                                    "artifacts": entries}))
    return root


def _surrogate_record(rules, fidelity: float) -> dict:
    """A complete decision-set record (records are validated when read); only the rules and the
    held-out fidelity differ between the two reports."""
    return {
        "model": "m", "dataset": "d", "params": {}, "channel_layer": None, "class_names": ["a", "b"],
        "split": {"train_source": "fixture", "train_total": 10, "train_used": 10, "test_used": 5,
                  "checkpoints": [], "learning_rates": [], "from_training": False},
        "features": [], "n_candidates": len(rules), "n_itemsets": len(rules), "weights": [1.0],
        "objective": 0.0, "objective_terms": {}, "default_class": 0,
        "rules": [{"items": [], "label": 0, "text": r, "f1": 0.5, "examples": []} for r in rules],
        "tree": {"rules": [], "lengths": []}, "rule_list": {"rules": [], "lengths": [], "default_class": 0},
        "metrics": {"ids": {"held_out": {"fidelity": fidelity}}}, "device": "cpu",
    }


def test_feature_visualisation_and_decision_set_changes(tmp_path: Path):
    from generator.diff import compare_decision_sets, compare_feature_visualisations
    from generator.render.manifest import Manifest

    images = np.zeros((2, 4, 4, 3), np.uint8)
    changed = images.copy()
    changed[1] = 255  # unit 7 changes completely, unit 3 not at all
    base = _fake_report(tmp_path / "base", images, np.array([1.0, 2.0]), ["if a then x", "if b then y"], 0.5)
    head = _fake_report(tmp_path / "head", changed, np.array([1.0, 3.0]), ["if a then x", "if c then y"], 0.6)
    a, b = Manifest.load(base), Manifest.load(head)
    (fv,) = compare_feature_visualisations(a, b)
    assert fv["changed"] and {k: fv["units"][0][k] for k in ("unit", "pixel_change", "objective_base",
                                                             "objective_head")} == {
        "unit": 7, "pixel_change": 1.0, "objective_base": 2.0, "objective_head": 3.0}
    assert fv["units"][1]["unit"] == 3 and fv["units"][1]["pixel_change"] == 0.0
    (ds,) = compare_decision_sets(a, b)
    assert ds["changed"] and "added: if c then y" in ds["lines"] and "removed: if b then y" in ds["lines"]
    assert "fidelity 50.0% → 60.0%" in ds["lines"]
    same = compare_decision_sets(a, a)[0]
    assert not same["changed"] and not compare_feature_visualisations(a, a)[0]["changed"]
    diff = diff_reports(base, head)
    assert diff.changed and "Decision set" in summary_markdown(diff)
