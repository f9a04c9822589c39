"""The concept tests' statistics against scipy (where installed) and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from generator.methods.concepts.stats import adjust_p, betainc, normal_two_sided_p, t_test, t_two_sided_p


def test_holm_and_bonferroni_by_hand():
    p = [0.01, 0.04, 0.03, None, 0.005]
    # m = 4 tests; sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 -> 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    assert adjust_p(p, "holm") == pytest.approx([0.03, 0.06, 0.06, None, 0.02]) or \
        adjust_p(p, "holm")[3] is None
    holm = adjust_p(p, "holm")
    assert holm[3] is None
    assert [holm[i] for i in (0, 1, 2, 4)] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    bonf = adjust_p(p, "bonferroni")
    assert [bonf[i] for i in (0, 1, 2, 4)] == pytest.approx([0.04, 0.16, 0.12, 0.02])


def test_t_of_zero_and_infinite():
    assert t_two_sided_p(0.0, 7) == pytest.approx(1.0)
    assert t_two_sided_p(math.inf, 7) == 0.0
    # df = 1 is the Cauchy distribution: P(|T| >= 1) = 1/2
    assert t_two_sided_p(1.0, 1) == pytest.approx(0.5, abs=1e-12)
    assert normal_two_sided_p(1.959963984540054) == pytest.approx(0.05, abs=1e-12)


def test_constant_samples_are_decided_without_nan():
    assert t_test([1.0, 1.0, 1.0], [1.0, 1.0]).p == 1.0
    assert t_test([1.0, 1.0, 1.0], [0.0, 0.0]).p == 0.0


def test_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    special = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(0)
    for a, b, x in [(0.5, 0.5, 0.3), (2.0, 3.0, 0.9), (10.0, 0.5, 0.99), (25.0, 40.0, 0.4), (0.7, 12.0, 0.01)]:
        assert betainc(a, b, x) == pytest.approx(float(special.betainc(a, b, x)), rel=1e-10, abs=1e-14)
    for t, df in [(0.3, 3), (2.1, 9.5), (-4.0, 30), (8.0, 2.2), (1.0, 120)]:
        assert t_two_sided_p(t, df) == pytest.approx(float(2 * stats.t.sf(abs(t), df)), rel=1e-9, abs=1e-15)
    for n1, n2, shift in [(10, 10, 0.0), (20, 13, 0.7), (50, 50, 0.2), (5, 30, 1.5)]:
        a, b = rng.normal(shift, 1.0, n1), rng.normal(0, 2.0, n2)
        for equal in (False, True):
            ours = t_test(a.tolist(), b.tolist(), equal_var=equal)
            ref = stats.ttest_ind(a, b, equal_var=equal)
            assert ours.t == pytest.approx(float(ref.statistic), rel=1e-10)
            assert ours.p == pytest.approx(float(ref.pvalue), rel=1e-8, abs=1e-15)
