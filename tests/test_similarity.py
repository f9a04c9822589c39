"""Representation similarity: linear CKA (full and mini-batch), SVCCA and mutual k-NN against
their definitions and invariances; CKA from stored Gram matrices (numpy) against linear CKA;
activation collection leaves the model untouched; and the stage and page on a tiny report of
two models."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from generator.methods.compare.gram_cka import cka_from_grams, cka_matrix_from_grams
from generator.methods.compare.similarity import (
    MinibatchCKA,
    cka_matrix,
    collect_activations,
    compare_streaming,
    jackknife_cka,
    linear_cka,
    mutual_knn,
    similarity_from_features,
    svcca,
    unbiased_cka,
)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _pair(n: int = 80, d1: int = 12, d2: int = 9, noise: float = 0.5, seed: int = 0):
    """Y a noisy linear function of X: related, not identical."""
    rng = _rng(seed)
    x = rng.standard_normal((n, d1))
    y = x @ rng.standard_normal((d1, d2)) + noise * rng.standard_normal((n, d2))
    return torch.from_numpy(x), torch.from_numpy(y)


# --- references written here, from the papers' formulas ----------------------------------------

def _hsic_song(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Song et al. 2012, eq. 5: the unbiased HSIC estimator, term by term."""
    n = k.shape[0]
    k, l = k.copy(), l.copy()  # noqa: E741
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))


def _cka_song(x: np.ndarray, y: np.ndarray) -> float:
    k, l = x @ x.T, y @ y.T  # noqa: E741
    return _hsic_song(k, l) / np.sqrt(_hsic_song(k, k) * _hsic_song(l, l))


def _cka_gram_biased(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. 2019 eq. 4 with explicit H K H."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h  # noqa: E741
    return float(np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l)))


# --- linear CKA --------------------------------------------------------------------------------

def test_cka_is_one_for_identical_and_matches_the_gram_form():
    x, y = _pair()
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, y) == pytest.approx(_cka_gram_biased(x.numpy(), y.numpy()), abs=1e-12)
    assert 0.2 < linear_cka(x, y) < 0.99


