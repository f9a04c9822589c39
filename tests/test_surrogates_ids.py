"""Decision-set surrogates: itemset mining, the IDS objective and optimiser, metrics, baselines.

Every reported number is recomputed here from the rules with plain loops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from generator.methods.surrogates import (
    IDSWeights,
    fit_ids,
    fit_rule_list,
    fit_tree_surrogate,
    frequent_itemsets,
    ids_objective,
    mine_candidate_rules,
    rule_set_metrics,
)
from generator.methods.surrogates.ids import DecisionSet, _IDSState


def planted(N=3000, seed=0, noise=0.05):
    """Binary features (6 base features and their negations) and labels from planted rules."""
    rng = np.random.default_rng(seed)
    B = rng.random((N, 6)) < 0.35
    X = np.concatenate([B, ~B], 1)
    y = np.full(N, 3)
    y[B[:, 0] & B[:, 1]] = 0
    y[(y == 3) & B[:, 2]] = 1
    y[(y == 3) & B[:, 3] & ~B[:, 4]] = 2
    flip = rng.random(N) < noise
    y[flip] = rng.integers(0, 4, flip.sum())
    names = [f"f{i}" for i in range(6)] + [f"not f{i}" for i in range(6)]
    return X, y, names


# ---------------------------------------------------------------------------------------
# itemsets
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("min_support", [0.1, 0.2, 5])
@pytest.mark.parametrize("max_len", [1, 2, 3])
def test_frequent_itemsets_equal_brute_force(min_support, max_len):
    rng = np.random.default_rng(7)
    X = rng.random((60, 7)) < rng.uniform(0.2, 0.7, 7)
    got, sup = frequent_itemsets(X, min_support, max_len, chunk=3)
    mc = min_support if min_support >= 1 else int(np.ceil(min_support * 60))
    want = {}
    for k in range(1, max_len + 1):
        for comb in itertools.combinations(range(7), k):
            s = int(np.all(X[:, list(comb)], axis=1).sum())
            if s >= mc:
                want[comb] = s
    assert dict(zip(got, sup.tolist())) == want
    assert len(got) == len(set(got))
    assert got == sorted(got, key=lambda t: (len(t), t))


# ---------------------------------------------------------------------------------------
# objective and optimiser
# ---------------------------------------------------------------------------------------
def _objective_by_loops(cands, y, sel, w):
    """The paper's f1..f7, one loop per definition."""
    N, S = len(y), len(cands)
    rules = [cands.rule(r) for r in sel]
    covs = [np.all(cands_X[:, list(r.items)], axis=1) for r in rules]
    Lmax = max(len(cands.rule(r).items) for r in range(S))
    f1 = S - len(rules)
    f2 = Lmax * S - sum(len(r.items) for r in rules)
    intra = inter = 0
    for a in range(len(rules)):
        for b in range(a + 1, len(rules)):
            ov = int((covs[a] & covs[b]).sum())
            if rules[a].label == rules[b].label:
                intra += ov
            else:
                inter += ov
    f3, f4 = N * S * S - intra, N * S * S - inter
    f5 = len({r.label for r in rules})
    f6 = N * S - sum(int((c & (y != r.label)).sum()) for r, c in zip(rules, covs))
    f7 = sum(1 for n in range(N) if any(c[n] and y[n] == r.label for r, c in zip(rules, covs)))
    return sum(l * f for l, f in zip(w.as_tuple(), (f1, f2, f3, f4, f5, f6, f7)))


cands_X = None


@pytest.fixture(scope="module")
def problem():
    global cands_X
    X, y, names = planted()
    cands_X = X
    cands = mine_candidate_rules(X, y, 4, min_support=0.02, max_len=2, min_precision=0.0)
    return X, y, names, cands


