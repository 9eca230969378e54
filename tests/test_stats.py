"""purejaxrl.stats against hand computations and against scipy where they overlap."""

import numpy as np
import pytest
from scipy import stats as st

from purejaxrl import stats as S


def test_aggregates_by_hand():
    x = np.arange(1.0, 9.0)  # 8 runs, one task
    assert S.aggregate_mean(x) == 4.5
    assert S.aggregate_median(x) == 4.5
    assert S.aggregate_iqm(x) == pytest.approx((3 + 4 + 5 + 6) / 4)  # the middle half
    assert S.aggregate_iqm(np.array([0.0, 0.0, 0.0, 100.0])) == 0.0  # an outlier run is trimmed
    # two tasks of 4 runs: per-task means 2.5 and 25; the median of two task means is their mean
    m = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
    assert S.aggregate_mean(m) == pytest.approx((2.5 + 25) / 2)
    assert S.aggregate_median(m) == pytest.approx((2.5 + 25) / 2)
    # pooled 8 scores 1,2,3,4,10,20,30,40: trimming 2 from each end leaves 3,4,10,20
    assert S.aggregate_iqm(m) == pytest.approx((3 + 4 + 10 + 20) / 4)
    assert S.optimality_gap(np.array([0.5, 1.5, 1.0, 0.0])) == pytest.approx(1 - (0.5 + 1 + 1 + 0) / 4)
    assert S.optimality_gap(np.array([3.0, 5.0]), gamma=4.0) == pytest.approx(4 - 3.5)


def test_aggregates_take_a_batch_axis():
    rng = np.random.default_rng(0)
    b = rng.normal(size=(5, 6, 3))
    for f in (S.aggregate_mean, S.aggregate_median, S.aggregate_iqm, S.optimality_gap):
        np.testing.assert_allclose(f(b), [f(x) for x in b])


def test_probability_of_improvement_by_hand():
    x, y = np.array([1.0, 2.0]), np.array([1.5, 0.5])
    assert S.probability_of_improvement(x, y) == pytest.approx(3 / 4)  # 1>0.5, 2>1.5, 2>0.5
    assert S.probability_of_improvement(y, x) == pytest.approx(1 / 4)
    assert S.probability_of_improvement(np.ones(3), np.ones(2)) == 0.5  # ties count half
    # per task, then averaged: task 1 all of X above, task 2 all below
    assert S.probability_of_improvement(np.array([[2.0, 0.0]]), np.array([[1.0, 1.0]])) == 0.5
    # the Mann–Whitney U statistic over n·m pairs is the same number
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 5, 7).astype(float), rng.integers(0, 5, 9).astype(float)
    u = st.mannwhitneyu(a, b).statistic
    assert S.probability_of_improvement(a, b) == pytest.approx(u / (7 * 9))


def test_stratified_bootstrap_resamples_within_each_task():
    s = np.array([[0.0, 100.0], [1.0, 101.0], [2.0, 102.0]])
    r = S.stratified_resample(s, 500, np.random.default_rng(0))
    assert r.shape == (500, 3, 2)
    assert set(np.unique(r[..., 0])) <= {0.0, 1.0, 2.0} and set(np.unique(r[..., 1])) <= {100.0, 101.0, 102.0}
    assert len(np.unique(r[..., 0])) == 3  # every run appears somewhere


def test_percentile_interval_matches_scipy_bootstrap():
    x = np.random.default_rng(2).normal(3.0, 1.0, 12)
    pts, ivs = S.get_interval_estimates({"a": x}, S.aggregate_mean, reps=100_000, method="percentile")
    ref = st.bootstrap((x,), np.mean, n_resamples=100_000, method="percentile", random_state=3).confidence_interval
    assert pts["a"] == pytest.approx(x.mean())
    np.testing.assert_allclose(ivs["a"].reshape(-1), [ref.low, ref.high], atol=0.02)


def test_expanded_interval_is_wider_for_few_seeds_and_converges_to_percentile():
    lo, hi = S._quantile_levels(0.05, 3, "expanded")
    assert lo < 0.01 and hi > 0.99  # t with 2 degrees of freedom, expanded by sqrt(3/2)
    z = np.sqrt(3 / 2) * st.t.ppf(0.975, 2)
    assert lo == pytest.approx(st.norm.cdf(-z))
    lo_big, hi_big = S._quantile_levels(0.05, 10_000, "expanded")
    assert lo_big == pytest.approx(0.025, abs=2e-4) and hi_big == pytest.approx(0.975, abs=2e-4)
    x = np.array([1.0, 2.0, 4.0])
    _, pct = S.get_interval_estimates({"a": x}, S.aggregate_mean, reps=20_000, method="percentile")
    _, exp = S.get_interval_estimates({"a": x}, S.aggregate_mean, reps=20_000, method="expanded")
    assert exp["a"][0] <= pct["a"][0] and exp["a"][1] >= pct["a"][1]


