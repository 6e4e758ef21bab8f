"""`switchyard replay JOB`: after a broker loss, publish again every stored request of a job that
has no result.

ClickHouse is the durable copy (`submit` waits until the sink has stored a job's requests): each
unanswered request is rebuilt from its `requests` row as the same QueryRequest (same job and
custom_id, so the same request id), so every table stays one row per request (ReplacingMergeTree)
and a request answered meanwhile is only answered again, never doubled.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from schemas import QueryRequest, encode
from schemas.common import HEADER_JOB_ID, HEADER_TENANT
from streams.config import KafkaSettings
from streams.kafka import produce_all, producing
from streams.records import Output

# Operator SQL, read through Warehouse.rows (to move into the named-question registry).
UNANSWERED = """
SELECT q.job_id AS job_id, q.tenant AS tenant, q.custom_id AS custom_id, q.body AS body,
       q.policy AS policy, q.submitted_at AS submitted_at
FROM (SELECT * FROM requests FINAL WHERE job_id = {job:String}) AS q
LEFT ANTI JOIN (SELECT request_id FROM results FINAL WHERE job_id = {job:String}) AS r USING request_id
ORDER BY q.custom_id
"""
ANSWERED_N = "SELECT count() AS n FROM results FINAL WHERE job_id = {job:String}"


class ReplayError(RuntimeError):
    pass


@dataclass
class ReplayReport:
    job_id: str
    replayed: int
    skipped_answered: int

    def line(self) -> str:
        return f"job {self.job_id}: replayed {self.replayed}, skipped {self.skipped_answered} answered"


Rows = Callable[[str, dict], list[dict[str, Any]]]  # Warehouse.rows


def unanswered(rows: Rows, job_id: str) -> tuple[list[QueryRequest], int]:
    """The job's stored requests that have no result, as messages; and how many are answered."""
    requests = [_request(r) for r in rows(UNANSWERED, {"job": job_id})]
    return requests, int(rows(ANSWERED_N, {"job": job_id})[0]["n"])


def _request(row: dict[str, Any]) -> QueryRequest:
    return QueryRequest(custom_id=row["custom_id"], job_id=row["job_id"], tenant=row["tenant"],
                        body=json.loads(row["body"]), routing=json.loads(row["policy"] or "{}"),
                        submitted_at=_utc(row["submitted_at"]))


def _utc(value: datetime | str) -> datetime:
    """The column is DateTime64(3, 'UTC'); readers may hand it back naive (or as text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def messages_for(requests: list[QueryRequest], kafka: KafkaSettings) -> list[Output]:
    return [Output(kafka.topics.queries, q.request_id.encode(), encode(q),
                   ((HEADER_JOB_ID, q.job_id.encode()), (HEADER_TENANT, q.tenant.encode())))
            for q in requests]


async def replay(rows: Rows, kafka: KafkaSettings, job_id: str, dry_run: bool = False) -> ReplayReport:
    requests, answered = unanswered(rows, job_id)
    if not requests and not answered:
        raise ReplayError(f"no stored requests for job {job_id}")
    if requests and not dry_run:
        async with producing(kafka) as producer:
            await produce_all(producer, messages_for(requests, kafka))
    return ReplayReport(job_id, replayed=len(requests), skipped_answered=answered)
