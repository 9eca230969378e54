"""Statistics for RL results with few seeds, under rliable's names.

Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical Precipice" (NeurIPS
2021) and its library rliable: aggregate scores over ``[runs, tasks]`` score matrices, stratified
bootstrap interval estimates (runs resampled within each task), the probability of improvement
and performance profiles.  rliable itself is archived and pins old dependencies; this is an own
implementation on numpy / scipy, vectorised over bootstrap replicates.

Added for claims about two arms run on the same seeds (the platform's common random numbers):
:func:`paired_difference`, the mean over seeds of ``A − B`` with an interval that stays honest
with 2–8 seeds.  Interval methods:

* ``"percentile"``: the bootstrap percentile interval (rliable's default).
* ``"expanded"``: the expanded percentile interval (Hesterberg, 2015, "What teachers should know
  about the bootstrap"): percentiles taken at ``Φ(±√(n/(n−1)) · t_{n−1, 1−α/2})`` instead of
  ``α/2, 1−α/2``.  The default here for bootstrap intervals.
* ``"t"`` (means and paired differences only): Student's t interval, exact for normal errors.

No bootstrap interval can be wider than the range of the resampled statistic, so with few seeds
both bootstrap methods cover far less than 95%.  Simulated for the mean of n normal draws
(``tests/test_stats.py`` checks the pattern): percentile 51% / 74% / 78% / 84% / 90% at n = 2 / 3 /
4 / 5 / 8, expanded 51% / 74% / 87% / 93% / 95%, t 95% throughout.  Hence
:data:`MIN_BOOTSTRAP_RUNS`: a verdict from a bootstrap interval needs at least that many runs per
arm, and claims about a few seeds are paired differences with t intervals.

:func:`verdict` turns an interval into *supported* / *contradicted* / *inconclusive at n seeds* by
one rule: the interval excludes the null value on the claimed side, on the other side, or neither.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from scipy import stats as _st

METHODS = ("percentile", "expanded", "t")
MIN_BOOTSTRAP_RUNS = 8  # below this the expanded percentile interval covers < ~93% (see above)


# ---------------------------------------------------------------- aggregates of [runs, tasks]
def _as_scores(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim < 2 or s.shape[-2] < 1 or s.shape[-1] < 1:
        raise ValueError(f"scores must be [runs, tasks] (or [runs]); got shape {s.shape}")
    return s


def aggregate_mean(scores) -> np.ndarray:
    """Mean over tasks of the mean over runs (``[..., runs, tasks] -> [...]``)."""
    return _as_scores(scores).mean(-2).mean(-1)


def aggregate_median(scores) -> np.ndarray:
    """Median over tasks of the mean over runs (rliable's median: of per-task means)."""
    return np.median(_as_scores(scores).mean(-2), axis=-1)


def aggregate_iqm(scores) -> np.ndarray:
    """Interquartile mean of all run × task scores: the mean of the middle 50% (25% trimmed from
    each end of the pooled scores, as ``scipy.stats.trim_mean(x, 0.25)``)."""
    s = _as_scores(scores)
    flat = s.reshape(s.shape[:-2] + (-1,))
    return _st.trim_mean(flat, 0.25, axis=-1)


def optimality_gap(scores, gamma: float = 1.0) -> np.ndarray:
    """``γ − mean(min(score, γ))``: how far runs fall short of the target ``γ`` (lower is better)."""
    s = _as_scores(scores)
    flat = s.reshape(s.shape[:-2] + (-1,))
    return gamma - np.minimum(flat, gamma).mean(-1)


AGGREGATES: dict[str, Callable] = {"mean": aggregate_mean, "median": aggregate_median, "iqm": aggregate_iqm,
                                   "optimality_gap": optimality_gap}


# ---------------------------------------------------------------- bootstrap machinery
def stratified_resample(scores, reps: int, rng: np.random.Generator, task_bootstrap: bool = False) -> np.ndarray:
    """``[reps, runs, tasks]``: runs drawn with replacement *within each task* (each task keeps its
    own runs); with ``task_bootstrap`` the tasks are resampled too."""
    s = _as_scores(scores)
    n, m = s.shape
    idx = rng.integers(0, n, size=(reps, n, m))
    out = np.take_along_axis(np.broadcast_to(s, (reps, n, m)), idx, axis=1)
    if task_bootstrap:
        t = rng.integers(0, m, size=(reps, 1, m))
        out = np.take_along_axis(out, np.broadcast_to(t, (reps, n, m)), axis=2)
    return out


def _quantile_levels(alpha: float, n: int, method: str) -> tuple[float, float]:
    if method == "percentile":
        return alpha / 2, 1 - alpha / 2
    if method == "expanded":
        z = np.sqrt(n / (n - 1)) * _st.t.ppf(1 - alpha / 2, n - 1)
        return float(_st.norm.cdf(-z)), float(_st.norm.cdf(z))
    raise ValueError(f"interval method {method!r}; valid for a bootstrap: percentile, expanded")


def bootstrap_interval(replicates: np.ndarray, n: int, confidence: float = 0.95, method: str = "expanded") -> np.ndarray:
    """``[2, ...]`` lower and upper ends from bootstrap replicates (axis 0); NaN for fewer than two
    runs (one run has no spread to resample)."""
    if n < 2:
        shape = np.shape(replicates)[1:]
        return np.full((2,) + shape, np.nan)
    lo, hi = _quantile_levels(1 - confidence, n, method)
    return np.stack([np.quantile(replicates, lo, axis=0), np.quantile(replicates, hi, axis=0)])


def get_interval_estimates(score_dict: Mapping[str, np.ndarray], func: Callable, reps: int = 50_000,
                           confidence_interval_size: float = 0.95, method: str = "expanded",
                           task_bootstrap: bool = False, seed: int = 0):
    """rliable's ``get_interval_estimates``: ``(point_estimates, interval_estimates)``, each a dict
    over the keys of ``score_dict`` (``[runs, tasks]`` arrays); intervals are ``[2, ...]`` from a
    stratified bootstrap of ``func`` (``[runs, tasks] -> value or vector``).  ``func`` may take a
    leading batch axis (the aggregates here do), which evaluates all replicates at once."""
    rng = np.random.default_rng(seed)
    points, intervals = {}, {}
    for key, scores in score_dict.items():
        s = _as_scores(scores)
        points[key] = np.asarray(func(s))
        rs = stratified_resample(s, reps, rng, task_bootstrap)
        reps_vals = _apply_batched(func, rs)
        intervals[key] = bootstrap_interval(reps_vals, s.shape[0], confidence_interval_size, method)
    return points, intervals


def _apply_batched(func: Callable, batch: np.ndarray) -> np.ndarray:
    """``func`` over the leading axis: vectorised when ``func`` handles a batch axis, else a loop."""
    try:
        out = np.asarray(func(batch))
        single = np.asarray(func(batch[0]))
        if out.shape == (batch.shape[0],) + single.shape and np.allclose(out[0], single, equal_nan=True):
            return out
    except Exception:  # noqa: BLE001 - a func without batch support
        pass
    return np.stack([np.asarray(func(b)) for b in batch])


# ---------------------------------------------------------------- comparisons
def probability_of_improvement(scores_x, scores_y) -> np.ndarray:
    """P(X > Y): for each task the Mann–Whitney statistic ``P(x > y) + ½ P(x = y)`` over every pair
    of a run of X and a run of Y, averaged over tasks (``[..., runs, tasks]`` inputs)."""
    x, y = _as_scores(scores_x), _as_scores(scores_y)
    gt = (x[..., :, None, :] > y[..., None, :, :]).mean((-3, -2))
    eq = (x[..., :, None, :] == y[..., None, :, :]).mean((-3, -2))
    return (gt + 0.5 * eq).mean(-1)


def probability_of_improvement_interval(scores_x, scores_y, reps: int = 20_000, confidence: float = 0.95,
                                        method: str = "expanded", seed: int = 0) -> dict:
    """P(X > Y) and its interval: the runs of X and of Y resampled independently, within tasks."""
    x, y = _as_scores(scores_x), _as_scores(scores_y)
    rng = np.random.default_rng(seed)
    bx, by = stratified_resample(x, reps, rng), stratified_resample(y, reps, rng)
    r = probability_of_improvement(bx, by)
    lo, hi = bootstrap_interval(r, min(x.shape[0], y.shape[0]), confidence, method)
    return {"estimate": float(probability_of_improvement(x, y)), "ci": [float(lo), float(hi)],
            "n": [int(x.shape[0]), int(y.shape[0])], "method": f"stratified bootstrap ({method})", "null": 0.5}


def mean_interval(values, confidence: float = 0.95, method: str = "t", reps: int = 50_000, seed: int = 0,
                  null: float = 0.0) -> dict:
    """The mean of ``values`` (one per seed) with a ``t`` or bootstrap interval; ``null`` is the
    value a claim compares it with (recorded for :func:`verdict`)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    n = v.size
    est = float(v.mean()) if n else float("nan")
    if n < 2:
        ci = [float("nan"), float("nan")]
    elif method == "t":
        se = v.std(ddof=1) / np.sqrt(n)
        h = float(_st.t.ppf(0.5 + confidence / 2, n - 1) * se)
        ci = [est - h, est + h]
    else:
        rng = np.random.default_rng(seed)
        means = v[rng.integers(0, n, size=(reps, n))].mean(1)
        ci = [float(x) for x in bootstrap_interval(means, n, confidence, method)]
    return {"estimate": est, "ci": ci, "n": int(n), "method": method, "null": float(null)}


def paired_difference(a, b, confidence: float = 0.95, method: str = "t", reps: int = 50_000, seed: int = 0) -> dict:
    """The effect of A over B on common seeds: per seed ``d_i = mean_tasks(a_i) − mean_tasks(b_i)``
    (the same seed's evaluation keys for both arms), its mean and a ``t`` / bootstrap interval."""
    a, b = _as_scores(a), _as_scores(b)
    if a.shape != b.shape:
        raise ValueError(f"a paired difference needs the same seeds and tasks in both arms; got {a.shape} and {b.shape}")
    d = a.mean(-1) - b.mean(-1)
    out = mean_interval(d, confidence, method, reps, seed)
    out["per_seed"] = [float(x) for x in d]
    return out


def unpaired_difference(a, b, statistic: str = "mean", confidence: float = 0.95, method: str = "expanded",
                        reps: int = 50_000, seed: int = 0) -> dict:
    """``statistic(A) − statistic(B)`` for arms on different seeds (or compared as if they were):
    ``t`` is Welch's interval (``mean`` only); a bootstrap resamples each arm's runs within tasks."""
    a, b = _as_scores(a), _as_scores(b)
    f = AGGREGATES[statistic]
    est = float(f(a) - f(b))
    na, nb = a.shape[0], b.shape[0]
    if min(na, nb) < 2:
        ci = [float("nan"), float("nan")]
    elif method == "t":
        if statistic != "mean":
            raise ValueError("the t interval is for means; use method=expanded or percentile for other statistics")
        xa, xb = a.mean(-1), b.mean(-1)
        va, vb = xa.var(ddof=1) / na, xb.var(ddof=1) / nb
        se = np.sqrt(va + vb)
        dof = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1)) if se > 0 else na + nb - 2
        h = float(_st.t.ppf(0.5 + confidence / 2, dof) * se)
        ci = [est - h, est + h]
    else:
        rng = np.random.default_rng(seed)
        r = f(stratified_resample(a, reps, rng)) - f(stratified_resample(b, reps, rng))
        ci = [float(x) for x in bootstrap_interval(r, min(na, nb), confidence, method)]
    return {"estimate": est, "ci": ci, "n": [int(na), int(nb)], "method": method, "null": 0.0}


