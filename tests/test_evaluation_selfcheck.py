"""The evaluation pages check themselves: degenerate maps are left out and named, an order on
too few images is not called a ranking, methods with the same maps are named, and ROAR says
when the removal mask leaks the class (with ROAD's noisy linear imputation as the remedy).

Tiny models on the CPU: a bias-free ReLU CNN whose Grad-CAM is empty by construction (every
class weighs every channel negatively) and whose occlusion map is constant (one window covers
the image), so LRP-epsilon equals gradient x input; a synthetic ROAR problem where the images
carry no class at all and only the place of the removed pixels does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from generator.evaluation import statistics as st
from generator.evaluation.imputation import ROAD_KERNEL, noisy_linear_imputation
from generator.evaluation.roar import remove_pixels, roar_kar

# --- the tiny report -----------------------------------------------------------------------------

SELFCHECK_MODEL = textwrap.dedent('''
    import torch
    from torch import nn

    def build():
        torch.manual_seed(0)
        model = nn.Sequential()
        # no biases and ReLU only: LRP-epsilon (tiny epsilon) is gradient x input by construction
        model.add_module("conv1", nn.Conv2d(3, 8, 3, padding=1, bias=False))
        model.add_module("relu1", nn.ReLU())
        model.add_module("conv2", nn.Conv2d(8, 16, 3, padding=1, stride=2, bias=False))
        model.add_module("relu2", nn.ReLU())
        model.add_module("pool", nn.AdaptiveAvgPool2d(1))
        model.add_module("flatten", nn.Flatten())
        model.add_module("fc", nn.Linear(16, 4, bias=False))
        with torch.no_grad():  # every class weighs every channel negatively: Grad-CAM is empty
            model.fc.weight.copy_(-model.fc.weight.abs())
        return model, {"input_size": (3, 32, 32), "resize": 36, "class_names": ["ant", "bee", "cat", "dog"],
                       "layers": ["relu1", "relu2"], "cam_layer": "relu2"}
''')

METHODS = ["saliency", "gradient_x_input", "lrp_epsilon", "gradcam", "occlusion"]


@pytest.fixture(scope="module")
def selfcheck(tmp_path_factory):
    """The tiny report with the self-check model, selectivity on 3 images, run once."""
    from conftest import write_image_folder

    from generator.config import load_config
    from generator.pipeline.run import run_report

    root = tmp_path_factory.mktemp("selfcheck")
    folder = write_image_folder(root / "images")
    (root / "selfcheckmodel.py").write_text(SELFCHECK_MODEL)
    report = root / "report.yaml"
    report.write_text(f"""
title: "Self-checking evaluation"
device: cpu
site_src: []
models:
  - id: tiny
    source: python:selfcheckmodel:build
datasets:
  - id: pics
    source: folder:{folder}
outcome:
  methods: [{", ".join(METHODS)}]
  images: 3
  params:
    occlusion: {{window: 32, stride: 32}}
evaluation:
  enabled: true
  selectivity: {{steps: 4, patch: 4, images: 3}}
  sensitivity: {{enabled: false}}
  sanity: {{enabled: false}}
  segmentation: {{enabled: false}}
