"""Agreement between models' maps (generator.pipeline.stages.compare): Spearman and top-k overlap
recomputed independently (scipy, sets by hand) on planted maps; the crop geometry against the
real preprocessing (a bright square seen by models with different sizes and crops lands at the
same common-grid place); constant maps undefined, never NaN; and the config fields that choose
methods per model and the compared models, validated with file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from generator.config import ConfigError, parse_config
from generator.engine.preprocess import resize_and_crop
from generator.models.spec import ModelSpec
from generator.pipeline.stages.compare import (
    class_relation,
    common_region,
    crop_geometry,
    evidence,
    grid_shape,
    is_constant,
    spearman,
    to_common_grid,
    top_cells,
    topk_iou,
)
from generator.validation import config_problems

RNG = np.random.default_rng(14)


# --- Spearman ----------------------------------------------------------------------------------------

def test_identical_maps_correlate_perfectly_and_overlap_fully():
    a = RNG.normal(size=(12, 9))
    assert spearman(a, a.copy()) == pytest.approx(1.0, abs=1e-12)
    assert topk_iou(a, a.copy(), 0.1) == 1.0


def test_a_reversed_ranking_is_minus_one():
    a = RNG.normal(size=(10, 10))
    assert spearman(a, -a) == pytest.approx(-1.0, abs=1e-12)
    assert spearman(a, 5 - 3 * a) == pytest.approx(-1.0, abs=1e-12)  # any decreasing map of it
    assert spearman(a, np.exp(a)) == pytest.approx(1.0, abs=1e-12)  # ranks only: monotone maps agree


@pytest.mark.parametrize("ties", [False, True])
def test_spearman_equals_scipy_with_and_without_ties(ties):
    for _ in range(5):
        a, b = RNG.normal(size=(14, 11)), RNG.normal(size=(14, 11))
        b = 0.6 * a + 0.4 * b
        if ties:  # plateaus, as a ReLU'd CAM has
            a, b = np.round(np.maximum(a, 0), 1), np.round(b, 1)
        expected = stats.spearmanr(a.ravel(), b.ravel()).statistic
        assert spearman(a, b) == pytest.approx(expected, abs=1e-12)


# --- top-k overlap -----------------------------------------------------------------------------------

def test_topk_overlap_by_hand():
    # 10 x 10 maps: a's top 10% are cells 90..99, b's are cells 85..94: 5 shared, 15 in the union
    a = np.arange(100, dtype=float).reshape(10, 10)
    b = np.roll(np.arange(100, dtype=float), -5).reshape(10, 10)  # b[i] = (i + 5) % 100
    assert set(np.flatnonzero(top_cells(a, 0.1))) == set(range(90, 100))
    assert set(np.flatnonzero(top_cells(b, 0.1))) == set(range(85, 95))
    assert topk_iou(a, b, 0.1) == pytest.approx(5 / 15)
    # top 20%: a's 80..99, b's 75..94 -> 15 shared of 25
    assert topk_iou(a, b, 0.2) == pytest.approx(15 / 25)


def test_topk_ties_at_the_threshold_are_all_in_but_a_flat_floor_is_not():
    tied = np.array([5.0, 4.0, 4.0, 4.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    # the 2 highest: 5 and a 4, tied with two more 4s -> all four are in
    assert top_cells(tied, 0.2).tolist() == [True, True, True, True] + [False] * 6
    # a CAM that is zero over 90% of the image: the top 20% would reach the floor; only the
    # cells above it count, never the whole zero background
    cam = np.zeros(20)
    cam[[3, 7]] = [2.0, 1.0]
    assert np.flatnonzero(top_cells(cam, 0.2)).tolist() == [3, 7]


def test_random_maps_overlap_about_chance():
    """Two independent random maps: the top-k IoU averages k / (2 - k) (the pages quote it)."""
    ious = [topk_iou(RNG.random((20, 20)), RNG.random((20, 20)), 0.1) for _ in range(400)]
    assert np.mean(ious) == pytest.approx(0.1 / 1.9, abs=0.01)


# --- undefined, never NaN ------------------------------------------------------------------------------

def test_constant_maps_are_undefined_never_nan():
    a = RNG.normal(size=(8, 8))
    for constant in (np.zeros((8, 8)), np.full((8, 8), 3.7), np.full((8, 8), -1e-8)):
        assert is_constant(constant)
        assert spearman(a, constant) is None and spearman(constant, a) is None
        assert topk_iou(a, constant, 0.1) is None and topk_iou(constant, constant, 0.1) is None
    # a constant map stays constant through resampling (weights that sum to one, up to rounding)
    g = crop_geometry((90, 130), (3, 32, 32), 36)
    grid = to_common_grid(np.full((32, 32), 0.3), g, g.region, (17, 23))
    assert is_constant(grid) and spearman(grid, RNG.normal(size=grid.shape)) is None
    # but a map that varies, however little, is ranked
    grid[0, 0] += 1e-6
    assert not is_constant(grid) and spearman(grid, grid) == pytest.approx(1.0)


def test_unsigned_maps_with_negatives_compare_by_magnitude():
    m = np.array([[-3.0, 1.0], [0.5, 2.0]])
    assert evidence(m, signed=True).tolist() == m.tolist()
    assert evidence(m, signed=False).tolist() == np.abs(m).tolist()
    assert evidence(np.abs(m), signed=False).tolist() == np.abs(m).tolist()


# --- geometry -----------------------------------------------------------------------------------------

def test_crop_geometry_by_hand():
    # 100 x 150 image, shorter side to 36: 36 x 54, centre crop 32 x 32 at left 11, top 2
    g = crop_geometry((100, 150), (3, 32, 32), 36)
    assert (g.sx, g.sy, g.left, g.top) == (pytest.approx(54 / 150), pytest.approx(0.36), 11, 2)
    assert g.region == pytest.approx((11 / 0.36, 2 / 0.36, 43 / 0.36, 34 / 0.36))
    # no resize: the whole image, stretched
    assert crop_geometry((100, 150), (3, 40, 24), None).region == pytest.approx((0, 0, 150, 100))
    # already the input size: untouched, whatever ``resize`` says
    assert crop_geometry((32, 32), (3, 32, 32), 256).region == (0, 0, 32, 32)


def _spec(input_size, resize):
    return ModelSpec(id="m", source="test", input_size=input_size, mean=(0.0,) * 3, std=(1.0,) * 3,
                     class_names=["a", "b"], resize=resize)


SPECS = [((3, 32, 32), 36), ((3, 48, 40), None), ((3, 56, 56), 80), ((3, 24, 24), 24)]


def test_a_bright_square_lands_at_the_same_common_grid_place_for_every_crop():
    """Each spec sees the image through the real preprocessing; its preprocessed picture, used as
    its map, is mapped back onto the common grid: the square is in the same cells for all, where
    its original coordinates say it is."""
    h, w = 120, 170
    original = np.zeros((h, w, 3), np.uint8)
    top, left, side = 50, 78, 16  # near the centre, inside every crop
    original[top:top + side, left:left + side] = 255
    geometries = [crop_geometry((h, w), size, resize) for size, resize in SPECS]
    region = common_region(geometries)
    grid = grid_shape(geometries, region)
    # the region is the intersection of the crops: every crop contains it, one edge of each side is an edge of a crop
    for g in geometries:
        x0, y0, x1, y1 = g.region
        assert x0 <= region[0] + 1e-9 and y0 <= region[1] + 1e-9 and x1 >= region[2] - 1e-9 and y1 >= region[3] - 1e-9
    maps = []
    for (size, resize), g in zip(SPECS, geometries):
        seen = resize_and_crop(original, _spec(size, resize)).astype(float)[:, :, 0]
        assert seen.shape == size[1:]
        maps.append(to_common_grid(seen, g, region, grid))
    # where the square must be on the grid, from its original coordinates alone
    x0, y0, x1, y1 = region
    cx = ((left + side / 2) - x0) / (x1 - x0) * grid[1]
    cy = ((top + side / 2) - y0) / (y1 - y0) * grid[0]
    for grid_map in maps:
        weights = grid_map / grid_map.sum()
        rows, cols = np.indices(grid_map.shape) + 0.5
        assert (weights * rows).sum() == pytest.approx(cy, abs=0.35)
        assert (weights * cols).sum() == pytest.approx(cx, abs=0.35)
    for other in maps[1:]:
        assert spearman(maps[0], other) > 0.5
        assert topk_iou(maps[0], other, 0.05) > 0.5
        # the brightest cell is the same or a neighbour
        a, b = (np.unravel_index(np.argmax(m), m.shape) for m in (maps[0], other))
        assert abs(a[0] - b[0]) <= 1 and abs(a[1] - b[1]) <= 1


def test_identity_geometry_leaves_a_map_unchanged():
    g = crop_geometry((20, 30), (3, 20, 30), None)
    values = RNG.normal(size=(20, 30))
    assert np.allclose(to_common_grid(values, g, g.region, (20, 30)), values)
    # halving the grid averages 2 x 2 blocks
    halved = to_common_grid(values, g, g.region, (10, 15))
    assert np.allclose(halved, values.reshape(10, 2, 15, 2).mean(axis=(1, 3)))


def test_class_relations():
    assert class_relation(["cat", "dog"], ["cat", "dog"]) == ("same", 2)
    assert class_relation(["cat", "dog", "eel"], [" Cat", "fox"]) == ("shared_names", 1)
    assert class_relation(["cat"], ["shirt", "boot"]) == ("disjoint", 0)


# --- config -------------------------------------------------------------------------------------------

BASE = """\
title: compare
device: cpu
site_src: []
models:
  - id: big
    source: torchvision:resnet18
  - id: small
    source: torchvision:resnet18
