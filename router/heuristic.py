"""A transparent, untrained router: the fallback when no fitted artifact is available.

Difficulty is a weighted sum of real features of the query (length, math and code markers,
multi-step wording); the tier follows from two thresholds that α shifts. The cluster is the
nearest of a fixed set of seeded random directions in embedding space, i.e. a coarse
locality-sensitive hash of the query's meaning, stable across restarts.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from router.base import TIERS, Knobs, RouteChoice, RoutingError

_MATH = re.compile(r"(\d+\s*[-+*/^=]\s*\d+|\bsolve\b|\bcalculate\b|\bhow many\b|\bhow much\b|\bprobability\b|\bequation\b|\$)", re.I)
_CODE = re.compile(r"(```|\bdef \w+\(|\bfunction\b|\bpython\b|\bwrite a (program|function|script)\b|\bimplement\b|\breturn\b)", re.I)
_STEPS = re.compile(r"\b(explain|why|prove|step by step|compare|derive|analy[sz]e)\b", re.I)

N_CLUSTERS = 8
# Rough per-query cost at each tier (USD), for the decision record; settings hold real prices.
TIER_COST = {"small": 0.00001, "medium": 0.00005, "large": 0.00025}


def difficulty(text: str) -> float:
    length = min(len(text) / 1500.0, 1.0)
    math = min(len(_MATH.findall(text)) / 3.0, 1.0)
    code = min(len(_CODE.findall(text)) / 2.0, 1.0)
    steps = min(len(_STEPS.findall(text)) / 2.0, 1.0)
    return 0.35 * length + 0.3 * math + 0.2 * code + 0.15 * steps


class HeuristicRouter:
    version = "heuristic-v1"

    def __init__(self, dim: int = 384, seed: int = 7):
        rng = np.random.default_rng(seed)
        directions = rng.standard_normal((N_CLUSTERS, dim)).astype(np.float32)
        self.directions = directions / np.linalg.norm(directions, axis=1, keepdims=True)

    def route(self, texts: Sequence[str], embeddings: np.ndarray, knobs: Sequence[Knobs]) -> list[RouteChoice]:
        clusters = np.argmax(embeddings @ self.directions.T, axis=1) if len(texts) else []
        choices = []
        for text, cluster, knob in zip(texts, clusters, knobs):
            if knob.pinned_tier and knob.pinned_tier not in TIERS:
                raise RoutingError(f"unknown tier {knob.pinned_tier!r}; use one of {', '.join(TIERS)}")
            score = difficulty(text)
            alpha = 0.5 if knob.alpha is None else knob.alpha
            # α=0.5 keeps the base thresholds; higher α lowers them (more large-tier traffic).
            shift = (alpha - 0.5) * 0.3
            if knob.pinned_tier:
                tier = knob.pinned_tier
            elif score >= 0.35 - shift:
                tier = "large"
            elif score >= 0.15 - shift:
                tier = "medium"
            else:
                tier = "small"
            choices.append(RouteChoice(
                model=f"local-{tier}", tier=tier, cluster=int(cluster),
                predicted_quality=0.5 + 0.4 * TIERS.index(tier) / 2 - 0.3 * score,
                predicted_cost_usd=TIER_COST[tier], scores={"difficulty": round(score, 4)},
            ))
        return choices