""")
    config = load_config(report)
    run_report(config, show_progress=False)
    return config


def _manifest(config):
    from generator.render.manifest import Manifest

    return Manifest.load(config.work_dir)


def _page(config) -> str:
    """The evaluation page of the run, rendered by its page builder alone (the other pages and
    the mkdocs build are covered by tests/test_evaluation_stage_tiny.py)."""
    from generator.render.manifest import Manifest
    from generator.render.pages import SiteContext
    from generator.render.pages.evaluation import evaluation_pages
    from generator.render.site import SiteWriter, environment

    docs = config.work_dir / "docs"
    writer = SiteWriter(docs, environment())
    site = SiteContext(config=config, manifest=Manifest.load(config.work_dir), writer=writer,
                       models={"tiny": {"title": "Tiny self-checking CNN"}})
    assert evaluation_pages(site) == [{"Tiny self-checking CNN on pics": "evaluation/tiny/pics.md"}]
    writer.flush()
    return (docs / "evaluation" / "tiny" / "pics.md").read_text()


def _copy(config, tmp_path: Path):
    """A copy of the run (artifacts and manifest) with a report that reads it: the copy's records
    can be edited without touching the module's run. Returns the copy's work folder and a loader
    of its config."""
    import shutil

    from generator.config import load_config

    work = tmp_path / "work"
    shutil.copytree(config.work_dir, work, ignore=shutil.ignore_patterns("docs", "site"))
    report = tmp_path / "report.yaml"
    report.write_text(config.path.read_text() + f"output: {{work_dir: {work}, site_dir: {tmp_path / 'site'}}}\n")
    shutil.copy(config.base_dir / "selfcheckmodel.py", tmp_path / "selfcheckmodel.py")
    return work, lambda: load_config(report)


def _row(page: str, title: str) -> str:
    return next(line for line in page.splitlines() if line.startswith("| ") and f"| {title} |" in line)


def test_degenerate_maps_are_recorded_and_not_ranked(selfcheck):
    rec = _manifest(selfcheck).one("evaluation_selectivity", model="tiny", dataset="pics").record
    assert {d["problem"] for d in rec["degenerate"]["gradcam"]} == {"all zero"}
    assert {d["problem"] for d in rec["degenerate"]["occlusion"]} == {"constant"}
    assert [d["index"] for d in rec["degenerate"]["gradcam"]] == [0, 1, 2]
    assert set(rec["degenerate"]) == {"gradcam", "occlusion"}
    assert rec["excluded"] == ["gradcam", "occlusion"]
    assert set(rec["ranking"]) == {"saliency", "gradient_x_input", "lrp_epsilon"}
    assert rec["ranking"] == sorted(rec["ranking"], key=lambda m: -rec["score"][m])
    # the curves of every method are still stored, one row per method
    curves = _manifest(selfcheck).one("evaluation_selectivity", model="tiny").load_npz("curves")
    assert curves["deletion"].shape == (len(METHODS), 3, 5)


def test_identical_maps_are_found_by_their_numbers(selfcheck):
    rec = _manifest(selfcheck).one("evaluation_selectivity", model="tiny", dataset="pics").record
    pairs = [sorted(p["methods"]) for p in rec["identical"]]
    assert pairs == [["gradient_x_input", "lrp_epsilon"]]
    pair = rec["identical"][0]
    assert pair["images"] == 3 and pair["min_correlation"] >= 0.999
    # the degenerate maps take part in no pair: their correlation is undefined, not "the same"
    assert all("gradcam" not in p["methods"] and "occlusion" not in p["methods"] for p in rec["identical"])


def test_the_page_flags_degenerate_maps_too_few_images_and_identical_methods(selfcheck):
    page = _page(selfcheck)
    # too few images: an order, never a ranking
    assert '!!! warning "Not a ranking: 3 images"' in page
    assert "the order is not a ranking" in page
    assert "| Order | Method | n |" in page and "| Rank |" not in page
    # degenerate maps named, with why, and the methods left out of the order
    assert '!!! warning "Degenerate maps left out"' in page
    assert "**Grad\\-CAM**: 3 of 3 maps degenerate" in page and "all zero" in page
    assert "**Occlusion**: 3 of 3 maps degenerate" in page and "constant" in page
    for title in ("Grad\\-CAM", "Occlusion"):
        row = _row(page, title)
        assert row.startswith("| – |") and "not ranked: 3 of 3 maps degenerate" in row
    assert _row(page, "Gradient saliency").split("|")[1].strip() in {"1", "2", "3"}
    # the same maps, named by comparing them
    assert '!!! note "Methods with the same maps"' in page
    assert "**Gradient x input** and **LRP\\-epsilon**" in page or "**LRP\\-epsilon** and **Gradient x input**" in page
    assert "same maps as LRP\\-epsilon" in _row(page, "Gradient x input")
    # what the numbers mean, and n
    assert "Deletion AUC" in page and "lower" in page and "higher is better" in page and "n = 3 images" in page
    # the per-image table marks the degenerate maps
    assert "✗ all zero" in page and "✗ constant" in page


def test_an_old_record_still_renders_and_says_the_checks_did_not_run(selfcheck, tmp_path):
    work, config = _copy(selfcheck, tmp_path)
    manifest = json.loads((work / "manifest.json").read_text())
    entry = next(e for e in manifest["artifacts"] if e["kind"] == "evaluation_selectivity")
    path = work / "artifacts" / entry["path"] / "record.json"
    record = json.loads(path.read_text())
    for field in ("degenerate", "excluded", "identical", "constant_tolerance", "identical_correlation"):
        record.pop(field)  # a record written before the self-checks
    record["ranking"] = sorted(record["methods"], key=lambda m: -record["score"][m])
    path.write_text(json.dumps(record))  # the record is not covered by the file digests
    page = _page(config())
    assert "This run did not check for degenerate" in page
    assert "Not a ranking: 3 images" in page  # the spread and verdict come from the per-image numbers
    assert "Degenerate maps left out" not in page


# --- statistics ----------------------------------------------------------------------------------

def test_map_problems():
    assert st.map_problem(np.zeros((4, 4))) == "all zero"
    assert st.map_problem(np.full((4, 4), 3.0)) == "constant"
    assert st.map_problem(np.full((4, 4), 3.0) + 1e-7 * np.eye(4)) == "constant"  # within the relative tolerance
    assert st.map_problem(np.full((4, 4), 3.0) + 1e-3 * np.eye(4)) == ""
    bad = np.ones((4, 4))
    bad[1, 2] = np.nan
    assert st.map_problem(bad) == "non-finite values"
    assert st.map_problem(np.random.default_rng(0).normal(size=(4, 4))) == ""


def _auc(scores):
    """Per-image AUCs whose insertion − deletion equals ``scores``."""
    return {"deletion": {m: [0.2] * len(v) for m, v in scores.items()},
            "insertion": {m: [0.2 + s for s in v] for m, v in scores.items()}}


def test_too_few_images_is_not_a_ranking():
    res = st.selectivity_statistics(_auc({"a": [0.9, 0.8, 0.85], "b": [0.1, 0.2, 0.15]}), ["a", "b"])
    assert res["verdict"]["resolved"] is False and res["verdict"]["reason"] == "too_few_images"
    assert res["ranking"] == ["a", "b"]  # still ordered, for reading


def test_separated_methods_are_resolved_and_overlapping_ones_are_not():
    rng = np.random.default_rng(1)
    base = rng.normal(size=12) * 0.02
    scores = {"good": list(0.8 + base), "mid": list(0.5 + base + rng.normal(size=12) * 0.01),
              "bad": list(0.2 + base + rng.normal(size=12) * 0.01)}
    res = st.selectivity_statistics(_auc(scores), list(scores))
    assert res["verdict"]["resolved"] is True and res["verdict"]["top_group"] == ["good"]
    assert res["summary"]["good"]["n"] == 12
    s = res["summary"]["good"]
    assert s["low"] <= s["ci_low"] <= s["mean"] <= s["ci_high"] <= s["high"]
    # two methods from the same distribution cannot be told apart: both are "the best"
    twin = {"a": list(rng.normal(0.5, 0.2, 12)), "b": list(rng.normal(0.5, 0.2, 12)), "c": list(np.full(12, -1.0))}
    res = st.selectivity_statistics(_auc(twin), list(twin))
    assert res["verdict"]["reason"] == "overlap" and sorted(res["verdict"]["top_group"]) == ["a", "b"]
    assert res["verdict"]["separated"] == [False, True]
    # the same numbers give the same interval every time (fixed seed)
    again = st.selectivity_statistics(_auc(twin), list(twin))
    assert again["summary"] == res["summary"]


def test_degenerate_images_leave_the_figures_and_most_leave_the_ranking():
    scores = {"a": [0.5, 0.6, 0.7, 0.8, 0.9], "b": [0.1, 0.2, 0.3, 0.4, 0.5], "c": [0.9] * 5}
    res = st.selectivity_statistics(_auc(scores), list(scores), {"b": [0], "c": [0, 1, 2]})
    assert res["summary"]["b"]["n"] == 4 and res["summary"]["b"]["mean"] == pytest.approx(0.35)
    assert res["excluded"] == ["c"] and res["ranking"] == ["a", "b"]
    assert res["verdict"]["reason"] == "too_few_images"  # b keeps 4 usable images, fewer than 5


def test_identical_pairs_by_numbers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 8, 8))
    maps = {"a": a, "scaled": 2 * a + 1, "other": rng.normal(size=(3, 8, 8)), "empty": np.zeros((3, 8, 8))}
    pairs = st.identical_pairs(maps)
    assert [p["methods"] for p in pairs] == [["a", "scaled"]]
    assert pairs[0]["min_correlation"] == pytest.approx(1.0)
    # one differing image breaks the identity; an unusable image is not compared
    b = a.copy()
    b[1] = rng.normal(size=(8, 8))
    assert st.identical_pairs({"a": a, "b": b}) == []
    assert st.identical_pairs({"a": a, "b": b}, {"b": [True, False, True]})[0]["images"] == 2


def test_lrp_epsilon_equals_gradient_x_input_on_a_bias_free_relu_network():
    """Found by comparing maps, not names: the identity of LRP-epsilon and gradient x input on a
    ReLU network without biases (Ancona et al. 2018), and no other pair."""
    from generator.methods.attribution import ATTRIBUTION_METHODS

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(),
                          nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(32, 3, bias=False)).eval()
    x = torch.randn(4, 3, 12, 12)
    target = model(x).argmax(1)
    maps = {name: ATTRIBUTION_METHODS.get(name)(model, None).attribute(x, target).maps.detach().numpy()
            for name in ("saliency", "gradient_x_input", "lrp_epsilon", "smoothgrad")}
    pairs = st.identical_pairs(maps)
    assert [sorted(p["methods"]) for p in pairs] == [["gradient_x_input", "lrp_epsilon"]]
    assert pairs[0]["max_relative_difference"] < 1e-3


def test_flag_quality():
    assert st.flag_quality([0.95, 0.97], 0.9)["verdict"] == "too_few_images"
    assert st.flag_quality([0.95, 0.96, 0.97, 0.98, 0.99, 0.95], 0.9)["firm"] is True
    assert st.flag_quality([0.5, 1.0, 0.7, 1.0, 0.9, 1.0], 0.9)["verdict"] == "near_threshold"


def test_the_statistics_and_the_page_module_import_without_torch():
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked")
        sys.meta_path.insert(0, Block())
        import generator.evaluation.statistics
        import generator.render.pages.evaluation
        assert "torch" not in sys.modules
    """)
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


