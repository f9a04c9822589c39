"""Interpretable Decision Sets (Lakkaraju, Bach & Leskovec, KDD 2016) as a surrogate of a network.

A decision set is an unordered set of rules "if f1 and f2 then class c" over binary features
(:mod:`generator.methods.surrogates.features`). Candidates come from frequent itemset mining,
each itemset paired with classes; a subset ``R`` of the candidates ``S`` is chosen to maximise
the IDS objective ``sum_i lambda_i f_i(R)`` (the paper's section 3):

====  =======================================================================================
f1    ``|S| - |R|``                                   few rules
f2    ``L_max |S| - sum_{r in R} len(r)``             short rules
f3    ``N |S|^2 - sum_{r<r' in R, same class} overlap(r, r')``    little overlap within a class
f4    ``N |S|^2 - sum_{r<r' in R, other class} overlap(r, r')``   little overlap between classes
f5    ``sum_c 1[some rule in R predicts c]``          every class covered
f6    ``N |S| - sum_{r in R} |incorrect-cover(r)|``   few wrong covers (precision)
f7    ``sum_n 1[some rule in R covers n with its label]``   many correct covers (recall)
====  =======================================================================================

``overlap(r, r')`` counts examples both rules cover (distinct pairs only: a rule's overlap
with itself would just be its cover). The objective is non-negative, non-monotone and
submodular.

Optimisation (documented departure from the paper's smooth local search, whose cost grows
with ``|S|^2`` objective evaluations and which published code runs on ~50 candidates):
a greedy pass adds the candidate with the largest marginal gain while that gain is positive,
then a local search applies the best single add or remove move while it improves the
objective (the add/delete local search of Feige, Mirrokni & Vondrak 2011, without the
``(1 + eps/n^2)`` threshold; every move strictly improves, so it ends). All marginal gains of
all candidates are maintained as vectors: overlaps through per-class cover counts
``OV[itemset, class]``, new correct covers through ``U[itemset, class]``; adding or removing
a rule touches only the examples it covers. Memory: the ``itemsets x N`` boolean cover.
Thousands of candidates over 60,000 examples take seconds on a CPU.

Prediction: the covering rule with the highest F1 (on the fitting labels) decides, as in the
paper; uncovered examples get the default class, the most common label among examples no
rule covers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from generator.methods.surrogates.itemsets import frequent_itemsets, itemset_cover

__all__ = [
    "Rule",
    "CandidateRules",
    "IDSWeights",
    "DecisionSet",
    "mine_candidate_rules",
    "ids_objective",
    "fit_ids",
    "rule_set_metrics",
]


@dataclass(frozen=True)
class Rule:
    items: Tuple[int, ...]
    label: int

    def describe(self, names: Sequence[str], class_names: Optional[Sequence[str]] = None) -> str:
        cond = " and ".join(names[i] for i in self.items) if self.items else "always"
        lab = class_names[self.label] if class_names is not None else str(self.label)
        return f"if {cond} then {lab}"


@dataclass
class CandidateRules:
    """Candidate rules over ``N`` examples: ``itemsets`` with their boolean ``cover``
    (``itemsets x N``), and rules ``(item_of[r], label[r])``."""

    itemsets: List[Tuple[int, ...]]
    cover: np.ndarray
    item_of: np.ndarray
    label: np.ndarray
    n_classes: int

    def __len__(self) -> int:
        return len(self.item_of)

    def rule(self, r: int) -> Rule:
        return Rule(self.itemsets[self.item_of[r]], int(self.label[r]))

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(self.itemsets[i]) for i in self.item_of], dtype=np.int64)

    def rule_cover(self, rules: Sequence[int]) -> np.ndarray:
        return self.cover[self.item_of[np.asarray(rules, dtype=np.int64)]]


def _class_counts(cover: np.ndarray, y: np.ndarray, K: int) -> np.ndarray:
    """``(rows, K)``: how many examples of each class each row of ``cover`` covers (per-class
    column gathers: no float copy of the whole boolean matrix)."""
    out = np.zeros((cover.shape[0], K), dtype=np.int64)
    for k in range(K):
        cols = np.flatnonzero(y == k)
        if len(cols):
            out[:, k] = np.count_nonzero(cover[:, cols], axis=1)
    return out


def mine_candidate_rules(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: Optional[int] = None,
    *,
    min_support: float = 0.01,
    max_len: int = 2,
    min_precision: float = 0.3,
    min_class_count: int = 1,
    max_candidates: Optional[int] = 3000,
) -> CandidateRules:
    """Frequent itemsets of ``X`` (length 1..``max_len``, support >= ``min_support``), each
    paired with every class ``c`` whose precision ``|cover & y=c| / |cover|`` is at least
    ``min_precision`` and count at least ``min_class_count``. (The paper pairs each itemset with
    every class; rules below 50% precision can never pay for themselves when lambda6 >= lambda7,
    so dropping the weakest keeps the pool small.) If more than ``max_candidates`` remain, those
    with the most correct covers are kept."""
    X = np.asarray(X, dtype=bool)
    y = np.asarray(y, dtype=np.int64)
    K = int(n_classes if n_classes is not None else y.max() + 1)
    itemsets, _ = frequent_itemsets(X, min_support, max_len)
    cover = itemset_cover(X, itemsets)
    counts = _class_counts(cover, y, K)  # (I, K)
    tot = np.maximum(cover.sum(1), 1)
    prec = counts / tot[:, None]
    ii, cc = np.nonzero((prec >= min_precision) & (counts >= min_class_count))
    if max_candidates is not None and len(ii) > max_candidates:
        keep = np.lexsort((cc, ii, -counts[ii, cc]))[:max_candidates]
        keep.sort()
        ii, cc = ii[keep], cc[keep]
    used = np.unique(ii)
    remap = -np.ones(len(itemsets), dtype=np.int64)
    remap[used] = np.arange(len(used))
    return CandidateRules(
        itemsets=[itemsets[i] for i in used],
        cover=cover[used],
        item_of=remap[ii],
        label=cc.astype(np.int64),
        n_classes=K,
    )


@dataclass
class IDSWeights:
    """The lambdas of the IDS objective, in the order f1..f7 of the paper."""

    l1: float = 1.0
    l2: float = 1.0
    l3: float = 1.0
    l4: float = 1.0
    l5: float = 1.0
    l6: float = 1.0
    l7: float = 1.0

    @classmethod
    def scaled(cls, n: int, *, rule_cost: float = 0.005, literal_cost: float = 0.002,
               class_bonus: float = 0.01, intra_overlap: float = 0.1, inter_overlap: float = 0.5,
               incorrect: float = 1.0, correct: float = 1.0) -> "IDSWeights":
        """Defaults in units of examples: a rule must newly and correctly cover about
        ``rule_cost + len * literal_cost`` of the ``n`` examples (net of its wrong covers and
        overlaps) to be worth adding; covering a class is worth ``class_bonus * n``. An example
        covered by two rules of different classes costs half a correct cover (the F1 tie-break
        still predicts one class), one covered twice by the same class only a tenth (mere
        redundancy)."""
        return cls(rule_cost * n, literal_cost * n, intra_overlap, inter_overlap, class_bonus * n, incorrect, correct)

    def as_tuple(self) -> Tuple[float, ...]:
        return (self.l1, self.l2, self.l3, self.l4, self.l5, self.l6, self.l7)


def ids_objective(
    cands: CandidateRules, y: np.ndarray, selected: Sequence[int], weights: IDSWeights
) -> Tuple[float, Dict[str, float]]:
    """The IDS objective of a rule set, straight from the definitions (quadratic in ``|R|``;
    used to report and to check the fast optimiser)."""
    y = np.asarray(y, dtype=np.int64)
    sel = np.asarray(sorted(set(int(s) for s in selected)), dtype=np.int64)
    S, N = len(cands), len(y)
    lengths = cands.lengths
    Lmax = int(lengths.max()) if S else 0
    cov = cands.rule_cover(sel) if len(sel) else np.zeros((0, N), bool)
    lab = cands.label[sel]
    covf = cov.astype(np.float32)
    O = np.rint(covf @ covf.T).astype(np.int64)
    iu = np.triu_indices(len(sel), 1)
    same = lab[iu[0]] == lab[iu[1]]
    correct = cov & (y[None, :] == lab[:, None])
    f = {
        "f1": float(S - len(sel)),
        "f2": float(Lmax * S - lengths[sel].sum()),
        "f3": float(N * S * S - O[iu][same].sum()),
        "f4": float(N * S * S - O[iu][~same].sum()),
        "f5": float(len(np.unique(lab))),
        "f6": float(N * S - (cov & ~(y[None, :] == lab[:, None])).sum()),
        "f7": float(correct.any(0).sum()),
    }
    total = float(sum(w * f[f"f{i + 1}"] for i, w in enumerate(weights.as_tuple())))
    return total, f


class _IDSState:
    """Incrementally maintained marginal gains of every candidate (see module docstring)."""

    def __init__(self, cands: CandidateRules, y: np.ndarray, w: IDSWeights):
        self.c, self.y, self.w = cands, y, w
        K, N = cands.n_classes, len(y)
        self.K = K
        self.onehot = np.zeros((N, K), dtype=np.float32)
        self.onehot[np.arange(N), y] = 1
        self.cls_counts = _class_counts(cands.cover, y, K)  # (I, K)
        self.size = cands.cover.sum(1).astype(np.int64)  # (I,)
        it, lab = cands.item_of, cands.label
        self.correct = self.cls_counts[it, lab]  # per rule
        self.incorrect = self.size[it] - self.correct
        self.len = cands.lengths
        self.in_R = np.zeros(len(cands), dtype=bool)
        self.cc = np.zeros(N, dtype=np.int32)  # rules in R covering n with n's label
        self.OV = np.zeros((len(cands.itemsets), K), dtype=np.int64)
        self.U = self.cls_counts.copy()  # correct covers of still uncovered examples
        self.per_class = np.zeros(K, dtype=np.int64)

    def add_gains(self) -> np.ndarray:
        w, it, lab = self.w, self.c.item_of, self.c.label
        same = self.OV[it, lab]
        other = self.OV[it].sum(1) - same
        g = (-w.l1 - w.l2 * self.len - w.l3 * same - w.l4 * other
             + w.l5 * (self.per_class[lab] == 0) - w.l6 * self.incorrect + w.l7 * self.U[it, lab])
        return np.where(self.in_R, -np.inf, g.astype(np.float64))

    def remove_gains(self) -> np.ndarray:
        w, it, lab = self.w, self.c.item_of, self.c.label
        g = np.full(len(self.c), -np.inf)
        R = np.flatnonzero(self.in_R)
        if len(R) == 0:
            return g
        iR, lR = it[R], lab[R]
        same = self.OV[iR, lR] - self.size[iR]
        other = self.OV[iR].sum(1) - self.OV[iR, lR]
        only = np.array([(self.c.cover[i] & (self.y == l) & (self.cc == 1)).sum() for i, l in zip(iR, lR)])
        g[R] = (w.l1 + w.l2 * self.len[R] + w.l3 * same + w.l4 * other
                - w.l5 * (self.per_class[lR] == 1) + w.l6 * self.incorrect[R] - w.l7 * only)
        return g

    def toggle(self, r: int, add: bool) -> None:
        i, c = int(self.c.item_of[r]), int(self.c.label[r])
        idx = np.flatnonzero(self.c.cover[i])
        sign = 1 if add else -1
        self.in_R[r] = add
        self.per_class[c] += sign
        self.OV[:, c] += sign * self.c.cover[:, idx].sum(1)
        hit = idx[self.y[idx] == c]
        before = self.cc[hit].copy()
        self.cc[hit] += sign
        changed = hit[(before == 0) if add else (self.cc[hit] == 0)]
        if len(changed):
            delta = np.rint(self.c.cover[:, changed].astype(np.float32) @ self.onehot[changed]).astype(np.int64)
            self.U -= sign * delta


def fit_ids(
    cands: CandidateRules,
    y: np.ndarray,
    weights: Optional[IDSWeights] = None,
    *,
    max_rules: Optional[int] = None,
    local_search: bool = True,
    max_moves: int = 10000,
) -> "DecisionSet":
    """Choose rules by the IDS objective: greedy additions, then add/remove local search."""
    y = np.asarray(y, dtype=np.int64)
    w = weights or IDSWeights.scaled(len(y))
    st = _IDSState(cands, y, w)
    history: List[Tuple[str, int, float]] = []
    while max_rules is None or st.in_R.sum() < max_rules:
        g = st.add_gains()
        if len(g) == 0:
            break
        r = int(np.argmax(g))
        if not g[r] > 0:
            break
        st.toggle(r, True)
        history.append(("add", r, float(g[r])))
    if local_search:
        for _ in range(max_moves):
            ga = st.add_gains() if (max_rules is None or st.in_R.sum() < max_rules) else np.full(len(cands), -np.inf)
            gr = st.remove_gains()
            ra, rr = (int(np.argmax(ga)) if len(ga) else -1), (int(np.argmax(gr)) if len(gr) else -1)
            best_a = ga[ra] if ra >= 0 else -np.inf
            best_r = gr[rr] if rr >= 0 else -np.inf
            if max(best_a, best_r) <= 1e-9:
                break
            if best_r >= best_a:
                st.toggle(rr, False)
                history.append(("remove", rr, float(best_r)))
            else:
                st.toggle(ra, True)
                history.append(("add", ra, float(best_a)))
    selected = np.flatnonzero(st.in_R)
    return DecisionSet.from_selection(cands, y, selected, w, history)


@dataclass
class DecisionSet:
    rules: List[Rule]
    candidate_ids: np.ndarray
    f1_scores: np.ndarray
    default_class: int
    n_classes: int
    weights: Optional[IDSWeights] = None
    history: List[Tuple[str, int, float]] = field(default_factory=list)

    @classmethod
    def from_selection(cls, cands: CandidateRules, y: np.ndarray, selected: Sequence[int],
                       weights: Optional[IDSWeights] = None, history=()) -> "DecisionSet":
        y = np.asarray(y, dtype=np.int64)
        sel = np.asarray(sorted(int(s) for s in selected), dtype=np.int64)
        cov = cands.rule_cover(sel) if len(sel) else np.zeros((0, len(y)), bool)
        lab = cands.label[sel]
        tp = (cov & (y[None, :] == lab[:, None])).sum(1)
        prec = tp / np.maximum(cov.sum(1), 1)
        rec = tp / np.maximum(np.bincount(y, minlength=cands.n_classes)[lab], 1)
        f1 = np.where(tp > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)
        uncovered = ~cov.any(0)
        pool = y[uncovered] if uncovered.any() else y
        default = int(np.bincount(pool, minlength=cands.n_classes).argmax())
        return cls([cands.rule(r) for r in sel], sel, f1, default, cands.n_classes, weights, list(history))

    def cover(self, X: np.ndarray) -> np.ndarray:
        """Boolean ``(rules, N)``."""
        return itemset_cover(np.asarray(X, bool), [r.items for r in self.rules])

    def predict(self, X: np.ndarray, cover: Optional[np.ndarray] = None) -> np.ndarray:
        cov = self.cover(X) if cover is None else cover
        n = cov.shape[1]
        if len(self.rules) == 0:
            return np.full(n, self.default_class, dtype=np.int64)
        labels = np.array([r.label for r in self.rules], dtype=np.int64)
        score = np.where(cov, self.f1_scores[:, None], -np.inf)
        best = score.argmax(0)  # ties: the first rule (lowest candidate id)
        return np.where(cov.any(0), labels[best], self.default_class)

    def describe(self, names: Sequence[str], class_names: Optional[Sequence[str]] = None) -> List[str]:
        return [r.describe(names, class_names) for r in self.rules]


def rule_set_metrics(
    cover: np.ndarray,
    rule_labels: np.ndarray,
    rule_lengths: np.ndarray,
    pred: np.ndarray,
    y_model: np.ndarray,
    y_true: Optional[np.ndarray] = None,
    n_classes: Optional[int] = None,
) -> Dict[str, object]:
    """Fidelity (agreement with the network), accuracy (against true labels), coverage (share
    of examples some rule covers), overlap (share covered by two or more rules, and the paper's
    mean pairwise overlap ``overlap(r, r') / N``), number of rules, mean rule length, share of
    classes with a rule, and per-rule support / precision (against the network's labels)."""
    cover = np.asarray(cover, bool)
    R, N = cover.shape
    y_model = np.asarray(y_model)
    K = int(n_classes if n_classes is not None else max(int(y_model.max()), int(rule_labels.max(initial=0))) + 1)
    counts = cover.sum(0)
    if R >= 2:
        covf = cover.astype(np.float32)
        O = covf @ covf.T
        pair = float(O[np.triu_indices(R, 1)].mean() / N)
    else:
        pair = 0.0
    tp = (cover & (y_model[None, :] == np.asarray(rule_labels)[:, None])).sum(1)
    sup = cover.sum(1)
    out: Dict[str, object] = {
        "fidelity": float((pred == y_model).mean()),
        "coverage": float((counts >= 1).mean()),
        "overlap": float((counts >= 2).mean()),
        "pairwise_overlap": pair,
        "n_rules": int(R),
        "mean_length": float(np.mean(rule_lengths)) if R else 0.0,
        "class_coverage": float(len(np.unique(rule_labels)) / K) if R else 0.0,
        "rule_support": (sup / N).tolist(),
        "rule_precision": (tp / np.maximum(sup, 1)).tolist(),
    }
    if y_true is not None:
        out["accuracy"] = float((pred == np.asarray(y_true)).mean())
    return out
