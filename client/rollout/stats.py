"""The statistics of the promotion gate: Wilson score intervals and McNemar's test.

Standard library only (math.erfc, math.comb), so the client stays free of scipy.

- Wilson (1927) score interval for a binomial proportion: unlike the normal approximation it
  stays inside [0, 1] and keeps its coverage near 0 and 1 (Newcombe 1998, method 3).
- McNemar (1947) on paired predictions: only the discordant images count, b (stable right,
  canary wrong) and c (stable wrong, canary right). Below EXACT_BELOW discordant pairs the
  two-sided exact binomial test (b ~ Binomial(b + c, 1/2)); from there on the chi-square
  statistic with Edwards' continuity correction, (|b - c| - 1)^2 / (b + c), one degree of freedom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

# Discordant pairs below which the exact test is used: the chi-square approximation is poor for
# small b + c (a rule of thumb since Edwards 1948 is b + c < 25).
EXACT_BELOW = 25


def z_value(confidence: float) -> float:
    """The two-sided standard normal quantile: 1.959964 for 0.95."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), not {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of successes/trials; (0.0, 1.0) for no trials."""
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")
    if trials == 0:
        return 0.0, 1.0
    z = z_value(confidence)
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    # Exactly 0 and 1 at the ends (the formula gives them up to rounding).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class McNemar:
    stable_only: int  # b: images stable got right and canary wrong
    canary_only: int  # c: images canary got right and stable wrong
    method: str  # "exact binomial", "chi-square (continuity corrected)" or "none: ..."
    statistic: float | None  # the chi-square value; None for the exact test
    p_value: float

    @property
    def discordant(self) -> int:
        return self.stable_only + self.canary_only


def exact_binomial_p(b: int, c: int) -> float:
    """Two-sided exact p-value of b against Binomial(b + c, 1/2): 2 P(X <= min(b, c)), at most 1."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2.0 * tail / 2.0**n)


def chi_square_p(statistic: float) -> float:
    """Upper tail of the chi-square distribution with one degree of freedom."""
    return math.erfc(math.sqrt(max(statistic, 0.0) / 2.0))


def mcnemar(stable_correct: list[bool], canary_correct: list[bool]) -> McNemar:
    """McNemar's test on paired outcomes (the same images, in the same order)."""
    if len(stable_correct) != len(canary_correct):
        raise ValueError("McNemar's test needs the same images for both models")
    b = sum(1 for s, c in zip(stable_correct, canary_correct, strict=True) if s and not c)
    c = sum(1 for s, k in zip(stable_correct, canary_correct, strict=True) if k and not s)
    return mcnemar_counts(b, c)


def mcnemar_counts(b: int, c: int) -> McNemar:
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b} and {c}")
    if b + c == 0:
        return McNemar(b, c, "none: no image told them apart", None, 1.0)
    if b + c < EXACT_BELOW:
        return McNemar(b, c, "exact binomial", None, exact_binomial_p(b, c))
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    return McNemar(b, c, "chi-square (continuity corrected)", statistic, chi_square_p(statistic))