def test_cka_invariances():
    x, y = _pair(d1=10, d2=10)
    base = linear_cka(x, y)
    q, _ = np.linalg.qr(_rng(1).standard_normal((10, 10)))
    rotated = x @ torch.from_numpy(q)
    assert linear_cka(rotated, y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(3.7 * x, y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x + 5.0, y) == pytest.approx(base, abs=1e-10)  # centred
    # Not invariant to non-isotropic scaling (an invertible linear map that is not a rotation).
    stretch = torch.diag(torch.tensor([20.0] + [0.05] * 9, dtype=torch.float64))
    assert abs(linear_cka(x @ stretch, y) - base) > 0.05


def test_cka_from_grams_equals_linear_cka():
    x, y = _pair(n=40)
    kx, ky = (x @ x.T).numpy(), (y @ y.T).numpy()
    assert cka_from_grams(kx, ky) == pytest.approx(linear_cka(x, y), abs=1e-12)
    # Gram matrices of centred activations (as stored) give the same
    xc, yc = x - x.mean(0), y - y.mean(0)
    assert cka_from_grams((xc @ xc.T).numpy(), (yc @ yc.T).numpy()) == pytest.approx(linear_cka(x, y), abs=1e-12)
    assert cka_from_grams(kx, ky, unbiased=True) == pytest.approx(_cka_song(x.numpy(), y.numpy()), abs=1e-12)
    mat = cka_matrix_from_grams([kx, ky], [ky])
    np.testing.assert_allclose(mat[:, 0], [linear_cka(x, y), 1.0], atol=1e-12)
    with pytest.raises(ValueError, match="different sizes"):
        cka_from_grams(kx, ky[:-1, :-1])


def test_unbiased_and_single_batch_match_song_estimator():
    x, y = _pair(n=30)
    ref = _cka_song(x.numpy(), y.numpy())
    assert unbiased_cka(x, y) == pytest.approx(ref, abs=1e-12)
    assert cka_matrix([x], [y], batch_size=1000)[0, 0] == pytest.approx(ref, abs=1e-12)


def test_minibatch_accumulates_the_mean_of_per_batch_hsic():
    x, y = _pair(n=90)
    acc = MinibatchCKA(2, 1)
    hsic = []
    for s in range(0, 90, 30):
        xa, ya = x[s:s + 30].numpy(), y[s:s + 30].numpy()
        acc.update([x[s:s + 30], y[s:s + 30]], [y[s:s + 30]])
        hsic.append(_hsic_song(xa @ xa.T, ya @ ya.T))
    xy, xx, yy = acc.hsic()
    assert float(xy[0, 0]) == pytest.approx(np.mean(hsic), rel=1e-10)
    assert acc.batches == 3 and acc.images == 90
    assert float(acc.result()[1, 0]) == pytest.approx(1.0, abs=1e-12)
    acc.update([x[:3], y[:3]], [y[:3]])  # too small for the unbiased estimator: skipped, counted
    assert acc.skipped == 3 and acc.batches == 3


def test_minibatch_estimate_approaches_full_cka_for_many_images():
    x, y = _pair(n=4096, d1=16, d2=8, noise=1.0, seed=3)
    full = linear_cka(x, y)
    full_unbiased = unbiased_cka(x, y)
    mini = cka_matrix([x], [y], batch_size=256)[0, 0]
    assert mini == pytest.approx(full_unbiased, abs=0.02)
    assert mini == pytest.approx(full, abs=0.02)  # the biased estimator's bias vanishes as n grows


def test_within_model_matrix_is_symmetric_with_unit_diagonal():
    x, y = _pair(n=50)
    m = cka_matrix([x, y, x[:, :3]], batch_size=25)
    np.testing.assert_allclose(m, m.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-12)


def test_jackknife_spread_matches_leave_one_out_by_hand():
    x, y = _pair(n=12)
    xs, ys = x.numpy(), y.numpy()
    loo = np.array([_cka_song(np.delete(xs, i, 0), np.delete(ys, i, 0)) for i in range(12)])
    want = np.sqrt(11 / 12 * np.sum((loo - loo.mean()) ** 2))
    assert jackknife_cka([x], [y])[0, 0] == pytest.approx(want, rel=1e-9)
    assert np.isnan(jackknife_cka([x[:4]], [y[:4]])[0, 0])  # leaving one out of 4 leaves too few


# --- SVCCA -------------------------------------------------------------------------------------

def _svcca_reference(x: np.ndarray, y: np.ndarray, variance: float) -> float:
    """SVD of each centred representation keeping ``variance``, then classical CCA
    (whitened cross-covariance), mean of the canonical correlations."""
    def reduce(a):
        a = a - a.mean(0)
        u, s, vt = np.linalg.svd(a, full_matrices=False)
        share = np.cumsum(s ** 2) / np.sum(s ** 2)
        k = int(np.searchsorted(share, variance - 1e-12)) + 1
        return a @ vt[:k].T

    def inv_sqrt(c):
        w, v = np.linalg.eigh(c)
        return v @ np.diag(w ** -0.5) @ v.T

    a, b = reduce(x), reduce(y)
    caa, cbb, cab = a.T @ a, b.T @ b, a.T @ b
    rho = np.linalg.svd(inv_sqrt(caa) @ cab @ inv_sqrt(cbb), compute_uv=False)
    return float(np.mean(rho))


def test_svcca_matches_svd_then_cca():
    rng = _rng(2)
    latent = rng.standard_normal((300, 6))
    x = latent @ rng.standard_normal((6, 20)) + 0.05 * rng.standard_normal((300, 20))
    y = latent[:, :4] @ rng.standard_normal((4, 15)) + 0.3 * rng.standard_normal((300, 15))
    got = svcca(torch.from_numpy(x), torch.from_numpy(y), variance=0.99)
    assert got.mean == pytest.approx(_svcca_reference(x, y, 0.99), abs=1e-9)
    assert 0 < got.mean < 1
    q, _ = np.linalg.qr(rng.standard_normal((20, 20)))  # a rotation keeps the principal directions
    same = svcca(torch.from_numpy(x), torch.from_numpy(2.0 * x @ q), dims=5)
    assert same.mean == pytest.approx(1.0, abs=1e-8) and same.dims == (5, 5)


def test_svcca_undefined_with_too_few_images():
    x, y = _pair(n=10, d1=12, d2=9)
    assert np.isnan(svcca(x, y).mean)


# --- mutual k-NN -------------------------------------------------------------------------------

def test_mutual_knn_planted():
    rng = _rng(4)
    x = torch.from_numpy(rng.standard_normal((400, 16)))
    q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    assert mutual_knn(x, x @ torch.from_numpy(q) * 3.0, k=10) == pytest.approx(1.0)  # same cosine neighbourhoods
    shuffled = x[torch.from_numpy(rng.permutation(400))]
    chance = 10 / 399
    assert abs(mutual_knn(x, shuffled, k=10) - chance) < 0.02
    with pytest.raises(ValueError, match="k must be"):
        mutual_knn(x[:5], x[:5], k=5)


# --- collecting activations ----------------------------------------------------------------------

def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
                         nn.Conv2d(6, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 3))