# --- ROAR: the mask leaks the class --------------------------------------------------------------

def test_leak_check_on_the_numbers_of_the_issue():
    """The default report's Fashion-MNIST ROAR: SmoothGrad squared reaches 98.9% with 90% of the
    pixels removed, above the unmodified retraining (77.6%) and the trained model (92.0%)."""
    roar = {"gradcam": [0.812, 0.883, 0.895, 0.905, 0.865], "integrated_gradients": [0.756, 0.765, 0.765, 0.752, 0.768],
            "random": [0.756, 0.729, 0.669, 0.675, 0.621], "saliency": [0.808, 0.807, 0.797, 0.834, 0.765],
            "smoothgrad_sq": [0.869, 0.937, 0.984, 0.987, 0.989]}
    leak = st.roar_leak([0.1, 0.3, 0.5, 0.7, 0.9], 0.776, 0.92, roar, {}, test_images=2000)
    assert leak["leak"] is True
    top = leak["above_reference"][0]
    assert (top["method"], top["fraction"], top["accuracy"]) == ("smoothgrad_sq", 0.9, 0.989)
    assert top["above_original"] is True
    assert leak["all_above_random"]["holds"] is True and leak["all_above_random"]["fraction"] == 0.9
    assert leak["margin"] == pytest.approx(0.02)  # the setting, above twice the binomial error (0.019)
    # a ROAR that behaves: methods fall below random, nothing above the reference
    fine = {"a": [0.7, 0.5, 0.3], "random": [0.75, 0.7, 0.6]}
    assert st.roar_leak([0.1, 0.5, 0.9], 0.78, 0.9, fine, {}, test_images=2000)["leak"] is False
    # a reference that happens to be low is not enough: random masks raise the bar (they carry no class)
    noisy = {"a": [0.81, 0.5, 0.3], "random": [0.80, 0.7, 0.6]}
    judged = st.roar_leak([0.1, 0.5, 0.9], 0.70, 0.9, noisy, {}, test_images=2000)
    assert judged["bar"] == 0.8 and judged["above_reference"] == [] and judged["leak"] is False


