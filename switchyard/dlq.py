"""`switchyard dlq list|replay`: look at dead letters, and re-drive the ones worth retrying once
what made them fail is fixed.

Replay sends each letter's original bytes, exactly (`original_base64`), to the topic it was
read from, with its key and the job and tenant headers the stages read (a line refused by
`submit` itself goes to `queries`). A letter that keeps only the start of an oversized original
cannot be replayed: it is counted, not sent.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Callable

from schemas.common import HEADER_JOB_ID, HEADER_TENANT
from schemas.validation import InvalidMessage, parse_json_object
from streams.config import KafkaSettings
from streams.kafka import produce_all, producing
from streams.records import Output

# Operator SQL, read through Warehouse.rows (to move into the named-question registry).
DEAD_LETTERS = """
SELECT stage, reason, job_id, tenant, topic, partition, offset, key, original_base64, created_at
FROM dead_letters FINAL
WHERE ({job:String} = '' OR job_id = {job:String})
  AND ({stage:String} = '' OR stage = {stage:String})
  AND ({reason:String} = '' OR positionCaseInsensitive(reason, {reason:String}) > 0)
ORDER BY created_at, topic, partition, offset
"""
TRUNCATED_MARK = "(the letter keeps the first"  # streams.records.letter_for, for oversized originals
SUBMIT_TOPIC_PREFIX = "submit:"  # switchyard.jobs: lines refused at submit, never on a topic

Rows = Callable[[str, dict], list[dict[str, Any]]]  # Warehouse.rows


@dataclass
class Letter:
    stage: str
    reason: str
    job_id: str
    tenant: str
    topic: str
    partition: int
    offset: int
    key: str
    original: bytes = field(repr=False)

    @property
    def custom_id(self) -> str | None:
        """The original's custom_id, when the original is a JSON object that has one."""
        try:
            data = parse_json_object(self.original)
        except InvalidMessage:
            return None
        value, request_id = data.get("custom_id"), data.get("request_id")
        if isinstance(value, str):
            return value
        if isinstance(request_id, str) and self.job_id and request_id.startswith(f"{self.job_id}:"):
            return request_id.removeprefix(f"{self.job_id}:")  # schemas.common.request_id_for
        return None

    @property
    def truncated(self) -> bool:
        return TRUNCATED_MARK in self.reason

    def summary(self) -> dict[str, Any]:
        return {"stage": self.stage, "reason": self.reason, "job_id": self.job_id, "tenant": self.tenant,
                "custom_id": self.custom_id, "topic": self.topic, "partition": self.partition,
                "offset": self.offset, "key": self.key}


def letters(rows: Rows, job: str | None = None, stage: str | None = None,
            reason_contains: str | None = None) -> list[Letter]:
    found = rows(DEAD_LETTERS, {"job": job or "", "stage": stage or "", "reason": reason_contains or ""})
    return [Letter(stage=r["stage"], reason=r["reason"], job_id=r["job_id"] or "", tenant=r.get("tenant") or "",
                   topic=r["topic"], partition=int(r["partition"]), offset=int(r["offset"]), key=r["key"] or "",
                   original=base64.b64decode(r["original_base64"] or "")) for r in found]


@dataclass
class DlqReplayReport:
    replayed: int
    truncated: int
    by_topic: dict[str, int]

    def line(self, dry_run: bool) -> str:
        verb = "would replay" if dry_run else "replayed"
        topics = ", ".join(f"{n} to {t}" for t, n in sorted(self.by_topic.items())) or "nothing"
        extra = f"; {self.truncated} not replayable (the letter keeps only the start of its original)" \
            if self.truncated else ""
        return f"{verb} {self.replayed} dead letter(s): {topics}{extra}"


def target_topic(letter: Letter, queries_topic: str) -> str:
    return queries_topic if letter.topic.startswith(SUBMIT_TOPIC_PREFIX) else letter.topic


def outputs_for(chosen: list[Letter], queries_topic: str) -> list[Output]:
    outputs = []
    for letter in chosen:
        headers = tuple((name, value.encode()) for name, value in
                        ((HEADER_JOB_ID, letter.job_id), (HEADER_TENANT, letter.tenant)) if value)
        outputs.append(Output(target_topic(letter, queries_topic), letter.key.encode() or None,
                              letter.original, headers))
    return outputs


async def replay(kafka: KafkaSettings | None, chosen: list[Letter], dry_run: bool = False,
                 queries_topic: str = "queries") -> DlqReplayReport:
    """`kafka` may be None for a dry run; `queries_topic` names the target then."""
    queries = kafka.topics.queries if kafka is not None else queries_topic
    whole = [letter for letter in chosen if not letter.truncated]
    by_topic: dict[str, int] = {}
    for letter in whole:
        topic = target_topic(letter, queries)
        by_topic[topic] = by_topic.get(topic, 0) + 1
    if whole and not dry_run:
        async with producing(kafka) as producer:
            await produce_all(producer, outputs_for(whole, queries))
    return DlqReplayReport(replayed=len(whole), truncated=len(chosen) - len(whole), by_topic=by_topic)
