"""Plain verdicts on the quality figures of automatic findings (torch-free, numbers only).

Every finding a page states on its own (a decision set's rules, NMF neuron groups, a ranking of
channels, a semantic dictionary) comes with the figure that says how far it describes the
network, and with a plain sentence when that figure is weak. The thresholds live here, in one
place, so every page judges the same way and the tests pin them down.

Each function returns a :class:`Verdict`: ``level`` ("weak", "partial" or "good") and ``text``,
one sentence in plain words with the figures in it. The text is plain text: templates escape it
(``|md``) like any other string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

#: A surrogate whose held-out fidelity is under this does not describe the network: it gets
#: more than one image in three wrong.
FIDELITY_WEAK = 0.70
#: At or above this a surrogate is a faithful summary (in terms of its features).
FIDELITY_GOOD = 0.90
#: A surrogate within this many points of always answering the network's most common class
#: has learnt next to nothing, whatever its fidelity.
MAJORITY_MARGIN = 0.10
#: A baseline beating the decision set by more than this is worth saying.
BASELINE_MARGIN = 0.02
#: Under this coverage most images are decided by the default rule, not by a rule.
COVERAGE_LOW = 0.5

#: NMF relative error ||A - WH||_F / ||A||_F: over this the residual is more than half the
#: activation's size, so the groups leave most of the activation unexplained.
NMF_WEAK = 0.5
#: Under this the groups reconstruct most of the activation.
NMF_GOOD = 0.25

#: Share of a position's squared activation norm the listed channels carry: under this the
#: dictionary's few channels describe little of what fires there.
DICTIONARY_WEAK = 0.5
DICTIONARY_GOOD = 0.8

#: Share of a class's net attribution the listed supporting channels carry: under this the
#: evidence is spread over many channels and the ranking shows examples, not the explanation.
RANKING_WEAK = 0.3


@dataclass(frozen=True)
class Verdict:
    level: str  # "weak" | "partial" | "good"
    text: str

    @property
    def weak(self) -> bool:
        return self.level == "weak"


def pct(value: float) -> str:
    """0.512 -> '51.2%' (one decimal, as the pages' tables)."""
    return f"{100 * value:.1f}%"


def majority_rate(predictions: Sequence[int]) -> float:
    """Share of the most common value: what always answering the network's most frequent class
    would reach as fidelity (0 for no predictions)."""
    counts: dict = {}
    for p in predictions:
        counts[int(p)] = counts.get(int(p), 0) + 1
    return max(counts.values()) / len(predictions) if counts else 0.0


def surrogate(fidelity: float, majority: float, coverage: float,
              baselines: Optional[Mapping[str, float]] = None) -> Verdict:
    """The decision set's held-out fidelity judged against fixed thresholds, against always
    answering the network's most common class (``majority``), and against the baselines'
    fidelity (name -> fidelity on the same held-out images)."""
    parts = [f"The rules agree with the network on {pct(fidelity)} of held-out images "
             f"(always answering its most common class would agree on {pct(majority)})"]
    if fidelity < FIDELITY_WEAK or fidelity - majority < MAJORITY_MARGIN:
        level = "weak"
        parts.append("so this decision set does not describe the network: read the rules as "
                     "patterns in the features, not as the network's logic")
    elif fidelity < FIDELITY_GOOD:
        level = "partial"
        parts.append(f"so it describes the network only roughly: about one held-out image in "
                     f"{max(2, round(1 / max(1 - fidelity, 1e-9)))} is decided differently")
    else:
        level = "good"
        parts.append("so it is a faithful summary of the network's decisions, in terms of these features only")
    text = ", ".join(parts) + "."
    if coverage < COVERAGE_LOW:
        text += f" Only {pct(coverage)} of the images are covered by a rule; most get the default class."
    else:
        text += f" A rule covers {pct(coverage)} of the images; the rest get the default class."
    better = sorted(((f, name) for name, f in (baselines or {}).items() if f > fidelity + BASELINE_MARGIN),
                    reverse=True)
    if better:
        f, name = better[0]
        text += f" The {name} baseline does better ({pct(f)})."
    elif baselines:
        best = max(baselines.values())
        if best < FIDELITY_WEAK and level == "weak":
            text += (f" The baselines fare no better (best {pct(best)}): with these features no surrogate "
                     "here follows the network.")
    return Verdict(level, text)


def nmf(relative_error: float, groups: int) -> Verdict:
    """NMF neuron groups judged by the relative reconstruction error ||A - WH|| / ||A||."""
    size = f"the part the {groups} groups do not reconstruct is {100 * relative_error:.0f}% of the activation's size"
    if relative_error > NMF_WEAK:
        return Verdict("weak", f"Relative error {relative_error:.2f}: {size}, so the groups leave most of the "
                               "activation unexplained; read them as a partial view of this layer.")
    if relative_error > NMF_GOOD:
        return Verdict("partial", f"Relative error {relative_error:.2f}: {size}, so the groups leave a sizeable "
                                  "part of the activation unexplained.")
    return Verdict("good", f"Relative error {relative_error:.2f}: {size}; the groups reconstruct most of the "
                           "activation.")


def dictionary(share: float, listed: int) -> Verdict:
    """A semantic dictionary's ``listed`` channels judged by the share of the position's squared
    activation norm they carry."""
    head = f"The {listed} channels listed carry {pct(share)} of the squared activation norm at that position"
    if share < DICTIONARY_WEAK:
        return Verdict("weak", f"{head}: most of what fires there is in channels the dictionary does not show.")
    if share < DICTIONARY_GOOD:
        return Verdict("partial", f"{head}: a fair part of what fires there is in other channels.")
    return Verdict("good", f"{head}.")


def ranking(listed_sum: float, total: float, listed: int, channels: int) -> Verdict:
    """A channel ranking judged by the share of the class's net attribution (``total``, summed
    over all ``channels`` and positions) its ``listed`` supporting channels carry."""
    if total <= 0:
        return Verdict("weak", f"The class's net attribution here is {total:+.3g} (not positive): the "
                               f"{listed} supporting channels are outweighed by opposing ones, so the ranking "
                               "does not explain why the class is predicted.")
    share = listed_sum / total
    head = (f"The {listed} supporting channels listed sum to {listed_sum:+.3g}, {pct(share)} of the net "
            f"total {total:+.3g} over all {channels} channels")
    if share < RANKING_WEAK:
        return Verdict("weak", f"{head}: the evidence is spread over many channels, so the ranking shows "
                               "examples, not the explanation.")
    if share > 1:
        return Verdict("partial", f"{head}: more than the whole, because opposing channels cancel part of it.")
    return Verdict("good", f"{head}.")


def share_text(value: float, total: float) -> str:
    """'38% of +1.15e+03' (the share of a total, signed total), or '' for a zero total."""
    if total == 0:
        return ""
    return f"{100 * value / total:.0f}% of {total:+.3g}"