datasets:
  - id: pics
    source: samples
outcome:
  methods: [saliency, gradcam, integrated_gradients]
"""


def _problems(tmp_path: Path, extra: str):
    path = tmp_path / "report.yaml"
    path.write_text(BASE + textwrap.dedent(extra))
    return path, config_problems(parse_config(path.read_text(), path))


def _line(path: Path, fragment: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if fragment in line)


def test_methods_by_model_replaces_the_list_for_the_models_it_names(tmp_path):
    path, problems = _problems(tmp_path, """\
          methods_by_model:
            small: [saliency, gradient_x_input]
          params:
            gradient_x_input: {}
            integrated_gradients: {steps: 4}
        compare: {top_k: 0.2}
    """)
    assert problems == []
    config = parse_config(path.read_text(), path)
    assert config.outcome.methods_for("big") == ["saliency", "gradcam", "integrated_gradients"]
    assert config.outcome.methods_for("small") == ["saliency", "gradient_x_input"]
    assert config.outcome.all_methods(["big", "small"]) == ["saliency", "gradcam", "integrated_gradients",
                                                            "gradient_x_input"]


def test_methods_by_model_and_compare_names_fail_with_file_and_line(tmp_path):
    path, problems = _problems(tmp_path, """\
          methods_by_model:
            smal: [saliency]
            big: [saliency, gradcm]
        compare:
          models: [big, tiny]
          methods: [saliency, occlusion, salency]
    """)
    expected = [
        (f"{path}:{_line(path, 'smal:')}: outcome.methods_by_model.smal: ", "unknown model id 'smal'"),
        (f"{path}:{_line(path, 'gradcm]')}: outcome.methods_by_model.big[1]: ", "did you mean 'gradcam'"),
        (f"{path}:{_line(path, 'tiny]')}: compare.models[1]: ", "unknown model id 'tiny'"),
        (f"{path}:{_line(path, 'occlusion')}: compare.methods[1]: ", "computed for none of the compared models"),
        (f"{path}:{_line(path, 'salency')}: compare.methods[2]: ", "did you mean 'saliency'"),
    ]
    for where, message in expected:
        assert any(p.startswith(where) and message in p for p in problems), (where, problems)
    assert len(problems) == len(expected), problems


def test_params_for_a_method_no_model_runs_are_refused(tmp_path):
    path = tmp_path / "report.yaml"
    path.write_text(BASE + "  methods_by_model: {small: [saliency]}\n  params:\n    occlusion: {window: 0.25}\n")
    with pytest.raises(ConfigError, match=r"report.yaml:\d+: outcome: params given for method\(s\) \['occlusion'\] "
                                        r"that are not in methods .* nor in methods_by_model"):
        parse_config(path.read_text(), path)
    path.write_text(BASE + "compare: {top_k: 0}\n")
    with pytest.raises(ConfigError, match=r"compare.top_k: Input should be greater than 0"):
        parse_config(path.read_text(), path)


def test_evaluation_defaults_to_each_models_own_methods(tmp_path):
    from generator.pipeline.stages.evaluation import evaluated_methods

    config = parse_config(BASE + "  methods_by_model: {small: [saliency]}\n", tmp_path / "report.yaml")
    assert config_problems(config) == []
    assert evaluated_methods(config, "small") == ["saliency"]
    assert evaluated_methods(config, "big") == ["saliency", "gradcam", "integrated_gradients"]
    assert evaluated_methods(config) == ["saliency", "gradcam", "integrated_gradients"]
    config.evaluation.methods = ["gradcam"]  # an explicit list runs as given (sensitivity, sanity)
    assert evaluated_methods(config, "small") == ["gradcam"]


def test_the_grid_is_as_fine_as_the_coarsest_map_and_capped():
    geometries = [crop_geometry((480, 640), (3, 224, 224), 256), crop_geometry((480, 640), (3, 299, 299), 342)]
    region = common_region(geometries)
    # the 224 px model sees the common region with fewer pixels than the 299 px one: its count wins
    x0, y0, x1, y1 = region
    assert grid_shape(geometries, region) == (round((y1 - y0) * geometries[0].sy), round((x1 - x0) * geometries[0].sx))
    # a coarser map (a 7 x 7 CAM left at layer resolution) makes the grid coarser still
    assert max(grid_shape(geometries, region, [(7, 7), (299, 299)])) <= 7
    assert max(grid_shape(geometries, region, most=112)) == 112
