"""Every topic Switchyard uses: names, partitions and retention live here and nowhere else.

A deployment may share a Kafka cluster with others under a prefix; `Topics(prefix)` is the
only thing that applies it, to topic names and to consumer-group ids alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from schemas.common import TIERS, Tier

WEEK_MS = 7 * 24 * 3600 * 1000

QUERIES = "queries"
DECISIONS = "decisions"
RESULTS = "results"
FEEDBACK = "feedback"
DLQ = "dlq"
# Router versions, keyed by version: compacted on Kafka; the embedded broker does not compact,
# so readers keep the latest value per key themselves.
ROUTER_MODELS = "router.models"


def work_topic(tier: Tier) -> str:
    return f"work.{tier}"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 4
    config: dict[str, str] = field(default_factory=dict)


DEFAULT_PARTITIONS = 4


def all_topics(partitions: int = DEFAULT_PARTITIONS) -> list[TopicSpec]:
    """Base names (without a prefix) of every topic, with partitions and retention. `partitions`
    is the data topics' count (the most members of one consumer group that can share the work);
    the dead letters and router versions keep one partition (ordered, low volume)."""
    retention = {"retention.ms": str(WEEK_MS)}
    return [
        TopicSpec(QUERIES, partitions, retention),
        *(TopicSpec(work_topic(t), partitions, retention) for t in TIERS),
        TopicSpec(DECISIONS, partitions, retention),
        TopicSpec(RESULTS, partitions, retention),
        TopicSpec(FEEDBACK, partitions, retention),
        TopicSpec(DLQ, 1, {"retention.ms": str(4 * WEEK_MS)}),
        TopicSpec(ROUTER_MODELS, 1, {"cleanup.policy": "compact"}),
    ]


@dataclass(frozen=True)
class Topics:
    """The full names of every topic (and consumer group) under one prefix."""

    prefix: str = ""

    def name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    def base(self, full_name: str) -> str:
        """The base name of a full topic name (what `name` was given)."""
        return full_name.removeprefix(self.prefix)

    def group(self, base: str) -> str:
        return f"{self.prefix}{base}"

    def work(self, tier: Tier) -> str:
        return self.name(work_topic(tier))

    @property
    def queries(self) -> str:
        return self.name(QUERIES)

    @property
    def decisions(self) -> str:
        return self.name(DECISIONS)

    @property
    def results(self) -> str:
        return self.name(RESULTS)

    @property
    def feedback(self) -> str:
        return self.name(FEEDBACK)

    @property
    def dlq(self) -> str:
        return self.name(DLQ)

    @property
    def router_models(self) -> str:
        return self.name(ROUTER_MODELS)
