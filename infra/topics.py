"""Every topic Switchyard uses: names, partitions and retention live here and nowhere else."""
from __future__ import annotations

from dataclasses import dataclass, field

from schemas.common import TIERS, Tier

WEEK_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 4
    config: dict[str, str] = field(default_factory=dict)


QUERIES = "queries"
DECISIONS = "decisions"
RESULTS = "results"
FEEDBACK = "feedback"
DLQ = "dlq"
ROUTER_MODELS = "router.models"


def work_topic(tier: Tier) -> str:
    return f"work.{tier}"


def all_topics() -> list[TopicSpec]:
    retention = {"retention.ms": str(WEEK_MS)}
    return [
        TopicSpec(QUERIES, 4, retention),
        *(TopicSpec(work_topic(t), 4, retention) for t in TIERS),
        TopicSpec(DECISIONS, 4, retention),
        TopicSpec(RESULTS, 4, retention),
        TopicSpec(FEEDBACK, 4, retention),
        TopicSpec(DLQ, 1, {"retention.ms": str(4 * WEEK_MS)}),
        # Latest router artifact per key. Tansu accepts but does not compact: readers take the
        # newest value per key themselves.
        TopicSpec(ROUTER_MODELS, 1, {"cleanup.policy": "compact"}),
    ]


def topic_name(name: str, prefix: str = "") -> str:
    return f"{prefix}{name}"
