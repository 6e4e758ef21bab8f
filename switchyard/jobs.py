"""Submitting a job file to the queries topic and waiting for its results on the results topic."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import DeadLetter, Result, encode
from schemas.common import HEADER_JOB_ID, HEADER_TENANT
from schemas.validation import InvalidMessage, parse_message, parse_query
from streams.kafka import produce_all, producing
from streams.records import Output
from streams.config import KafkaSettings


class JobFileError(ValueError):
    pass


@dataclass
class JobFile:
    path: Path
    lines: list[bytes]

    @classmethod
    def read(cls, path: Path) -> JobFile:
        if not path.exists():
            raise JobFileError(f"{path}: no such file")
        lines = [ln for ln in path.read_bytes().splitlines() if ln.strip()]
        if not lines:
            raise JobFileError(f"{path}: no requests in the file")
        return cls(path, lines)

    def default_job_id(self) -> str:
        """Same file, same job: re-submitting it is idempotent (no duplicate result rows)."""
        digest = hashlib.sha256(b"\n".join(self.lines)).hexdigest()[:12]
        return f"{self.path.stem}-{digest}"


@dataclass
class Submission:
    job_id: str
    tenant: str
    expected: set[str] = field(default_factory=set)  # custom_ids of valid requests
    invalid: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    sent: int = 0


def prepare(job: JobFile, job_id: str, tenant: str) -> tuple[Submission, list[tuple[bytes, bytes]]]:
    """Stamp each valid line with the job; keep invalid lines as they are (they are dead-lettered
    downstream, with the reason recorded, so nothing a user sent goes missing silently)."""
    sub = Submission(job_id=job_id, tenant=tenant)
    headers = {HEADER_JOB_ID: job_id.encode(), HEADER_TENANT: tenant.encode()}
    messages = []
    for number, line in enumerate(job.lines, start=1):
        try:
            request = parse_query(line, headers)
            request = request.model_copy(update={"job_id": job_id})
            sub.expected.add(request.custom_id)
            messages.append((request.request_id.encode(), encode(request)))
        except InvalidMessage as exc:
            sub.invalid.append((number, exc.reason))
            messages.append((f"{job_id}:line-{number}".encode(), line))
    return sub, messages


async def publish(kafka: KafkaSettings, sub: Submission, messages: list[tuple[bytes, bytes]],
                  progress: Callable[[int], None] | None = None) -> None:
    headers = ((HEADER_JOB_ID, sub.job_id.encode()), (HEADER_TENANT, sub.tenant.encode()))
    topic = kafka.topics.queries
    async with producing(kafka) as producer:
        sub.sent = await produce_all(producer, (Output(topic, key, value, headers) for key, value in messages),
                                     progress)


@dataclass
class JobOutcome:
    results: dict[str, Result] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    timed_out: bool = False


async def wait_for(kafka: KafkaSettings, sub: Submission, timeout: float,
                   progress: Callable[[int], None] | None = None) -> JobOutcome:
    """Read results and dead letters for this job until every request is accounted for.

    Reads the topics from the beginning (the embedded broker's end offsets are unreliable, see
    docs/architecture.md) and keeps the latest result per custom_id.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    outcome = JobOutcome()
    seen_dead: set[tuple[str, int, int]] = set()
    try:
        await consumer.topics()  # fetches cluster metadata, so partitions are known
        topics = kafka.topics
        tps = [TopicPartition(t, p) for t in (topics.results, topics.dlq)
               for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while len(outcome.results) < len(sub.expected) or len(outcome.dead_letters) < len(sub.invalid):
            if time.monotonic() > deadline:
                outcome.timed_out = True
                break
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            for tp, msgs in batches.items():
                for m in msgs:
                    if tp.topic == topics.results:
                        _take_result(m.value, sub, outcome, progress)
                    else:
                        _take_dead_letter(m.value, sub, outcome, seen_dead)
    finally:
        await consumer.stop()
    return outcome


def _take_result(raw: bytes, sub: Submission, outcome: JobOutcome, progress) -> None:
    try:
        result = parse_message(Result, raw)
    except InvalidMessage:
        return
    if result.job_id != sub.job_id or result.custom_id not in sub.expected:
        return
    if result.custom_id not in outcome.results and progress:
        progress(1)
    outcome.results[result.custom_id] = result


def _take_dead_letter(raw: bytes, sub: Submission, outcome: JobOutcome, seen: set) -> None:
    try:
        letter = parse_message(DeadLetter, raw)
    except InvalidMessage:
        return
    where = (letter.topic, letter.partition, letter.offset)
    if letter.job_id == sub.job_id and where not in seen:
        seen.add(where)
        outcome.dead_letters.append(letter)


def write_batch_output(path: Path, outcome: JobOutcome) -> None:
    with path.open("w") as f:
        for custom_id in sorted(outcome.results):
            f.write(json.dumps(outcome.results[custom_id].to_batch_output_line()) + "\n")
