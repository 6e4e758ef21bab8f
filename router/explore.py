"""Exploration: a small share of traffic is routed off-policy so the router learns about tiers
it would not pick. Deterministic per request id, so a replayed request gets the same decision,
and every pick carries its propensity for inverse-propensity weighting in retraining."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from router.base import TIERS, Tier


@dataclass(frozen=True)
class ExplorePick:
    tier: Tier
    explored: bool
    propensity: float


def _uniform(request_id: str, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}:{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def explore(request_id: str, policy_tier: Tier, rate: float) -> ExplorePick:
    """With probability `rate`, a tier drawn uniformly from all tiers; else the policy's tier.
    The propensity is the probability of the tier that came out under this mixture."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"explore rate must be in [0, 1], got {rate}")
    on_policy = (1.0 - rate) + rate / len(TIERS)
    if rate == 0.0 or _uniform(request_id, "explore") >= rate:
        return ExplorePick(policy_tier, False, on_policy)
    tier = TIERS[min(len(TIERS) - 1, int(_uniform(request_id, "tier") * len(TIERS)))]
    return ExplorePick(tier, True, on_policy if tier == policy_tier else rate / len(TIERS))
