"""Submitting a job file to the queries topic and waiting for its results on the results topic."""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from schemas import DeadLetter, Result, encode
from schemas.common import HEADER_JOB_ID, HEADER_TENANT
from schemas.validation import InvalidMessage, parse_message, parse_query
from streams.kafka import MAX_PRODUCE_BYTES, produce_all, producing
from streams.records import Output, RawRecord, letter_for
from streams.config import KafkaSettings


class JobFileError(ValueError):
    pass


class BrokerLost(RuntimeError):
    """The broker went away while publishing, after `sent` of the job's messages were sent."""

    def __init__(self, message: str, sent: int):
        super().__init__(message)
        self.sent = sent


# How long the broker may be unreachable before a waiting client gives up on it: longer than a
# Kafka broker's restart on the same address, shorter than anyone waits for a progress bar.
BROKER_LOST_AFTER_SECONDS = 15.0


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

    def default_job_id(self, tenant: str = "default") -> str:
        """Same file and tenant, same job: re-submitting it is idempotent (no duplicate result
        rows). The tenant is part of it, so two tenants' copies of a file never share request ids."""
        digest = hashlib.sha256(tenant.encode() + b"\0" + b"\n".join(self.lines)).hexdigest()[:12]
        return f"{self.path.stem}-{digest}"


@dataclass
class Submission:
    job_id: str
    tenant: str
    expected: set[str] = field(default_factory=set)  # custom_ids of valid requests
    invalid: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    sent: int = 0
    stored: int | None = None  # requests the sink had stored in ClickHouse when submit returned
    warnings: list[tuple[int, str]] = field(default_factory=list)  # (line number, what was overridden)
    # Lines refused here that cannot go to `queries` (a repeated custom_id, a line too large for
    # the topic): their dead letters, which `publish` writes to the dlq directly.
    letters: list[DeadLetter] = field(default_factory=list)


# A line larger than this cannot be produced to `queries` (the key and headers need room too).
MAX_LINE_BYTES = MAX_PRODUCE_BYTES - 4096


def prepare(job: JobFile, job_id: str, tenant: str) -> tuple[Submission, list[tuple[bytes, bytes]]]:
    """Stamp each valid line with the job and the submitter's tenant. Invalid lines are sent as
    they are, to be dead-lettered by the router with the reason, so nothing a user sent goes
    missing silently; a line that cannot be sent (too large for the topic) or must not be (a
    custom_id that repeats an earlier line's) gets its dead letter written here instead.
    Repeats are refused rather than answered twice: custom_id is the idempotency key, so the
    first line is the request and a later one with the same id is a mistake to show, not to
    answer or drop silently (the letter keeps it, for `dlq replay` after a fix)."""
    sub = Submission(job_id=job_id, tenant=tenant)
    headers = {HEADER_JOB_ID: job_id.encode()}  # the tenant is the submitter's, set below
    messages = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(job.lines, start=1):
        try:
            request = parse_query(line, headers)
        except InvalidMessage as exc:
            sub.invalid.append((number, exc.reason))
            if len(line) > MAX_LINE_BYTES:
                sub.letters.append(_letter(job_id, tenant, number, line, f"{exc.reason}; too large "
                                           f"to send (the topic takes {MAX_LINE_BYTES:,} bytes)"))
            else:
                messages.append((f"{job_id}:line-{number}".encode(), line))
            continue
        if request.custom_id in first_line:
            reason = f"custom_id {request.custom_id!r} repeats line {first_line[request.custom_id]}; refused"
            sub.invalid.append((number, reason))
            sub.letters.append(_letter(job_id, tenant, number, line, reason))
            continue
        first_line[request.custom_id] = number
        if "tenant" in request.model_fields_set and request.tenant != tenant:
            sub.warnings.append((number, f"tenant {request.tenant!r} in the line is ignored; "
                                         f"submitted as {tenant!r}"))
        request = request.model_copy(update={"job_id": job_id, "tenant": tenant})
        sub.expected.add(request.custom_id)
        messages.append((request.request_id.encode(), encode(request)))
    return sub, messages


def _letter(job_id: str, tenant: str, number: int, line: bytes, reason: str) -> DeadLetter:
    """A dead letter for a line refused at submit: its "topic" is the job and its offset the line
    number, which keeps each line's letter distinct in the dead_letters table."""
    record = RawRecord(line, f"submit:{job_id}", 0, number, f"{job_id}:line-{number}".encode(),
                       {HEADER_JOB_ID: job_id.encode(), HEADER_TENANT: tenant.encode()})
    return letter_for("submit", reason, record, job_id)


