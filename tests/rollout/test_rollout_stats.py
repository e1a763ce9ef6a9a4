"""The promotion gate's statistics against published and hand-computed figures."""

from __future__ import annotations

import math

import pytest

from client.rollout import stats


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I,
        # method 3 (Wilson score interval without continuity correction), 95%.
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_newcombe(successes, trials, low, high) -> None:
    got_low, got_high = stats.wilson_interval(successes, trials)
    assert got_low == pytest.approx(low, abs=5e-5)
    assert got_high == pytest.approx(high, abs=5e-5)


def test_wilson_interval_by_hand_and_at_the_edges() -> None:
    # 0/20: the upper end is z^2 / (n + z^2) = 3.841459 / 23.841459.
    z2 = stats.z_value(0.95) ** 2
    assert stats.wilson_interval(0, 20)[1] == pytest.approx(z2 / (20 + z2), rel=1e-12)
    assert stats.wilson_interval(20, 20) == (pytest.approx(20 / (20 + z2)), 1.0)
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    assert stats.z_value(0.95) == pytest.approx(1.959964, abs=1e-6)
    # Wider at 99%, and it always holds the observed proportion.
    narrow, wide = stats.wilson_interval(50, 100), stats.wilson_interval(50, 100, 0.99)
    assert wide[0] < narrow[0] < 0.5 < narrow[1] < wide[1]
    with pytest.raises(ValueError):
        stats.wilson_interval(3, 2)


def test_mcnemar_exact_binomial_for_few_discordant_pairs() -> None:
    # b = 6, c = 16, by hand: 22 discordant pairs, below
    # 25, so the exact test: 2 * P(X <= 6), X ~ Binomial(22, 1/2)
    #   = 2 * (1 + 22 + 231 + 1540 + 7315 + 26334 + 74613) / 2^22 = 2 * 110056 / 4194304.
    result = stats.mcnemar_counts(6, 16)
    assert result.method == "exact binomial" and result.statistic is None
    assert result.p_value == pytest.approx(2 * 110056 / 4194304, rel=1e-12)
    assert result.p_value == pytest.approx(0.0525, abs=1e-4)
    # Symmetric in b and c, 1 when they are equal, capped at 1.
    assert stats.mcnemar_counts(16, 6).p_value == result.p_value
    assert stats.mcnemar_counts(3, 3).p_value == 1.0
    # One discordant pair: P = 2 * 1/2 = 1; five all on one side: 2 / 32.
    assert stats.mcnemar_counts(0, 1).p_value == 1.0
    assert stats.mcnemar_counts(0, 5).p_value == pytest.approx(0.0625)
    assert stats.mcnemar_counts(0, 0).method.startswith("none")


def test_mcnemar_chi_square_with_continuity_correction_from_25_pairs() -> None:
    # b = 10, c = 30: (|10 - 30| - 1)^2 / 40 = 361 / 40 = 9.025; P(chi2_1 > 9.025) = 0.00266.
    result = stats.mcnemar_counts(10, 30)
    assert result.method == "chi-square (continuity corrected)"
    assert result.statistic == pytest.approx(9.025)
    assert result.p_value == pytest.approx(0.002663, abs=1e-6)
    # The table values of chi-square with one degree of freedom: 3.841 at 5%, 6.635 at 1%.
    assert stats.chi_square_p(3.841459) == pytest.approx(0.05, abs=1e-6)
    assert stats.chi_square_p(6.634897) == pytest.approx(0.01, abs=1e-6)
    # From 25 pairs on, exact and approximate agree to a few thousandths.
    exact = stats.exact_binomial_p(8, 17)
    assert math.isclose(stats.mcnemar_counts(8, 17).p_value, exact, abs_tol=0.01)


def test_mcnemar_counts_the_discordant_pairs_of_paired_outcomes() -> None:
    stable = [True, True, False, False, True, False]
    canary = [True, False, True, True, True, False]
    result = stats.mcnemar(stable, canary)
    assert (result.stable_only, result.canary_only, result.discordant) == (1, 2, 3)
    with pytest.raises(ValueError, match="same images"):
        stats.mcnemar([True], [True, False])
