"""Turning predicted quality and cost into one model per query, under the user's knobs.

Two policies:
- "utility" (Switchyard default): maximise quality − λ·cost. For a mean-cost budget this
  Lagrangian rule is the optimal per-query allocation given the predictions. λ is set from the
  knob through a calibration curve fitted on out-of-fold training predictions: α ∈ [0, 1] moves
  the realised mean cost log-uniformly from the cheapest (α=0) to the best-quality operating
  point (α=1); a budget picks the λ whose calibrated mean cost equals it.
- "normalized" (Avengers-Pro): maximise α·perf − (1−α)·cost over min–max normalised terms.

Knobs: allowed_models masks models; quality_floor picks the cheapest model whose predicted
quality clears the floor (the best predicted one if none does); pinned_tier restricts to one tier.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UTILITY = "utility"
NORMALIZED = "normalized"


def lagrangian_choice(quality: np.ndarray, cost: np.ndarray, lam: float, mask: np.ndarray | None = None) -> np.ndarray:
    if np.isinf(lam):
        util = -cost + 1e-9 * quality  # cheapest; quality breaks ties
    else:
        util = quality - lam * cost
    if mask is not None:
        util = np.where(mask, util, -np.inf)
    return util.argmax(axis=1)


def normalized_choice(util_q: np.ndarray, util_c: np.ndarray, alpha: float, mask: np.ndarray | None = None) -> np.ndarray:
    util = alpha * util_q - (1 - alpha) * util_c
    if mask is not None:
        util = np.where(mask, util, -np.inf)
    return util.argmax(axis=1)


def floor_choice(quality: np.ndarray, cost: np.ndarray, floor: float, mask: np.ndarray | None = None) -> np.ndarray:
    ok = quality >= floor
    if mask is not None:
        ok &= mask
        best = np.where(mask, quality, -np.inf).argmax(axis=1)
    else:
        best = quality.argmax(axis=1)
    cheapest_ok = np.where(ok, cost, np.inf).argmin(axis=1)
    return np.where(ok.any(axis=1), cheapest_ok, best)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
    return (x - lo) / np.maximum(hi - lo, 1e-12)


def lambda_grid(cost_scale: float, n: int = 240) -> np.ndarray:
    """0, a geometric ladder over the cost scale, and ∞ (= cheapest)."""
    return np.r_[0.0, np.geomspace(1e-4, 1e4, n) / cost_scale, np.inf]


@dataclass
class Calibration:
    """Realised mean cost (and quality) per knob setting on out-of-fold training predictions.

    For the utility policy `settings` are λ values (cost falls as λ grows); for the normalized
    policy they are α values (cost rises with α)."""

    settings: np.ndarray
    mean_cost: np.ndarray
    mean_quality: np.ndarray

    def monotone_cost(self, rising: bool) -> np.ndarray:
        c = self.mean_cost
        return np.maximum.accumulate(c) if rising else np.minimum.accumulate(c)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"cal_settings": self.settings, "cal_cost": self.mean_cost, "cal_quality": self.mean_quality}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> "Calibration":
        return cls(a["cal_settings"], a["cal_cost"], a["cal_quality"])


def calibrate(
    policy: str,
    quality: np.ndarray,
    cost_pred: np.ndarray,
    true_scores: np.ndarray,
    true_costs: np.ndarray,
    util_q: np.ndarray | None = None,
    util_c: np.ndarray | None = None,
) -> Calibration:
    rows = np.arange(len(quality))
    if policy == UTILITY:
        settings = lambda_grid(float(true_costs.mean(axis=0).max()))
        picks = [lagrangian_choice(quality, cost_pred, lam) for lam in settings]
    else:
        settings = np.linspace(0.0, 1.0, 201)
        picks = [normalized_choice(util_q, util_c, a) for a in settings]
    cost = np.array([true_costs[rows, p].mean() for p in picks])
    qual = np.array([true_scores[rows, p].mean() for p in picks])
    return Calibration(settings, cost, qual)


def setting_for_cost(cal: Calibration, policy: str, target_cost: float) -> float:
    """The knob setting (λ or α) whose calibrated realised mean cost is closest to target_cost."""
    if policy == UTILITY:
        cost = cal.monotone_cost(rising=False)  # non-increasing in λ
        lam = cal.settings
        if target_cost >= cost[0]:
            return 0.0
        if target_cost <= cost[-1]:
            return float("inf")
        # walk the finite grid; interpolate log λ against log cost
        finite = np.isfinite(lam) & (lam > 0)
        lc, ll = np.log(cost[finite]), np.log(lam[finite])
        # np.interp needs increasing x: reverse (cost falls as λ rises)
        return float(np.exp(np.interp(np.log(target_cost), lc[::-1], ll[::-1])))
    cost = cal.monotone_cost(rising=True)
    return float(np.interp(target_cost, cost, cal.settings))


def budget_lambda(
    quality: np.ndarray, cost: np.ndarray, budget: float, mask: np.ndarray | None = None, iters: int = 60
) -> float:
    """The smallest λ whose Lagrangian picks keep the *predicted* mean cost of this batch within
    `budget` (∞ = cheapest when even that is over budget; 0 when the best-quality picks fit).

    Used for a batch of queries that share one budget: its own predicted costs pin the spend, so
    the realised mean cost does not ride on how many expensive-looking queries the batch happens
    to hold (a fixed λ from the offline calibration does)."""
    rows = np.arange(len(quality))

    def spend(lam: float) -> float:
        return float(cost[rows, lagrangian_choice(quality, cost, lam, mask)].mean())

    if spend(0.0) <= budget:
        return 0.0
    if spend(float("inf")) >= budget:
        return float("inf")
    scale = float(np.nanmedian(np.where(mask, cost, np.nan)) if mask is not None else np.median(cost))
    lo, hi = np.log(1e-6 / scale), np.log(1e6 / scale)  # spend(e^lo) > budget ≥ spend(e^hi)
    if spend(float(np.exp(hi))) > budget:
        return float("inf")
    if spend(float(np.exp(lo))) <= budget:
        return float(np.exp(lo))
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if spend(float(np.exp(mid))) > budget:
            lo = mid
        else:
            hi = mid
    return float(np.exp(hi))


FLAT_COST_SPREAD = 1e-3


def cost_is_flat(lo: float, hi: float) -> bool:
    """The cheapest and dearest calibrated operating points cost the same (within 0.1%): e.g. every
    tier at one price. Then log-interpolating between them divides float noise by float noise,
    and a λ fitted to that noise would pick tiers by rounding error."""
    return not hi > lo * (1 + FLAT_COST_SPREAD)


def setting_for_alpha(cal: Calibration, policy: str, alpha: float) -> float:
    alpha = float(np.clip(alpha, 0.0, 1.0))
    if policy != UTILITY:
        return alpha
    if alpha >= 1.0:
        return 0.0
    if alpha <= 0.0:
        return float("inf")
    cost = cal.monotone_cost(rising=False)
    lo, hi = max(cost[-1], 1e-12), max(cost[0], 1e-12)
    if cost_is_flat(lo, hi):
        return 0.0  # every operating point costs the same: α cannot buy savings, only lose quality
    target = float(np.exp(np.log(lo) + alpha * (np.log(hi) - np.log(lo))))
    return setting_for_cost(cal, policy, target)