def test_objective_matches_loops(problem):
    X, y, names, cands = problem
    w = IDSWeights(1.5, 2.0, 0.5, 1.0, 30.0, 1.0, 1.2)
    rng = np.random.default_rng(0)
    for size in (0, 1, 3, 7):
        sel = rng.choice(len(cands), size, replace=False)
        assert ids_objective(cands, y, sel, w)[0] == pytest.approx(_objective_by_loops(cands, y, sel, w), rel=1e-12)


def test_incremental_gains_equal_objective_differences(problem):
    """The vectorised add/remove gains of the optimiser are exact objective differences."""
    X, y, names, cands = problem
    w = IDSWeights.scaled(len(y))
    st = _IDSState(cands, y, w)
    rng = np.random.default_rng(1)
    R = list(rng.choice(len(cands), 6, replace=False))
    for r in R:
        st.toggle(int(r), True)
    st.toggle(int(R[2]), False)  # removals must restore the state exactly
    R.pop(2)
    base = ids_objective(cands, y, R, w)[0]
    ga, gr = st.add_gains(), st.remove_gains()
    for r in rng.choice([c for c in range(len(cands)) if c not in R], 25, replace=False):
        assert ga[r] == pytest.approx(ids_objective(cands, y, R + [int(r)], w)[0] - base, abs=1e-6)
    for r in R:
        assert gr[r] == pytest.approx(ids_objective(cands, y, [q for q in R if q != r], w)[0] - base, abs=1e-6)
    assert np.isneginf(ga[R]).all()


def test_chosen_set_beats_random_and_greedy_baselines(problem):
    X, y, names, cands = problem
    w = IDSWeights.scaled(len(y))
    ds = fit_ids(cands, y, w)
    best = ids_objective(cands, y, ds.candidate_ids, w)[0]
    assert best == pytest.approx(_objective_by_loops(cands, y, ds.candidate_ids, w), rel=1e-12)
    rng = np.random.default_rng(2)
    for size in (1, 2, len(ds.rules), 2 * len(ds.rules), 10):
        for _ in range(10):
            sel = rng.choice(len(cands), size, replace=False)
            assert best >= ids_objective(cands, y, sel, w)[0]
    # greedy baselines: the top rules by correct covers, and the greedy pass alone
    correct = np.array([(np.all(X[:, list(cands.rule(r).items)], 1) & (y == cands.label[r])).sum()
                        for r in range(len(cands))])
    for k in (1, 2, len(ds.rules), 8):
        assert best >= ids_objective(cands, y, np.argsort(-correct)[:k], w)[0]
    greedy = fit_ids(cands, y, w, local_search=False)
    assert best >= ids_objective(cands, y, greedy.candidate_ids, w)[0]
    # the planted structure is found
    assert {("f0", "f1", 0), ("f2", 1)} <= {tuple(names[i] for i in r.items) + (r.label,) for r in ds.rules}
    assert (ds.predict(X) == y).mean() > 0.85


def test_max_rules_is_respected(problem):
    X, y, names, cands = problem
    assert len(fit_ids(cands, y, max_rules=1).rules) == 1


def _predict_by_loops(ds: DecisionSet, X, y_fit, X_fit=None):
    """Prediction from the definition: the covering rule with the highest F1 on the fitting
    labels, first on ties; else the majority label of uncovered fitting examples."""
    rules = ds.rules
    X_fit = X if X_fit is None else X_fit
    cov_fit = [np.all(X_fit[:, list(r.items)], axis=1) for r in rules]
    cov = [np.all(X[:, list(r.items)], axis=1) for r in rules]
    f1 = []
    for r, c in zip(rules, cov_fit):
        tp = int((c & (y_fit == r.label)).sum())
        p = tp / max(int(c.sum()), 1)
        rc = tp / max(int((y_fit == r.label).sum()), 1)
        f1.append(0.0 if tp == 0 else 2 * p * rc / (p + rc))
    unc = ~np.any(cov_fit, axis=0) if rules else np.ones(len(X_fit), bool)
    default = int(np.bincount(y_fit[unc] if unc.any() else y_fit, minlength=ds.n_classes).argmax())
    out = []
    for n in range(len(X)):
        best, lab = -1.0, default
        for r, c, f in zip(rules, cov, f1):
            if c[n] and f > best:
                best, lab = f, r.label
        out.append(lab)
    return np.array(out), cov


