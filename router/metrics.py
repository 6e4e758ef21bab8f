"""Quality/cost curve metrics (RouteLLM / Avengers-Pro conventions).

A curve is a set of operating points (mean cost per query, mean quality). Reading a curve at a
cost x means the best quality among points that cost at most x (a step envelope: no credit for
interpolating between points). Costs are reported as % of the best single model's mean cost,
qualities as % of its mean quality; the "weak" end is the cheapest single model.
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


def envelope(points, x: np.ndarray | float) -> np.ndarray:
    """Best quality at cost ≤ x (NaN where no point is that cheap)."""
    cost, quality = as_arrays(points)
    x = np.atleast_1d(np.asarray(x, dtype=float))
    ok = cost[None, :] <= x[:, None] * (1 + 1e-9)
    vals = np.where(ok, quality[None, :], -np.inf).max(axis=1)
    return np.where(np.isfinite(vals), vals, np.nan)


def quality_at_cost(points, ref: Reference, cost_fraction: float) -> float:
    """% of the best single model's quality reachable at ≤ cost_fraction of its cost (NaN: none)."""
    q = envelope(points, cost_fraction * ref.best_cost)[0]
    return float(100 * q / ref.best_quality)


def cost_to_reach(points, ref: Reference, quality_fraction: float) -> float:
    """Lowest cost (% of best single's) of a point with quality ≥ quality_fraction × best (NaN: never)."""
    cost, quality = as_arrays(points)
    ok = quality >= quality_fraction * ref.best_quality - 1e-12
    return float(100 * cost[ok].min() / ref.best_cost) if ok.any() else float("nan")


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
