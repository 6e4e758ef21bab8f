"""Quality/cost curve metrics (RouteLLM / Avengers-Pro conventions).

A curve is a set of operating points (mean cost per query, mean quality). Reading a curve at a
cost x uses its Pareto frontier (the points no other point beats on both cost and quality),
linearly interpolated between neighbouring frontier points: a router realises any mix of two of
its operating points by using one knob setting for a share of the queries and the other for the
rest, so every point on that segment is achievable. Below the cheapest point the curve has no
value (NaN, or 0 in areas); above the dearest it stays flat. Costs are reported as % of the best
single model's mean cost, qualities as % of its mean quality; the "weak" end is the cheapest
single model.

(An earlier version read a step envelope — best point costing ≤ x — which under-reads every
curve by up to one knob step: the random router, a straight line, scored APGR 0.476 instead of
0.5 with 21 points, and "Q at 5 % cost" depended on whether a knob point happened to land just
below 5 %.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Reference:
    best_quality: float
    best_cost: float
    cheap_quality: float
    cheap_cost: float


def as_arrays(points: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    return pts[:, 0], pts[:, 1]


def frontier(points) -> tuple[np.ndarray, np.ndarray]:
    """Pareto frontier: (costs, qualities), both strictly increasing."""
    cost, quality = as_arrays(points)
    keep = np.isfinite(cost) & np.isfinite(quality)
    cost, quality = cost[keep], quality[keep]
    order = np.lexsort((-quality, cost))  # by cost, best quality first among equal costs
    fc: list[float] = []
    fq: list[float] = []
    for i in order:  # a point joins when it beats every cheaper one (equal costs: the best only)
        if not fq or quality[i] > fq[-1]:
            fc.append(float(cost[i]))
            fq.append(float(quality[i]))
    return np.asarray(fc), np.asarray(fq)


def envelope(points, x: np.ndarray | float) -> np.ndarray:
    """Quality of the interpolated frontier at cost x (NaN below the cheapest point)."""
    fc, fq = frontier(points)
    x = np.atleast_1d(np.asarray(x, dtype=float))
    if not len(fc):
        return np.full(len(x), np.nan)
    vals = np.interp(x, fc, fq)
    return np.where(x >= fc[0] * (1 - 1e-9), vals, np.nan)


def quality_at_cost(points, ref: Reference, cost_fraction: float) -> float:
    """% of the best single model's quality reachable at ≤ cost_fraction of its cost (NaN: none)."""
    q = envelope(points, cost_fraction * ref.best_cost)[0]
    return float(100 * q / ref.best_quality)


def cost_to_reach(points, ref: Reference, quality_fraction: float) -> float:
    """Lowest cost (% of best single's) at which the interpolated frontier reaches
    quality_fraction × best quality (NaN: never)."""
    fc, fq = frontier(points)
    target = quality_fraction * ref.best_quality - 1e-12
    ok = np.flatnonzero(fq >= target)
    if not len(ok):
        return float("nan")
    i = int(ok[0])
    if i == 0:
        c = fc[0]
    else:
        c = fc[i - 1] + (target - fq[i - 1]) / (fq[i] - fq[i - 1]) * (fc[i] - fc[i - 1])
    return float(100 * c / ref.best_cost)


def max_quality(points, ref: Reference) -> float:
    return float(100 * as_arrays(points)[1].max() / ref.best_quality)


def _cost_grid(ref: Reference, n: int = 1001) -> np.ndarray:
    return np.linspace(ref.cheap_cost, ref.best_cost, n)


def apgr(points, ref: Reference) -> float:
    """Average performance gap recovered over cost ∈ [cheapest, best single]:
    mean of (envelope − q_cheap) / (q_best − q_cheap); 0 where the curve has no point yet."""
    gap = ref.best_quality - ref.cheap_quality
    if gap <= 0:
        return float("nan")
    env = envelope(points, _cost_grid(ref))
    pgr = np.where(np.isnan(env), 0.0, (env - ref.cheap_quality) / gap)
    return float(pgr.mean())


def cpt(points, ref: Reference, gap_fraction: float) -> float:
    """Cost (% of best single's) needed to recover gap_fraction of the cheap→best quality gap."""
    target = ref.cheap_quality + gap_fraction * (ref.best_quality - ref.cheap_quality)
    return cost_to_reach(points, ref, target / ref.best_quality)


def area(points, ref: Reference, log_scale: bool = False, n: int = 1001) -> float:
    """Mean envelope quality (as % of best single) over cost ∈ [cheapest, best single]
    (linear or log-spaced grid); 0 where the curve has no point yet."""
    if log_scale:
        grid = np.geomspace(max(ref.cheap_cost, 1e-3 * ref.best_cost), ref.best_cost, n)
    else:
        grid = _cost_grid(ref, n)
    env = envelope(points, grid)
    return float(100 * np.nan_to_num(env, nan=0.0).mean() / ref.best_quality)


def curve_metrics(points, ref: Reference) -> dict[str, float]:
    return {
        "q_at_5pct_cost": quality_at_cost(points, ref, 0.05),
        "q_at_25pct_cost": quality_at_cost(points, ref, 0.25),
        "cost_parity": cost_to_reach(points, ref, 1.0),
        "cost_95pct": cost_to_reach(points, ref, 0.95),
        "max_quality": max_quality(points, ref),
        "apgr": apgr(points, ref),
        "cpt50": cpt(points, ref, 0.5),
        "cpt80": cpt(points, ref, 0.8),
        "auc": area(points, ref),
        "auc_log": area(points, ref, log_scale=True),
    }


METRIC_LABELS = {
    "q_at_5pct_cost": "Q@5%cost",
    "q_at_25pct_cost": "Q@25%cost",
    "cost_parity": "cost@parity",
    "cost_95pct": "cost@95%",
    "max_quality": "maxQ",
    "apgr": "APGR",
    "cpt50": "CPT50",
    "cpt80": "CPT80",
    "auc": "AUC",
    "auc_log": "AUClog",
}