def _leaky_problem(n: int, gen: torch.Generator):
    """8 x 8 images of +-1 noise, labels at random: the images carry no class. The 'leaky'
    method's map marks the left half for class 0 and the right half for class 1, so the place of
    the removed pixels is the class."""
    x = (torch.randint(0, 2, (n, 1, 8, 8), generator=gen).float() * 2 - 1)
    y = torch.randint(0, 2, (n,), generator=gen)
    side = torch.zeros(n, 8, 8)
    side[y == 0, :, :4] = 1.0
    side[y == 1, :, 4:] = 1.0
    return x, y, side + 1e-3 * torch.rand(n, 8, 8, generator=gen)


def _retrain():
    def make_model():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2))

    def train(model, x, y):
        opt = torch.optim.Adam(model.parameters(), lr=0.02)
        for _ in range(60):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return model

    def evaluate(model, x, y):
        with torch.no_grad():
            return float((model(x).argmax(1) == y).float().mean())

    return make_model, train, evaluate


@pytest.fixture(scope="module")
def leaky_roar():
    gen = torch.Generator().manual_seed(0)
    xtr, ytr, mtr = _leaky_problem(300, gen)
    xte, yte, mte = _leaky_problem(300, gen)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-32-2 MLP: a second thread only adds synchronisation (50x slower on a busy CPU)
    try:
        return roar_kar(*_retrain(), xtr, ytr, xte, yte, {"leaky": mtr}, {"leaky": mte}, fractions=(0.5,),
                        modes=("roar",))
    finally:
        torch.set_num_threads(threads)


