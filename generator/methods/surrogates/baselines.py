"""Baselines for the decision-set surrogate, on the same binary features.

* :func:`fit_tree_surrogate`: a depth-limited CART tree (scikit-learn's
  ``DecisionTreeClassifier``); every leaf is read as one rule (the path's conditions).
* :func:`fit_rule_list`: an ordered rule list by greedy sequential covering (in the spirit of
  CN2, Clark & Niblett 1989): repeatedly take the candidate rule with the best
  Laplace-corrected precision ``(correct + 1) / (covered + K)`` on the examples not yet
  covered, among those covering at least ``min_support`` of them; the first matching rule
  predicts, the rest get the default class (the majority of what is left).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from generator.methods.surrogates.ids import CandidateRules, Rule, _class_counts, rule_set_metrics

__all__ = ["TreeSurrogate", "fit_tree_surrogate", "RuleList", "fit_rule_list"]


@dataclass
class TreeSurrogate:
    tree: object
    leaves: List[Tuple[Tuple[Tuple[int, bool], ...], int]]  # ((feature, value)...), label

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.tree.predict(np.asarray(X, dtype=np.float32)).astype(np.int64)

    def leaf_cover(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, bool)
        cov = np.ones((len(self.leaves), len(X)), dtype=bool)
        for i, (conds, _) in enumerate(self.leaves):
            for f, v in conds:
                cov[i] &= X[:, f] == v
        return cov

    def describe(self, names: Sequence[str], class_names: Optional[Sequence[str]] = None) -> List[str]:
        out = []
        for conds, lab in self.leaves:
            c = " and ".join(names[f] if v else f"not ({names[f]})" for f, v in conds) or "always"
            out.append(f"if {c} then {class_names[lab] if class_names is not None else lab}")
        return out

    def metrics(self, X, y_model, y_true=None, n_classes=None):
        cov = self.leaf_cover(X)
        labels = np.array([lab for _, lab in self.leaves], dtype=np.int64)
        lengths = np.array([len(c) for c, _ in self.leaves], dtype=np.int64)
        return rule_set_metrics(cov, labels, lengths, self.predict(X), y_model, y_true, n_classes)


def fit_tree_surrogate(X: np.ndarray, y: np.ndarray, max_depth: int = 4, seed: int = 0) -> TreeSurrogate:
    """A CART tree of depth <= ``max_depth`` fitted to the network's labels ``y``."""
    from sklearn.tree import DecisionTreeClassifier

    X = np.asarray(X, dtype=np.float32)
    tree = DecisionTreeClassifier(max_depth=max_depth, random_state=seed).fit(X, np.asarray(y))
    t = tree.tree_
    leaves = []

    def walk(node: int, path: Tuple[Tuple[int, bool], ...]):
        if t.children_left[node] == -1:
            leaves.append((path, int(tree.classes_[int(np.argmax(t.value[node][0]))])))
            return
        f = int(t.feature[node])  # binary feature: threshold 0.5, left = False
        walk(int(t.children_left[node]), path + ((f, False),))
        walk(int(t.children_right[node]), path + ((f, True),))

    walk(0, ())
    return TreeSurrogate(tree, leaves)


@dataclass
class RuleList:
    rules: List[Rule]
    candidate_ids: np.ndarray
    default_class: int
    n_classes: int

    def cover(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, bool)
        cov = np.ones((len(self.rules), len(X)), dtype=bool)
        for i, r in enumerate(self.rules):
            for f in r.items:
                cov[i] &= X[:, f]
        return cov

    def predict(self, X: np.ndarray) -> np.ndarray:
        cov = self.cover(X)
        if not len(self.rules):
            return np.full(len(X), self.default_class, dtype=np.int64)
        labels = np.array([r.label for r in self.rules], dtype=np.int64)
        first = cov.argmax(0)
        return np.where(cov.any(0), labels[first], self.default_class)

    def describe(self, names: Sequence[str], class_names: Optional[Sequence[str]] = None) -> List[str]:
        lines = [("if " if i == 0 else "else if ") + r.describe(names, class_names)[3:]
                 for i, r in enumerate(self.rules)]
        return lines + [f"else {class_names[self.default_class] if class_names is not None else self.default_class}"]

    def metrics(self, X, y_model, y_true=None, n_classes=None):
        labels = np.array([r.label for r in self.rules], dtype=np.int64)
        lengths = np.array([len(r.items) for r in self.rules], dtype=np.int64)
        return rule_set_metrics(self.cover(X), labels, lengths, self.predict(X), y_model, y_true, n_classes)


def fit_rule_list(cands: CandidateRules, y: np.ndarray, *, max_rules: int = 20, min_support: float = 0.005) -> RuleList:
    """Greedy sequential covering over the candidate itemsets (any class may be attached)."""
    y = np.asarray(y, dtype=np.int64)
    N, K = len(y), cands.n_classes
    mc = max(1, int(np.ceil(min_support * N))) if min_support < 1 else int(min_support)
    remaining = np.ones(N, dtype=bool)
    chosen: List[Rule] = []
    ids: List[int] = []
    # rules are looked up by (itemset, class) so that a chosen pair maps to a candidate id
    lookup = {(int(i), int(c)): r for r, (i, c) in enumerate(zip(cands.item_of, cands.label))}
    for _ in range(max_rules):
        idx = np.flatnonzero(remaining)
        if len(idx) == 0:
            break
        counts = _class_counts(cands.cover[:, idx], y[idx], K)  # (I, K) on what is left
        covered = counts.sum(1)
        lap = (counts.max(1) + 1) / (covered + K)
        lap[covered < mc] = -1
        i = int(np.argmax(lap))
        # stop when no rule beats simply predicting the majority of what is left
        if lap[i] <= 0 or counts[i].max() / max(covered[i], 1) <= np.bincount(y[idx], minlength=K).max() / len(idx):
            break
        c = int(counts[i].argmax())
        chosen.append(Rule(cands.itemsets[i], c))
        ids.append(lookup.get((i, c), -1))
        remaining &= ~cands.cover[i]
    rest = y[remaining] if remaining.any() else y
    default = int(np.bincount(rest, minlength=K).argmax())
    return RuleList(chosen, np.asarray(ids, dtype=np.int64), default, K)
