"""The typed configuration the stream stages take. The composition root (`switchyard.settings`)
nests these in its one Settings object; nothing here reads the environment."""
from __future__ import annotations

from pydantic import BaseModel, Field

from infra.topics import Topics


class KafkaSettings(BaseModel):
    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    # Partitions of the data topics (queries, work.*, decisions, results, feedback) when the stack
    # or `switchyard init` creates them: the most instances of one stage that can share its work
    # (a consumer group gives each partition to one member). Topics that already exist keep theirs.
    partitions: int = Field(default=4, ge=1)
    # Embedded broker: group joins wait half the session timeout, so keep it short.
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1500

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)


class DlqLimitSettings(BaseModel):
    """When a stage stops instead of dead-lettering on (arroyo's DlqLimit). A bad deploy that
    makes every message "invalid" should crash the stage (and page someone) rather than quietly
    move all traffic to the dead-letter queue. None disables a bound."""

    # Share of invalid messages over the last `window` messages seen.
    max_invalid_ratio: float | None = None
    max_consecutive_count: int | None = None
    window: int = 1000