def test_a_mask_that_encodes_the_class_is_detected(leaky_roar):
    out = leaky_roar
    assert out["reference_accuracy"] < 0.65  # nothing to learn from the images themselves
    assert out["roar"]["leaky"][0] > 0.9  # ... but everything from where pixels were removed
    leak = st.roar_leak([0.5], out["reference_accuracy"], 0.5, out["roar"], {}, test_images=300)
    assert leak["leak"] is True and leak["above_reference"][0]["method"] == "leaky"
    assert leak["all_above_random"]["holds"] is True


def test_the_roar_page_says_the_mask_leaks(selfcheck, leaky_roar, tmp_path):
    """The leaking ROAR result as the stage records it, added to the tiny report: the page says so,
    with the numbers, and offers ROAD's imputation."""
    from generator.artifacts.store import ArtifactStore
    from generator.records import validate_record

    out = leaky_roar
    record = {"model": "tiny", "dataset": "pics", "methods": ["leaky", "random"], "fractions": [0.5],
              "reference_accuracy": round(out["reference_accuracy"], 6), "original_model_accuracy": 0.5,
              "roar": {m: [round(v, 6) for v in a] for m, a in out["roar"].items()},
              "kar": {m: [0.5] for m in out["roar"]},
              "budget": {"train_images": 300, "test_images": 300, "epochs": 60, "batch_size": 300,
                         "full_training": "300 images"},
              "params": {"leaky": {}}, "imputation": "mean", "road_noise": None}
    validate_record("evaluation_roar", record)
    work, config = _copy(selfcheck, tmp_path)
    ArtifactStore(work / "artifacts").put("evaluation_roar", "leak0", record, {})
    manifest = json.loads((work / "manifest.json").read_text())
    manifest["artifacts"].append({"kind": "evaluation_roar", "key": "leak0", "path": "evaluation_roar/leak0",
                                  "model": "tiny", "dataset": "pics"})
    (work / "manifest.json").write_text(json.dumps(manifest))
    page = _page(config())
    assert '!!! danger "The removal mask leaks the class"' in page
    assert "With 50% of the pixels removed" in page and "still reaches" in page
    assert "cannot make the task easier" in page and "where the pixels were removed" in page
    assert "Every method stays above the random ranking" in page
    assert "evaluation\\.roar\\.imputation: road" in page and "Rong et al\\. 2022" in page
    assert "⚠" in _row(page, "Leaky")  # the cell above the reference is marked
    # quality figures of ROAR: one seed, the binomial error, the margin
    assert "binomial standard error" in page and "one seed" in page


