"""Statistics for concept tests, written out so that no run-time dependency on scipy is needed.

* Student's and Welch's two-sample t-tests with the t distribution's CDF computed from the
  regularised incomplete beta function (a Lentz continued fraction, as in Press et al.,
  *Numerical Recipes*, 3rd ed., section 6.4); used by TCAV's test against random concepts
  (Kim et al. 2018, "Interpretability Beyond Feature Attribution: Quantitative Testing with
  Concept Activation Vectors (TCAV)", section 3.5).
* Two-sided normal p-values (``erfc``), for the Mann-Whitney approximation of the AUC test.
* Holm's step-down (Holm 1979) and Bonferroni corrections for many tests at once.

Pure Python + ``math``: the numbers are few (one test per class x concept x layer) and must be
the same on every machine. Tests compare them with ``scipy.stats`` where it is installed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Literal, Optional, Sequence

_TINY = 1e-300
_EPS = 1e-15


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    # The fraction converges fast for x < (a + 1) / (a + b + 2); otherwise use the symmetry
    # I_x(a, b) = 1 - I_{1-x}(b, a).
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2)."""
    if math.isnan(t) or df <= 0:
        return float("nan")
    if math.isinf(t):
        return 0.0
    return min(1.0, max(0.0, betainc(df / 2.0, 0.5, df / (df + t * t))))


def normal_two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z."""
    return math.erfc(abs(z) / math.sqrt(2.0))


@dataclass(frozen=True)
class TTest:
    """A two-sample t-test: statistic, degrees of freedom, two-sided p-value, and the means."""

    t: float
    df: float
    p: float
    mean_a: float
    mean_b: float


def t_test(a: Sequence[float], b: Sequence[float], *, equal_var: bool = False) -> TTest:
    """Two-sided two-sample t-test of mean(a) = mean(b): Welch's (default) or Student's.

    Degenerate samples are decided without dividing by zero: when both samples are constant
    the test has no spread to measure against, so p is 1 when the means are equal and 0 when
    they differ (every random run agrees with every other and the concept differs from all).
    """
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        raise ValueError(f"a t-test needs at least 2 values per sample (got {na} and {nb})")
    ma, mb = math.fsum(a) / na, math.fsum(b) / nb
    va = math.fsum((x - ma) ** 2 for x in a) / (na - 1)
    vb = math.fsum((x - mb) ** 2 for x in b) / (nb - 1)
    if equal_var:
        df = float(na + nb - 2)
        pooled = ((na - 1) * va + (nb - 1) * vb) / df
        se2 = pooled * (1.0 / na + 1.0 / nb)
    else:
        se2 = va / na + vb / nb
        df = se2 * se2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1)) if se2 > 0 else float(na + nb - 2)
    if se2 <= 0:
        equal = abs(ma - mb) <= 1e-12
        return TTest(0.0 if equal else math.copysign(math.inf, ma - mb), df, 1.0 if equal else 0.0, ma, mb)
    t = (ma - mb) / math.sqrt(se2)
    return TTest(t, df, t_two_sided_p(t, df), ma, mb)


Correction = Literal["holm", "bonferroni", "none"]


def adjust_p(p: Sequence[Optional[float]], method: Correction = "holm") -> List[Optional[float]]:
    """Family-wise corrected p-values (None entries are not tests and stay None).

    Holm's step-down: sort the m p-values ascending, multiply the i-th smallest (from 0) by
    m - i, make the sequence non-decreasing, cap at 1. Bonferroni: multiply each by m.
    """
    index = [i for i, v in enumerate(p) if v is not None]
    m = len(index)
    out: List[Optional[float]] = [None] * len(p)
    if method == "none":
        return [None if v is None else float(v) for v in p]
    if method == "bonferroni":
        for i in index:
            out[i] = min(1.0, float(p[i]) * m)  # type: ignore[arg-type]
        return out
    if method != "holm":
        raise ValueError(f"unknown correction {method!r} (holm, bonferroni or none)")
    order = sorted(index, key=lambda i: p[i])  # type: ignore[arg-type, return-value]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, float(p[i]) * (m - rank)))  # type: ignore[arg-type]
        out[i] = running
    return out