def test_t_intervals_match_scipy():
    d = np.array([0.3, -0.1, 0.5, 0.2])
    r = S.mean_interval(d, method="t")
    ref = st.t.interval(0.95, 3, loc=d.mean(), scale=st.sem(d))
    np.testing.assert_allclose(r["ci"], ref)
    a, b = np.array([1.0, 2.0, 3.0, 5.0]), np.array([0.5, 2.5, 2.0, 3.0])
    p = S.paired_difference(a, b)
    np.testing.assert_allclose(p["ci"], st.t.interval(0.95, 3, loc=(a - b).mean(), scale=st.sem(a - b)))
    assert p["per_seed"] == [0.5, -0.5, 1.0, 2.0]
    w = S.unpaired_difference(a, b, method="t")
    ref = st.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    np.testing.assert_allclose(w["ci"], [ref.low, ref.high])


def test_paired_difference_needs_common_seeds():
    with pytest.raises(ValueError, match="same seeds"):
        S.paired_difference(np.ones(3), np.ones(4))


def test_probability_of_improvement_interval_and_performance_profile():
    x, y = np.array([5.0, 6.0, 7.0, 8.0]), np.array([1.0, 2.0, 3.0, 4.0])
    r = S.probability_of_improvement_interval(x, y, reps=2000)
    assert r["estimate"] == 1.0 and r["ci"] == [1.0, 1.0]  # every resample keeps X above Y (see the coverage test)
    one = S.probability_of_improvement_interval([2.0], [1.0])
    assert one["estimate"] == 1.0 and np.isnan(one["ci"]).all()  # one run has no spread to resample
    taus, frac, band = S.performance_profile(np.array([1.0, 2.0, 3.0, 4.0]), [0.0, 2.5, 5.0])
    np.testing.assert_allclose(frac, [1.0, 0.5, 0.0])
    assert band.shape == (2, 3) and np.all(band[0] <= frac + 1e-12) and np.all(band[1] >= frac - 1e-12)


def test_verdict_rule():
    assert S.verdict([0.1, 0.4], ">") == "supported"
    assert S.verdict([-0.4, -0.1], ">") == "contradicted"
    assert S.verdict([-0.1, 0.4], ">", n=3) == "inconclusive at 3 seeds"
    assert S.verdict([-0.4, -0.1], "<") == "supported"
    assert S.verdict([476.0, 480.0], ">", null=475.0) == "supported"
    assert S.verdict([0.0, 0.0], ">", n=3) == "inconclusive at 3 seeds"  # no difference at all is not support
    assert S.verdict([float("nan")] * 2, ">", n=1) == "inconclusive at 1 seed"
    # two seeds both favouring A: the bootstrap percentile interval excludes 0, the t interval does not
    d = np.array([0.2, 0.3])
    assert S.verdict(S.mean_interval(d, method="t")["ci"], ">") != "supported"
    assert S.verdict(S.mean_interval(d, method="percentile")["ci"], ">") == "supported"


def test_coverage_with_few_seeds():
    """Why verdicts on few seeds use t intervals: simulated coverage of the mean of n normal draws.
    The t interval keeps 95%; bootstrap intervals cannot be wider than the resampled range and
    under-cover badly below MIN_BOOTSTRAP_RUNS (the expanded one recovers by about 8 runs)."""
    rng = np.random.default_rng(0)

    def coverage(n, method, sims=600):
        x = rng.normal(0.0, 1.0, (sims, n))
        hits = [S.mean_interval(row, method=method, reps=2000, seed=i)["ci"] for i, row in enumerate(x)]
        return np.mean([lo <= 0.0 <= hi for lo, hi in hits])

    assert abs(coverage(3, "t") - 0.95) < 0.03
    assert coverage(3, "expanded") < 0.85 and coverage(3, "percentile") < 0.85
    assert coverage(S.MIN_BOOTSTRAP_RUNS, "expanded") > 0.91
    assert coverage(S.MIN_BOOTSTRAP_RUNS, "percentile") < coverage(S.MIN_BOOTSTRAP_RUNS, "expanded")
