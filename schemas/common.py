from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel

SCHEMA_VERSION = 1

Tier = Literal["small", "medium", "large"]
TIERS: tuple[Tier, ...] = ("small", "medium", "large")

# Kafka headers a producer may set instead of (or besides) the JSON fields; they let a stage
# attribute even an unparseable message to its job.
HEADER_JOB_ID = "switchyard-job-id"
HEADER_TENANT = "switchyard-tenant"

def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def request_id_for(job_id: str, custom_id: str) -> str:
    """custom_id is the idempotency key within a job, so (job, custom_id) names a request."""
    return f"{job_id}:{custom_id}"


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json(exclude_none=False).encode()