# --- ROAD's noisy linear imputation --------------------------------------------------------------

NEIGHBOURS = {(-1, -1): 1 / 12, (-1, 0): 1 / 6, (-1, 1): 1 / 12, (0, -1): 1 / 6, (0, 1): 1 / 6, (1, -1): 1 / 12,
              (1, 0): 1 / 6, (1, 1): 1 / 12}


def _neighbour_mean(img: np.ndarray, i: int, j: int) -> float:
    """The weighted mean of the in-image neighbours of pixel (i, j), written out (no convolution)."""
    total = weight = 0.0
    for (di, dj), w in NEIGHBOURS.items():
        a, b = i + di, j + dj
        if 0 <= a < img.shape[0] and 0 <= b < img.shape[1]:
            total += w * img[a, b]
            weight += w
    return total / weight


def test_road_kernel_is_the_papers():
    assert ROAD_KERNEL.sum().item() == pytest.approx(1.0)
    assert ROAD_KERNEL[0, 1].item() == pytest.approx(1 / 6) and ROAD_KERNEL[0, 0].item() == pytest.approx(1 / 12)


def test_a_ramp_with_a_hole_is_filled_exactly():
    """A linear ramp is its own weighted neighbour mean (the weights are symmetric), so with no
    noise the imputation restores it exactly: linear interpolation."""
    i = torch.arange(12, dtype=torch.float64).view(-1, 1)
    j = torch.arange(15, dtype=torch.float64).view(1, -1)
    ramp = (0.3 * i - 0.2 * j + 1.5).expand(1, 2, 12, 15).clone()
    ramp[:, 1] *= -2.0  # a second channel with another ramp
    hole = torch.zeros(1, 12, 15, dtype=torch.bool)
    hole[0, 3:9, 4:11] = True
    hole[0, 5, 12] = True  # and a lone pixel
    filled = noisy_linear_imputation(ramp, hole, noise=0.0, tolerance=1e-12)
    np.testing.assert_allclose(filled.numpy(), ramp.numpy(), atol=1e-9)
    # in float32 (how ROAR runs it) to well within an 8-bit step
    filled32 = noisy_linear_imputation(ramp.float(), hole, noise=0.0)
    np.testing.assert_allclose(filled32.numpy(), ramp.numpy(), atol=1e-4)


def test_the_solution_satisfies_the_neighbour_average_equations():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 9, 8, generator=gen, dtype=torch.float64)
    missing = torch.rand(3, 9, 8, generator=gen) < 0.6  # holes on the border and in clusters
    out = noisy_linear_imputation(x, missing, noise=0.0, tolerance=1e-12).numpy()
    for n in range(3):
        for c in range(2):
            for i in range(9):
                for j in range(8):
                    if missing[n, i, j]:
                        assert out[n, c, i, j] == pytest.approx(_neighbour_mean(out[n, c], i, j), abs=1e-9)
                    else:
                        assert out[n, c, i, j] == x[n, c, i, j].item()  # kept pixels untouched