def performance_profile(scores, taus, reps: int = 2_000, confidence: float = 0.95, method: str = "percentile",
                        seed: int = 0):
    """rliable's score distribution: the fraction of runs with score > τ for each τ (averaged over
    tasks), with a stratified bootstrap band; returns ``(taus, fraction [T], interval [2, T])``."""
    s = _as_scores(scores)
    taus = np.asarray(taus, dtype=np.float64)

    def frac(x):
        return (x[..., None] > taus).mean(-3).mean(-2)

    rng = np.random.default_rng(seed)
    band = bootstrap_interval(frac(stratified_resample(s, reps, rng)), s.shape[0], confidence, method)
    return taus, frac(s), band


# ---------------------------------------------------------------- verdicts
def verdict(ci, direction: str, null: float = 0.0, n: int | None = None) -> str:
    """*supported* when the interval excludes ``null`` on the claimed side (``direction`` ``>`` or
    ``<``), *contradicted* when it excludes it on the other side, else *inconclusive at n seeds*."""
    lo, hi = (float(x) for x in ci)
    if direction not in (">", "<"):
        raise ValueError(f"direction {direction!r}; valid: > or <")
    at = "inconclusive" if n is None else f"inconclusive at {n} seed{'' if n == 1 else 's'}"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return at
    above, below = lo > null, hi < null
    if (direction == ">" and above) or (direction == "<" and below):
        return "supported"
    if (direction == ">" and below) or (direction == "<" and above):
        return "contradicted"
    return at
