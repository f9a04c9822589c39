"""The verdict thresholds of automatic findings (generator/render/verdicts.py): weak findings get
a plain verdict with their figure, good ones say so, and the numbers in the text are the inputs."""

from __future__ import annotations

import pytest

from generator.render import verdicts as v


def test_majority_rate_is_the_share_of_the_most_common_prediction():
    assert v.majority_rate([3, 3, 1, 3, 0]) == pytest.approx(0.6)
    assert v.majority_rate([]) == 0.0


def test_a_51_percent_decision_set_does_not_describe_the_network():
    # the default report's numbers: fidelity 51.2%, 10 classes (majority 10.5%), tree 51.3%
    out = v.surrogate(0.512, 0.105, 0.519, {"rule list": 0.46, "tree": 0.513})
    assert out.weak and out.level == "weak"
    assert "does not describe the network" in out.text
    assert "51.2%" in out.text and "10.5%" in out.text and "51.9%" in out.text  # fidelity, majority, coverage
    assert "fare no better (best 51.3%)" in out.text


def test_high_fidelity_close_to_the_majority_rate_is_weak_too():
    # 85% agreement is worthless when the network answers one class 80% of the time
    out = v.surrogate(0.85, 0.80, 0.9)
    assert out.weak and "does not describe" in out.text


@pytest.mark.parametrize("fidelity, level", [(0.69, "weak"), (0.70, "partial"), (0.89, "partial"), (0.90, "good"),
                                             (0.97, "good")])
def test_surrogate_thresholds(fidelity, level):
    assert v.surrogate(fidelity, 0.1, 0.8).level == level


def test_roughness_and_baseline_and_low_coverage_are_said():
    out = v.surrogate(0.80, 0.1, 0.3, {"tree": 0.86, "rule list": 0.7})
    assert out.level == "partial" and "one held-out image in 5" in out.text
    assert "Only 30.0% of the images are covered" in out.text
    assert "The tree baseline does better (86.0%)" in out.text
    assert "baseline" not in v.surrogate(0.80, 0.1, 0.9, {"tree": 0.81}).text  # within 2 points: not said


@pytest.mark.parametrize("error, level, words", [
    (0.63, "weak", "leave most of the activation unexplained"),
    (0.51, "weak", "leave most of the activation unexplained"),
    (0.5, "partial", "sizeable part"),
    (0.3, "partial", "sizeable part"),
    (0.25, "good", "reconstruct most of the activation"),
    (0.05, "good", "reconstruct most of the activation")])
def test_nmf_verdict(error, level, words):
    out = v.nmf(error, 6)
    assert out.level == level and words in out.text
    assert f"Relative error {error:.2f}" in out.text and f"{100 * error:.0f}% of the activation's size" in out.text
    assert "6 groups" in out.text


def test_dictionary_and_ranking_verdicts():
    assert v.dictionary(0.3, 8).weak and "30.0%" in v.dictionary(0.3, 8).text
    assert v.dictionary(0.6, 8).level == "partial" and v.dictionary(0.85, 8).level == "good"
    spread = v.ranking(1.0, 10.0, 6, 112)
    assert spread.weak and "10.0% of the net total +10" in spread.text and "112 channels" in spread.text
    assert v.ranking(2.6, 1.27, 6, 112).level == "partial"  # more than the whole: opposing channels cancel
    assert v.ranking(5.0, 10.0, 6, 112).level == "good"
    assert v.ranking(1.0, -0.5, 6, 112).weak  # net evidence against the class


def test_share_text_names_the_total():
    assert v.share_text(436, 1020) == "43% of +1.02e+03"
    assert v.share_text(-22, 532) == "-4% of +532"
    assert v.share_text(1, 0) == ""