def test_conjugate_gradients_match_a_dense_solve():
    """The same system assembled as a dense matrix, row by row from the paper's description, and
    solved directly."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 7, 6, generator=gen, dtype=torch.float64)
    missing = torch.rand(1, 7, 6, generator=gen) < 0.7
    idx = {(i, j): k for k, (i, j) in enumerate(zip(*np.nonzero(missing[0].numpy())))}
    A = np.zeros((len(idx), len(idx)))
    b = np.zeros(len(idx))
    for (i, j), k in idx.items():
        for (di, dj), w in NEIGHBOURS.items():
            a, c = i + di, j + dj
            if not (0 <= a < 7 and 0 <= c < 6):
                continue
            A[k, k] += w
            if (a, c) in idx:
                A[k, idx[(a, c)]] -= w
            else:
                b[k] += w * x[0, 0, a, c].item()
    dense = np.linalg.solve(A, b)
    out = noisy_linear_imputation(x, missing, noise=0.0, tolerance=1e-12)
    got = np.array([out[0, 0, i, j].item() for (i, j) in idx])
    np.testing.assert_allclose(got, dense, atol=1e-9)


def test_noise_only_on_removed_pixels_seeded_and_of_the_asked_size():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(4, 1, 28, 28, generator=gen)
    missing = torch.rand(4, 28, 28, generator=gen) < 0.5
    plain = noisy_linear_imputation(x, missing, noise=0.0)
    noisy = noisy_linear_imputation(x, missing, noise=0.05, generator=torch.Generator().manual_seed(0))
    again = noisy_linear_imputation(x, missing, noise=0.05, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)
    keep = ~missing.unsqueeze(1)
    assert torch.equal(noisy[keep], x[keep])
    diff = (noisy - plain)[~keep]
    assert diff.std().item() == pytest.approx(0.05, rel=0.1) and abs(diff.mean().item()) < 0.01


def test_an_image_with_nothing_kept_gets_the_fill():
    x = torch.rand(2, 3, 5, 5)
    missing = torch.zeros(2, 5, 5, dtype=torch.bool)
    missing[0] = True
    out = noisy_linear_imputation(x, missing, noise=0.0, fill=torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(out[0], torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1).expand(3, 5, 5))
    assert torch.equal(out[1], x[1])


def test_roar_removal_with_road():
    """remove_pixels with ``imputation='road'``: the removed top pixels continue their neighbours
    (a ramp stays a ramp) instead of taking one colour; keep mode removes the others."""
    ramp = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8) / 64
    maps = torch.zeros(1, 8, 8)
    maps[0, 2:5, 2:6] = 1.0  # the 'important' block, in the interior
    mean = remove_pixels(ramp, maps, 12 / 64, fill=torch.tensor([0.5]))
    assert (mean[0, 0, 2:5, 2:6] == 0.5).all()  # one colour: the block stays visible
    road = remove_pixels(ramp, maps, 12 / 64, imputation="road", noise=0.0)
    torch.testing.assert_close(road, ramp, atol=1e-4, rtol=0)
    kept = remove_pixels(ramp, maps, 12 / 64, keep=True, imputation="road", noise=0.0)
    assert torch.equal(kept[0, 0, 2:5, 2:6], ramp[0, 0, 2:5, 2:6])
    with pytest.raises(ValueError, match="unknown imputation"):
        remove_pixels(ramp, maps, 0.5, imputation="inpaint")


def test_the_diagonal_application_is_the_sparse_neighbour_matrix():
    from generator.evaluation.imputation import _diagonals, _neighbour_sum, neighbour_matrix

    for height, width in ((5, 7), (28, 28), (1, 4)):
        u = torch.rand(height * width, 3, dtype=torch.float64)
        S = neighbour_matrix(height, width)
        expected = torch.sparse.mm(S, u)
        got = _neighbour_sum(_diagonals(height, width, torch.float64, "cpu"), u)
        torch.testing.assert_close(got, expected)
        # the matrix is the paper's stencil: row sums are the in-image weights (1 inside)
        assert S.to_dense().sum(1).max().item() == pytest.approx(1.0 if min(height, width) >= 3 else 1 / 3)
