"""The data stages on a fake Fashion-MNIST: the embedded CNN trains on it (with checkpoints), and
every stored number is recomputed here independently, from the raw data and the library calls
on the *whole* network (the stages use the last layer alone)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from data_fakes import fake_images, fashion_config, write_fake_fashion

from generator.config import load_config
from generator.pipeline.run import run_report


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fashion")
    data_dir = write_fake_fashion(tmp / "fmnist")
    mp = pytest.MonkeyPatch()
    import generator.data.sources as sources

    mp.setattr(sources, "FASHION_MNIST_DIRS", [str(data_dir)])
    try:
        config = load_config(fashion_config(tmp, data_dir))
        summary = run_report(config, show_progress=False)
        yield config, summary
    finally:
        mp.undo()


def _artifact(config, kind):
    manifest = json.loads((config.work_dir / "manifest.json").read_text())
    entries = [e for e in manifest["artifacts"] if e["kind"] == kind]
    assert len(entries) == 1, (kind, manifest["failures"])
    from generator.artifacts.store import Artifact

    folder = config.work_dir / "artifacts" / entries[0]["path"]
    return Artifact(key=entries[0]["key"], path=folder, record=json.loads((folder / "record.json").read_text()))


def _model_and_checkpoints(config):
    from generator.models.fashion_cnn import build_fashion_cnn

    t = _artifact(config, "training")
    model = build_fashion_cnn()
    model.load_state_dict(torch.load(t.file("weights"), weights_only=True))
    cks = torch.load(t.file("checkpoints"), weights_only=True)
    return model.eval(), [(c["state_dict"], c["learning_rate"]) for c in cks]


def _inputs(images: np.ndarray) -> torch.Tensor:
    from generator.models.fashion_cnn import FASHION_MEAN, FASHION_STD

    return (torch.from_numpy(images).float()[:, None] / 255.0 - FASHION_MEAN[0]) / FASHION_STD[0]


def _pool(record):
    """The pool rows, recomputed from the seed exactly as documented: the stratified subset."""
    from generator.pipeline.stages.data_common import stratified_subset

    train_x, train_y = fake_images(300, 1)
    idx = stratified_subset(train_y.astype(np.int64), 200, 0)
    assert record["split"]["train_used"] == len(idx) and record["split"]["train_total"] == 300
    return train_x[idx], train_y[idx].astype(np.int64), idx


def test_stratified_subset_keeps_class_shares():
    from generator.pipeline.stages.data_common import stratified_subset

    y = np.repeat(np.arange(4), [100, 50, 30, 20])
    idx = stratified_subset(y, 40, 0)
    assert np.array_equal(np.bincount(y[idx]), [20, 10, 6, 4])
    assert np.all(np.diff(idx) > 0)
    assert np.array_equal(stratified_subset(y, 0, 0), np.arange(200))


def test_no_failures_and_cached_on_second_run(fashion_run):
    config, summary = fashion_run
    assert not summary.failed, summary.failed
    kinds = {c.split("/")[0] for c in summary.computed}
    assert {"data_prototypes", "data_influence", "data_surrogate"} <= kinds
    again = run_report(config, show_progress=False)
    assert not any(c.startswith("data_") for c in again.computed)
    assert {"data_prototypes", "data_influence", "data_surrogate"} <= {c.split("/")[0] for c in again.reused}


def test_prototypes_equal_recomputation(fashion_run):
    from generator.methods.data.mmd_critic import median_heuristic_bandwidth, mmd_critic

    config, _ = fashion_run
    art = _artifact(config, "data_prototypes")
    rec = art.record
    x, y, idx = _pool(rec)
    model, _ = _model_and_checkpoints(config)
    feats = {}
    h = model.relu3.register_forward_hook(lambda m, i, o: feats.update(e=o.detach()))
    with torch.no_grad():
        logits = model(_inputs(x))
    h.remove()
    E, pred = feats["e"], logits.argmax(1).numpy()
    sigma = median_heuristic_bandwidth(E, seed=0)
    assert rec["sigma"] == pytest.approx(sigma, rel=1e-6)
    for c in rec["classes"]:
        rows = np.flatnonzero(y == c["label"])
        res = mmd_critic(E[torch.as_tensor(rows)], 2, 2, sigma=sigma)
        assert [e["row"] for e in c["prototypes"]] == rows[res.prototypes].tolist()
        assert [e["row"] for e in c["criticisms"]] == rows[res.criticisms].tolist()
        assert [e["witness"] for e in c["criticisms"]] == pytest.approx(res.criticism_witness.tolist(), abs=1e-6)
        assert [e["source_index"] for e in c["prototypes"]] == idx[rows[res.prototypes]].tolist()
        assert [e["prediction"] for e in c["criticisms"]] == pred[rows[res.criticisms]].tolist()
    glob = mmd_critic(E, 3, 3, sigma=sigma)
    assert [e["row"] for e in rec["global"]["prototypes"]] == glob.prototypes.tolist()
    assert [e["row"] for e in rec["global"]["criticisms"]] == glob.criticisms.tolist()
    crits = [r for c in rec["classes"] for r in (e["row"] for e in c["criticisms"])]
    protos = [r for c in rec["classes"] for r in (e["row"] for e in c["prototypes"])]
    assert rec["rates"]["criticisms_misclassified"] == pytest.approx(np.mean(pred[crits] != y[crits]))
    assert rec["rates"]["prototypes_misclassified"] == pytest.approx(np.mean(pred[protos] != y[protos]))
    z = art.load_npz("images")
    assert np.array_equal(z["pixels"][:, :, :, 0], x[z["rows"]])


def test_influence_equals_whole_network_library_scores(fashion_run):
    """TracIn over the training checkpoints and last-layer influence functions, computed by the
    library on the whole network (not on the recorded last-layer inputs)."""
    from generator.methods.data.influence import last_layer_influence, tracin
    from generator.models.fashion_cnn import build_fashion_cnn

    config, _ = fashion_run
    art = _artifact(config, "data_influence")
    rec = art.record
    x, y, _ = _pool(rec)
    test_x, test_y = fake_images(120, 2)
    model, cks = _model_and_checkpoints(config)
    assert len(cks) == 2 and rec["methods"]["tracin"]["learning_rates"] == pytest.approx([lr for _, lr in cks])
    with torch.no_grad():
        test_pred = model(_inputs(test_x)).argmax(1).numpy()
    ok, bad = np.flatnonzero(test_pred == test_y), np.flatnonzero(test_pred != test_y)
    rows = np.concatenate([ok[:2], bad[:2]])
    assert [t["row"] for t in rec["tests"]] == rows.tolist()
    assert [t["correct"] for t in rec["tests"]] == [True] * len(ok[:2]) + [False] * len(bad[:2])
    tx, ty = _inputs(x), torch.as_tensor(y)
    ex, et = _inputs(test_x[rows]), torch.as_tensor(test_pred[rows])
    z = art.load_npz("influence")
    ref = tracin(build_fashion_cnn, cks, tx, ty, ex, et, top_k=3)
    assert z["tracin_scores"] == pytest.approx(ref.scores, rel=1e-3, abs=1e-4 * float(np.abs(ref.scores).max()))
    t = rec["methods"]["tracin"]
    assert t["helpful"] == ref.helpful.tolist() and t["harmful"] == ref.harmful.tolist()
    assert np.array(t["helpful_scores"]) == pytest.approx(ref.helpful_scores, rel=1e-3, abs=1e-6)
    whole = copy.deepcopy(model)
    for p in whole.parameters():
        p.requires_grad_(True)
    ref_if = last_layer_influence(whole, tx, ty, ex, et, damping=1e-3, top_k=3)
    f = rec["methods"]["influence_functions"]
    assert f["helpful"] == ref_if.helpful.tolist() and f["harmful"] == ref_if.harmful.tolist()
    # float32 forward passes on both sides: agree to 1e-4 of the largest score
    scale = float(np.abs(ref_if.scores).max())
    assert z["influence_functions_scores"] == pytest.approx(ref_if.scores, rel=1e-3, abs=1e-4 * scale)
    # helpful under TracIn means positive scores, under influence functions negative ones
    assert np.all(np.diff(np.array(t["helpful_scores"]), axis=1) <= 0)
    assert np.all(np.diff(np.array(f["helpful_scores"]), axis=1) >= 0)


def test_decision_set_metrics_equal_recomputation(fashion_run):
    from generator.methods.surrogates import RegionIntensityFeatures

    config, _ = fashion_run
    art = _artifact(config, "data_surrogate")
    rec, z = art.record, art.load_npz("surrogate")
    x, y, _ = _pool(rec)
    test_x, test_y = fake_images(120, 2)
    model, _ = _model_and_checkpoints(config)
    with torch.no_grad():
        test_pred = model(_inputs(test_x)).argmax(1).numpy()
        fit_pred = model(_inputs(x)).argmax(1).numpy()
    assert np.array_equal(z["y_held"], test_pred) and np.array_equal(z["label_held"], test_y)
    assert np.array_equal(z["y_fit"], fit_pred)
    # region features from the raw pixels
    reg = RegionIntensityFeatures(grid=3, quantiles=(0.25, 0.75)).fit(x)
    n_reg = reg.transform(test_x).X.shape[1]
    assert np.array_equal(z["X_held"][:, :n_reg], reg.transform(test_x).X)
    # channel features: relu2 mean-pooled, thresholds at the 0.9 quantile of the pool
    pooled = {}
    h = model.relu2.register_forward_hook(lambda m, i, o: pooled.update(a=o.detach().mean((2, 3)).numpy()))
    with torch.no_grad():
        model(_inputs(x))
        a_fit = pooled["a"]
        model(_inputs(test_x))
        a_test = pooled["a"]
    h.remove()
    chans = [f["params"]["channel"] for f in rec["features"][n_reg:]]
    assert len(chans) == 8 and chans == sorted(np.argsort(-a_fit.var(0), kind="stable")[:8].tolist())
    thr = np.quantile(a_fit[:, chans], 0.9, axis=0)
    assert np.array_equal(z["X_held"][:, n_reg:], a_test[:, chans] > thr)
    # every decision-set metric, from the rules as stored
    X, N = z["X_held"], len(test_y)
    cover = np.array([X[:, r["items"]].all(1) for r in rec["rules"]]).reshape(len(rec["rules"]), N)
    f1 = np.array([r["f1"] for r in rec["rules"]])
    labels = np.array([r["label"] for r in rec["rules"]])
    pred = np.full(N, rec["default_class"])
    for n in range(N):
        hits = np.flatnonzero(cover[:, n])
        if len(hits):
            pred[n] = labels[hits[np.argmax(f1[hits])]]
    m = rec["metrics"]["ids"]["held_out"]
    assert m["fidelity"] == pytest.approx(np.mean(pred == test_pred))
    assert m["accuracy"] == pytest.approx(np.mean(pred == test_y))
    assert m["coverage"] == pytest.approx(np.mean(cover.sum(0) >= 1))
    assert m["overlap"] == pytest.approx(np.mean(cover.sum(0) >= 2))
    assert m["n_rules"] == len(rec["rules"]) >= 1
    assert m["mean_length"] == pytest.approx(np.mean([len(r["items"]) for r in rec["rules"]]))
    for i, r in enumerate(rec["rules"]):
        covered = np.flatnonzero(cover[i])
        assert m["rule_support"][i] == pytest.approx(len(covered) / N)
        assert m["rule_precision"][i] == pytest.approx(np.mean(test_pred[covered] == r["label"]) if len(covered) else 0)
        assert r["examples"] == covered[:2].tolist()
    # the tree baseline: refit on the stored features gives the stored fidelity
    from sklearn.tree import DecisionTreeClassifier

    tree = DecisionTreeClassifier(max_depth=4, random_state=0).fit(z["X_fit"].astype(np.float32), z["y_fit"])
    assert rec["metrics"]["tree"]["held_out"]["fidelity"] == pytest.approx(
        np.mean(tree.predict(X.astype(np.float32)) == test_pred))