def test_every_metric_recomputed_independently(problem):
    X, y_net, names, cands = problem
    rng = np.random.default_rng(3)
    y_true = np.where(rng.random(len(y_net)) < 0.1, (y_net + 1) % 4, y_net)
    ds = fit_ids(cands, y_net)
    pred, cov = _predict_by_loops(ds, X, y_net)
    assert (ds.predict(X) == pred).all()
    m = rule_set_metrics(ds.cover(X), np.array([r.label for r in ds.rules]), np.array([len(r.items) for r in ds.rules]),
                         ds.predict(X), y_net, y_true, 4)
    N = len(X)
    assert m["fidelity"] == sum(pred[n] == y_net[n] for n in range(N)) / N
    assert m["accuracy"] == sum(pred[n] == y_true[n] for n in range(N)) / N
    assert m["coverage"] == sum(any(c[n] for c in cov) for n in range(N)) / N
    assert m["overlap"] == sum(sum(c[n] for c in cov) >= 2 for n in range(N)) / N
    pairs = [(a, b) for a in range(len(cov)) for b in range(a + 1, len(cov))]
    assert m["pairwise_overlap"] == pytest.approx(np.mean([(cov[a] & cov[b]).sum() / N for a, b in pairs])
                                                  if pairs else 0.0)
    assert m["n_rules"] == len(ds.rules)
    assert m["mean_length"] == pytest.approx(sum(len(r.items) for r in ds.rules) / len(ds.rules))
    assert m["class_coverage"] == len({r.label for r in ds.rules}) / 4
    for r, c, s, p in zip(ds.rules, cov, m["rule_support"], m["rule_precision"]):
        assert s == pytest.approx(c.sum() / N)
        assert p == pytest.approx((c & (y_net == r.label)).sum() / c.sum())
    # held-out data: same features, new examples
    X2, y2, _ = planted(1000, seed=9)
    pred2, _ = _predict_by_loops(ds, X2, y_net, X)  # the default and F1s come from the fit
    assert (ds.predict(X2) == pred2).all()


def test_tree_baseline_rules_reproduce_its_predictions(problem):
    X, y, names, cands = problem
    tree = fit_tree_surrogate(X, y, max_depth=3)
    cov = tree.leaf_cover(X)
    assert (cov.sum(0) == 1).all()  # leaves partition the data
    labels = np.array([lab for _, lab in tree.leaves])
    assert (labels[cov.argmax(0)] == tree.predict(X)).all()
    m = tree.metrics(X, y, y, 4)
    assert m["fidelity"] == (tree.predict(X) == y).mean()
    assert m["n_rules"] == len(tree.leaves) <= 8 and m["mean_length"] <= 3
    assert m["coverage"] == 1.0 and m["overlap"] == 0.0
    assert len(tree.describe(names)) == len(tree.leaves)


def test_rule_list_predicts_by_first_match(problem):
    X, y, names, cands = problem
    rl = fit_rule_list(cands, y, max_rules=6)
    assert 1 <= len(rl.rules) <= 6
    assert rl.rules[0].items == (0, 1) and rl.rules[0].label == 0  # the purest planted rule first
    pred = []
    for n in range(len(X)):
        lab = rl.default_class
        for r in rl.rules:
            if all(X[n, f] for f in r.items):
                lab = r.label
                break
        pred.append(lab)
    assert (rl.predict(X) == np.array(pred)).all()
    m = rl.metrics(X, y, y, 4)
    assert m["fidelity"] == (np.array(pred) == y).mean() > 0.8
    assert rl.describe(names)[-1].startswith("else ")
