"""Exploration: a small share of traffic is routed off-policy so the router learns about tiers
it would not pick. Deterministic per request id, so a replayed request gets the same decision,
and every pick carries its propensity for inverse-propensity weighting in retraining."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

from router.base import TIERS, Tier


@dataclass(frozen=True)
class ExplorePick:
    tier: Tier
    explored: bool
    propensity: float


def _uniform(request_id: str, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}:{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def affordable_tiers(tier_costs: dict[str, float], budget_usd: float | None, policy_tier: Tier) -> tuple[Tier, ...]:
    """The tiers exploration may draw from: all of them without a budget; with one, those whose
    predicted cost for this request fits it (the policy's own tier always, since the policy
    already answers for the budget). Exploring a tier the budget cannot pay for would spend the
    job's money on learning it never asked for."""
    if budget_usd is None or not tier_costs:
        return TIERS
    return tuple(t for t in TIERS if t == policy_tier or tier_costs.get(t, float("inf")) <= budget_usd)


def explore(request_id: str, policy_tier: Tier, rate: float, tiers: Sequence[Tier] = TIERS) -> ExplorePick:
    """With probability `rate`, a tier drawn uniformly from `tiers` (default all); else the
    policy's tier. The propensity is the probability of the tier that came out under this
    mixture."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"explore rate must be in [0, 1], got {rate}")
    tiers = tuple(tiers) or (policy_tier,)
    share = rate / len(tiers)
    on_policy = (1.0 - rate) + (share if policy_tier in tiers else 0.0)
    if rate == 0.0 or _uniform(request_id, "explore") >= rate:
        return ExplorePick(policy_tier, False, on_policy)
    tier = tiers[min(len(tiers) - 1, int(_uniform(request_id, "tier") * len(tiers)))]
    return ExplorePick(tier, True, on_policy if tier == policy_tier else share)