def test_collect_activations_reduces_and_leaves_the_model_unchanged():
    model = _net().train()  # in training mode on purpose: BatchNorm must not update
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(10, 3, 12, 12)
    feats = collect_activations(model, ["2", "4", "6"], [x[:4], x[4:]])
    assert feats["2"].shape == (10, 6) and feats["4"].shape == (10, 8) and feats["6"].shape == (10, 8)
    model.eval()
    with torch.no_grad():
        ref = model[:3](x).mean(dim=(2, 3))
    model.train()
    torch.testing.assert_close(feats["2"], ref)
    flat = collect_activations(model, ["4"], [x], flatten_max=8 * 5 * 5)
    assert flat["4"].shape == (10, 8 * 5 * 5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert model.training and all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())


def test_streaming_equals_stored_features():
    a, b = _net(), _net()
    torch.manual_seed(1)
    for p in b.parameters():
        p.data.add_(0.3 * torch.randn_like(p))
    x = torch.randn(40, 3, 12, 12)
    streamed = compare_streaming(a, ["2", "4"], b, ["2", "4", "6"], [x[s:s + 10] for s in range(0, 40, 10)],
                                 knn_k=5, dense_images=40)
    fa = collect_activations(a, ["2", "4"], [x])
    fb = collect_activations(b, ["2", "4", "6"], [x])
    stored = similarity_from_features([fa["2"], fa["4"]], [fb["2"], fb["4"], fb["6"]], batch_size=10, knn_k=5)
    np.testing.assert_allclose(streamed.cka, stored.cka, atol=1e-6)
    np.testing.assert_allclose(streamed.knn, stored.knn)
    assert streamed.images == 40 and streamed.cka.shape == (2, 3)
    assert all(not m._forward_hooks for m in list(a.modules()) + list(b.modules()))


# --- stage and page on a tiny report -------------------------------------------------------------

OTHER_MODEL = textwrap.dedent('''
    import torch
    from torch import nn

    def build():
        torch.manual_seed({seed})
        model = nn.Sequential()
        model.add_module("conv1", nn.Conv2d(3, 8, 3, padding=1))
        model.add_module("relu1", nn.ReLU())
        model.add_module("conv2", nn.Conv2d(8, 12, 3, padding=1, stride=2))
        model.add_module("relu2", nn.ReLU())
        model.add_module("pool", nn.AdaptiveAvgPool2d(1))
        model.add_module("flatten", nn.Flatten())
        model.add_module("fc", nn.Linear(12, 4))
        return model, {{"input_size": (3, 32, 32), "resize": 36, "class_names": ["ant", "bee", "cat", "dog"],
                       "layers": ["relu1", "relu2"], "cam_layer": "relu2"}}
''')


def _write_report(root, seed: int = 1):
    from conftest import TINY_MODEL_MODULE, write_image_folder

    folder = write_image_folder(root / "images")
    (root / "tinymodel.py").write_text(TINY_MODEL_MODULE)
    # A module name per seed: Python caches imported modules for the whole test session.
    (root / f"othermodel{seed}.py").write_text(OTHER_MODEL.format(seed=seed))
    report = root / "report.yaml"
    report.write_text(textwrap.dedent(f'''
        title: "Similarity"
        device: cpu
        site_src: []
        models:
          - id: tiny
            source: python:tinymodel:build
            title: "Tiny <b>A</b>"
          - id: other
            source: python:othermodel{seed}:build
        datasets:
          - id: pics
            source: folder:{folder}
        outcome:
          enabled: false
        evaluation:
          enabled: false
        data:
          enabled: false
        compare:
          similarity:
            images: 7
            batch_size: 5
            knn_k: 3
            layers:
              other: [relu1, relu2, pool]
    '''))
    return report


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from generator.config import load_config
    from generator.pipeline.run import run_report
    from generator.render.manifest import Manifest

    root = tmp_path_factory.mktemp("similarity")
    config = load_config(_write_report(root))
    summary = run_report(config, show_progress=False)
    failed = [f for f in summary.failed if "broken.jpg" not in f[0] and "similarity" in f[0]]
    assert failed == []
    return config, Manifest.load(config.work_dir)


