"""Dissection: IoU against a slow per-unit reference, AUC against scikit-learn, thresholds,
colour and Fashion part masks, and the Broden-format loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from generator.methods.concepts import dissection as dis


def test_iou_matches_a_slow_per_unit_reference():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(5, 4, 3, 3)).astype(np.float32)
    masks = rng.random((5, 3, 9, 9)) > 0.7
    sampler = dis.ThresholdSampler(total_cells=5 * 9, quantile=0.8)
    for i in (0, 2):  # two batches
        sampler.add(torch.from_numpy(acts[i:i + 3] if i == 0 else acts[3:]))
    thresholds = sampler.thresholds()
    assert sampler.exact
    # exact: the k-th largest of each unit's 45 values, k = ceil(0.2 * 45) = 9
    ref_t = np.sort(acts.transpose(1, 0, 2, 3).reshape(4, -1), axis=1)[:, -9]
    assert np.allclose(thresholds.numpy(), ref_t)
    acc = dis.IoUAccumulator(4, 3, chunk_cells=200)  # small chunks: the sub-batching is exercised
    acc.add(torch.from_numpy(acts[:2]), thresholds, torch.from_numpy(masks[:2]))
    acc.add(torch.from_numpy(acts[2:]), thresholds, torch.from_numpy(masks[2:]))
    slow = dis.slow_iou(acts, thresholds.numpy(), masks)
    assert np.allclose(acc.iou().numpy(), slow, atol=1e-12)
    labels = dis.label_units(acc.iou(), ["a", "b", "c"], ["colour", "part", "part"], threshold=0.0)
    assert [lab.best for lab in labels] == [["a", "b", "c"][int(j)] for j in slow.argmax(1)]


def test_sampled_thresholds_are_close_to_exact():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(200, 3, 10, 10, generator=g)
    sampler = dis.ThresholdSampler(total_cells=200 * 100, quantile=0.99, max_samples=5000, seed=0)
    for i in range(0, 200, 50):
        sampler.add(acts[i:i + 50])
    assert not sampler.exact
    exact = torch.quantile(acts.transpose(0, 1).reshape(3, -1), 0.99, dim=1)
    assert torch.allclose(sampler.thresholds(), exact, atol=0.15)


def test_auc_matches_scikit_learn_with_ties_and_the_mann_whitney_p_matches_scipy():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=(60, 5)), 1)  # rounded: many ties
    scores[:, 4] = 0.0  # a constant unit
    labels = rng.random((60, 3)) > 0.6
    labels[:, 2] = rng.random(60) > 0.9
    result = dis.rank_auc(torch.from_numpy(scores), torch.from_numpy(labels))
    for u in range(5):
        for k in range(3):
            assert float(result.auc[u, k]) == pytest.approx(metrics.roc_auc_score(labels[:, k], scores[:, u]),
                                                            abs=1e-6)
    stats = pytest.importorskip("scipy.stats")
    for u in range(4):
        for k in range(3):
            ref = stats.mannwhitneyu(scores[labels[:, k], u], scores[~labels[:, k], u], use_continuity=False,
                                     alternative="two-sided", method="asymptotic")
            assert float(result.p[u, k]) == pytest.approx(float(ref.pvalue), rel=1e-4)
    assert torch.all(result.p[4] == 1)  # no ranking, no evidence
    assert torch.all(result.low <= result.auc)
    # a single positive: no labels are trustworthy from one image; the bound says so
    one = dis.rank_auc(torch.arange(20.0)[:, None], torch.from_numpy(np.arange(20) == 19)[:, None])
    assert float(one.auc[0, 0]) == 1.0 and float(one.low[0, 0]) < 1.0


def test_average_ranks_by_hand():
    ranks, sizes = dis.average_ranks(torch.tensor([[3.0, 1.0, 3.0, 2.0, 3.0]]))
    assert ranks.tolist() == [[4.0, 1.0, 4.0, 2.0, 4.0]]
    assert sizes.tolist() == [[3.0, 1.0, 3.0, 1.0, 3.0]]


def test_colour_masks():
    img = np.zeros((1, 2, 4, 3), np.uint8)
    img[0, 0] = [[255, 0, 0], [0, 200, 0], [30, 60, 220], [250, 250, 250]]
    img[0, 1] = [[5, 5, 5], [128, 128, 128], [250, 220, 30], [120, 70, 20]]
    masks = dis.colour_masks(img)[0]
    named = {dis.COLOUR_NAMES[k]: [tuple(p) for p in np.argwhere(masks[k].numpy())] for k in range(11)}
    assert named["red"] == [(0, 0)] and named["green"] == [(0, 1)] and named["blue"] == [(0, 2)]
    assert named["white"] == [(0, 3)] and named["black"] == [(1, 0)] and named["grey"] == [(1, 1)]
    assert named["yellow"] == [(1, 2)] and named["brown"] == [(1, 3)]
    assert int(masks.sum()) == 8  # one name per pixel


def _tshirt() -> np.ndarray:
    img = np.zeros((28, 28), np.uint8)
    img[4:26, 9:19] = 200  # torso
    img[4:11, 3:25] = 180  # shoulders and short sleeves
    return img


def test_fashion_parts_are_derived_from_the_silhouette():
    parts = dis.fashion_part_masks(_tshirt(), 0)
    sil = dis.silhouette(_tshirt())
    height = 22
    band = int(round(0.2 * height))
    assert parts["upper band"].sum() == sil[4:4 + band].sum()
    sleeves = np.argwhere(parts["sleeves"])
    assert sleeves.size and sleeves[:, 0].min() >= 4 + band and sleeves[:, 0].max() <= 10
    assert np.all((sleeves[:, 1] < 9) | (sleeves[:, 1] > 18))  # outside the torso columns
    assert not parts["sole"].any()
    shoe = np.zeros((28, 28), np.uint8)
    shoe[12:22, 2:26] = 150
    shoe_parts = dis.fashion_part_masks(shoe, 7)
    assert shoe_parts["sole"].sum() == 24 * round(0.25 * 10) and not shoe_parts["sleeves"].any()
    masks, names, cats = dis.fashion_masks(np.stack([_tshirt(), shoe])[..., None], [0, 7], [str(i) for i in range(10)])
    assert masks.shape == (2, 13, 28, 28) and names[:3] == ["upper band", "sleeves", "sole"]
    assert cats.count("object") == 10 and bool(masks[1, 3 + 7].any()) and not bool(masks[1, 3].any())


def test_broden_folder_loader(tmp_path):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / "images" / "a.jpg")
    code = np.zeros((4, 4, 3), np.uint8)
    code[:2, :, 0] = 3  # label 3 in the top half
    code[2:, :, 0] = 1
    code[3, 3, :2] = [4, 1]  # label 4 + 256 = 260 (absent from label.csv: ignored)
    Image.fromarray(code).save(tmp_path / "images" / "a_object.png")
    (tmp_path / "label.csv").write_text("number,name,category\n0,-,\n1,red-c,color(1)\n3,dog,object(1)\n"
                                        "7,striped,texture(1)\n")
    (tmp_path / "index.csv").write_text("image,split,ih,iw,sh,sw,color,object,part,material,scene,texture\n"
                                        "a.jpg,train,8,8,4,4,,a_object.png,,,,7\n")
    data = dis.load_broden(tmp_path)
    assert data.names == ["red-c", "dog", "striped"] and data.categories == ["colour", "object", "texture"]
    assert data.masks.shape == (1, 3, 4, 4)
    assert int(data.masks[0, 1].sum()) == 8 and int(data.masks[0, 0].sum()) == 7 and bool(data.masks[0, 2].all())
    assert data.images[0].shape == (8, 8, 3)
    assert float(data.masks.double().mean()) == pytest.approx((8 + 7 + 16) / 48)
