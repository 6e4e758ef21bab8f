"""The contract every router honours, and the one the router stream calls.

A router is fitted offline (see `switchyard router fit`) and saved as an artifact directory;
the stream loads it once and calls `route` on micro-batches of queries.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from schemas.common import TIERS, Tier  # noqa: F401  (re-exported for router code)


class RoutingError(ValueError):
    """A query the router cannot route as asked (its knobs cannot be honoured); the stream dead-letters only this."""


@dataclass(frozen=True)
class Knobs:
    """What a caller may say about one query's trade-off. All optional; None means router default.

    alpha: 0 = cheapest, 1 = best quality (Avengers-Pro's trade-off).
    budget_usd: target mean cost per query; the router maps it to an alpha calibrated offline.
    quality_floor: minimum predicted quality in [0, 1]; the cheapest model above it wins.
    allowed_models: restrict the choice to these models (registry names).
    pinned_tier: bypass the learned choice and use this tier.
    """

    alpha: float | None = None
    budget_usd: float | None = None
    quality_floor: float | None = None
    allowed_models: tuple[str, ...] | None = None
    pinned_tier: Tier | None = None


@dataclass(frozen=True)
class RouteChoice:
    model: str
    tier: Tier
    cluster: int
    predicted_quality: float
    predicted_cost_usd: float
    scores: dict[str, float] = field(default_factory=dict)
    tier_costs: dict[str, float] = field(default_factory=dict)  # cheapest predicted cost per tier


class Router(Protocol):
    version: str

    def route(
        self, texts: Sequence[str], embeddings: np.ndarray, knobs: Sequence[Knobs]
    ) -> list[RouteChoice]:
        """One choice per text. `embeddings` is (len(texts), dim), L2-normalised MiniLM vectors."""
        ...