def test_stage_records_and_grams(tiny_run):
    from generator.data.sources import load_dataset
    from generator.methods.featurevis.spatial import SpatialView
    from generator.models.sources import LoadContext, load_model
    from generator.pipeline.inputs import displayed, model_input
    from generator.pipeline.run import model_request

    config, manifest = tiny_run
    pair = manifest.one("representation_similarity", dataset="pics")
    assert pair is not None and pair.labels["model_b"] == "other"
    rec = pair.rec
    assert (rec.model_a, rec.model_b) == ("tiny", "other")
    assert rec.layers_a == ["relu1", "relu2"] and rec.layers_b == ["relu1", "relu2", "pool"]
    assert len(rec.images) == 7 and len(rec.cka) == 2 and len(rec.cka[0]) == 3
    assert rec.cka_spread is not None and rec.params.spread == "jackknife"
    # SVCCA is undefined exactly where the directions kept exceed what 7 centred images span (6)
    for i, ka in enumerate(rec.svcca_dims_a):
        for j, kb in enumerate(rec.svcca_dims_b):
            assert (rec.svcca[i][j] is None) == (ka + kb > 6), (i, j, ka, kb)
    grams = {a.rec.model: a for a in manifest.find("representation_grams", dataset="pics")}
    assert sorted(grams) == ["other", "tiny"]
    g = grams["tiny"]
    arrays = g.load_npz("grams")
    assert sorted(arrays) == ["gram_0", "gram_1"] and arrays["gram_0"].dtype == np.float64
    assert g.rec.gram_images == g.rec.images

    # Recompute the reduced activations outside the pipeline: the stored Gram matrices give
    # linear CKA of those activations, and the pair's CKA is the mini-batch estimate of them.
    ds = load_dataset("pics", config.datasets[0].source, {}, base_dir=config.base_dir)
    feats = {}
    for mc in config.models:
        loaded = load_model(model_request(config, mc), LoadContext())
        display = displayed(loaded.spec, ds, 7)
        layers = ["relu1", "relu2"] if mc.id == "tiny" else ["relu1", "relu2", "pool"]
        feats[mc.id] = collect_activations(loaded.module, layers, [model_input(loaded.spec, display, "cpu")],
                                           view=SpatialView.for_spec(loaded.module, loaded.spec))
    ta = feats["tiny"]
    assert cka_from_grams(arrays["gram_0"], arrays["gram_1"]) == pytest.approx(
        linear_cka(ta["relu1"], ta["relu2"]), abs=1e-6)
    fb = feats["other"]
    want = cka_matrix([ta["relu1"], ta["relu2"]], [fb["relu1"], fb["relu2"], fb["pool"]], batch_size=5)
    np.testing.assert_allclose(np.array(rec.cka, dtype=float), want, atol=1e-5)


def test_pair_key_follows_model_b(tmp_path):
    """Changing model B's weights recomputes the pair but not model A's own unit."""
    from generator.config import load_config
    from generator.pipeline.run import run_report
    from generator.render.manifest import Manifest

    keys = []
    for seed in (1, 2):
        report = _write_report(tmp_path, seed=seed)
        config = load_config(report)
        run_report(config, show_progress=False)
        manifest = Manifest.load(config.work_dir)
        keys.append((manifest.one("representation_similarity").key,
                     manifest.one("representation_grams", model="tiny").key))
    assert keys[0][0] != keys[1][0]
    assert keys[0][1] == keys[1][1]


def test_page_renders_heat_maps_and_correspondence(tiny_run):
    from generator.render.site import render_site

    config, manifest = tiny_run
    render_site(config, build=False)
    docs = config.work_dir / "docs"
    page = (docs / "compare" / "pics" / "similarity.md").read_text()
    assert "corresponds best to `relu" in page
    assert "Tiny &lt;b&gt;A&lt;/b&gt;" in page or "Tiny \\<b\\>A\\</b\\>" in page or "<b>A</b>" not in page
    assert "Few images" in page and "7 images" in page
    assert "jackknife" in page
    figures = list((docs / "assets" / "gen").rglob("cka.png"))
    assert len(figures) == 3  # one pair, two models within
    undefined = sum(v is None for row in manifest.one("representation_similarity").rec.svcca for v in row)
    assert (f"SVCCA is undefined in {undefined} of 6 cells" in page) == (undefined > 0)


def test_iterating_activations_leaves_grad_mode_alone():
    """A suspended (or abandoned) activation iterator never leaves the caller without gradients:
    grad mode is global state, and a test after this one once failed for it."""
    import torch
    from torch import nn

    from generator.methods.compare.similarity import iter_reduced

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    batches = (torch.randn(2, 3, 8, 8) for _ in range(3))
    it = iter_reduced(model, ["1"], batches)
    first = next(it)
    assert torch.is_grad_enabled() and not first[0].requires_grad
    assert torch.is_grad_enabled()
    del it  # abandoned mid-way: closing the generator removes its hooks
    import gc

    gc.collect()
    assert torch.is_grad_enabled() and all(not m._forward_hooks for m in model.modules())