async def publish(kafka: KafkaSettings, sub: Submission, messages: list[tuple[bytes, bytes]],
                  progress: Callable[[int], None] | None = None) -> None:
    """Send the job's messages and wait for the broker's acks; raises BrokerLost (with how many
    were sent, not all of them acknowledged) when the broker cannot be reached or goes away."""
    headers = ((HEADER_JOB_ID, sub.job_id.encode()), (HEADER_TENANT, sub.tenant.encode()))
    topic = kafka.topics.queries
    sent = 0

    def count(n: int) -> None:
        nonlocal sent
        sent += n
        if progress:
            progress(n)

    try:
        async with producing(kafka) as producer:
            sub.sent = await produce_all(producer, (Output(topic, key, value, headers) for key, value in messages),
                                         count)
            if sub.letters:  # lines refused at submit (see prepare)
                await produce_all(producer, [Output(kafka.topics.dlq, d.key.encode() if d.key else None,
                                                    encode(d)) for d in sub.letters])
    except KafkaError as exc:
        raise BrokerLost(f"{type(exc).__name__}: {exc}", sent=sent) from None


def wait_stored(count_stored: Callable[[], int], expected: int, timeout: float, poll: float = 0.5) -> int:
    """Wait until ClickHouse holds `expected` of the job's requests (the sink stores them a moment
    after the broker acknowledged them); returns the last count, which is short on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        stored = count_stored()
        if stored >= expected or time.monotonic() >= deadline:
            return stored
        time.sleep(poll)


@dataclass
class JobOutcome:
    results: dict[str, Result] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    timed_out: bool = False
    broker_lost: bool = False  # unreachable for BROKER_LOST_AFTER_SECONDS: what arrived is kept


async def wait_for(kafka: KafkaSettings, sub: Submission, timeout: float,
                   progress: Callable[[int], None] | None = None,
                   broker_lost_after: float = BROKER_LOST_AFTER_SECONDS) -> JobOutcome:
    """Read results and dead letters for this job until every request is accounted for.

    Reads the topics from the beginning (the embedded broker's end offsets are unreliable, see
    docs/architecture.md) and keeps the latest result per custom_id. A broker unreachable for
    `broker_lost_after` seconds ends the wait with `broker_lost` and what had arrived; a broker
    back sooner (a restart on the same address) is read on.
    """
    outcome = JobOutcome()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", group_id=None)
    try:
        await consumer.start()
    except KafkaError:
        await _stop_quietly(consumer)
        outcome.broker_lost = True
        return outcome
    seen_dead: set[tuple[str, int, int]] = set()
    try:
        await consumer.topics()  # fetches cluster metadata, so partitions are known
        topics = kafka.topics
        tps = [TopicPartition(t, p) for t in (topics.results, topics.dlq)
               for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        unreachable_since: float | None = None
        last_probe = time.monotonic()
        while len(outcome.results) < len(sub.expected) or len(outcome.dead_letters) < len(sub.invalid):
            now = time.monotonic()
            if now > deadline:
                outcome.timed_out = True
                break
            try:
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            except KafkaError:
                batches = {}
            if batches:
                unreachable_since = None
            elif now - last_probe >= 1.0:  # quiet: is the broker still there?
                last_probe = now
                if await reachable(kafka.bootstrap):
                    unreachable_since = None
                elif unreachable_since is None:
                    unreachable_since = now
                elif now - unreachable_since >= broker_lost_after:
                    outcome.broker_lost = True
                    break
            for tp, msgs in batches.items():
                for m in msgs:
                    if tp.topic == topics.results:
                        _take_result(m.value, sub, outcome, progress)
                    else:
                        _take_dead_letter(m.value, sub, outcome, seen_dead)
    except KafkaError:
        outcome.broker_lost = True
    finally:
        await _stop_quietly(consumer)
    return outcome


async def reachable(bootstrap: str, timeout: float = 2.0) -> bool:
    """Whether any bootstrap address accepts a TCP connection."""
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), timeout)
        except (OSError, ValueError, asyncio.TimeoutError):
            continue
        writer.close()
        return True
    return False


async def _stop_quietly(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer whose broker may be gone: aiokafka's fetcher then lets the CancelledError
    of its own retry task escape from stop(); that one is not ours to propagate."""
    try:
        await asyncio.wait_for(consumer.stop(), 10)
    except (KafkaError, OSError, asyncio.TimeoutError):
        pass
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


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
    """The answered requests, in OpenAI's batch output format (failures go to the error file)."""
    with path.open("w") as f:
        for custom_id in sorted(outcome.results):
            if outcome.results[custom_id].status == "ok":
                f.write(json.dumps(outcome.results[custom_id].to_batch_output_line()) + "\n")


def write_batch_errors(path: Path, outcome: JobOutcome) -> int:
    """One line per failed or dead-lettered request (OpenAI's error file); returns how many."""
    from switchyard.batch_files import dead_letter_line, error_line

    lines = [error_line(r.request_id, r.custom_id, "model_error", r.error or "")
             for _, r in sorted(outcome.results.items()) if r.status != "ok"]
    lines += [dead_letter_line(letter.original, letter.reason) for letter in outcome.dead_letters]
    with path.open("w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    return len(lines)
