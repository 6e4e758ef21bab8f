"""aiokafka clients shared by the plain-consumer stages (tier workers, sink) and the CLI.
The fetch → effect → commit loop is `streams.runtime`."""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError

from schemas import encode
from streams.config import KafkaSettings
from streams.records import Output, RawRecord, letter_for

log = logging.getLogger(__name__)

# The largest message a Switchyard producer sends (the client refuses larger ones). The embedded
# broker takes any size; a Kafka cluster refuses what exceeds its topics' max.message.bytes.
MAX_PRODUCE_BYTES = 16 * 1024 * 1024
# What a client or broker says when a message is too large for it.
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)


def make_consumer(kafka: KafkaSettings, group: str, *topics: str) -> AIOKafkaConsumer:
    """A consumer in the (prefixed) group `group` over full topic names (`kafka.topics`)."""
    return AIOKafkaConsumer(
        *topics, bootstrap_servers=kafka.bootstrap, group_id=kafka.topics.group(group),
        enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        max_poll_interval_ms=600_000,
        # router.models carries whole router artifacts (a few MB)
        max_partition_fetch_bytes=32 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
    )


def make_producer(kafka: KafkaSettings) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=5,
                            max_request_size=MAX_PRODUCE_BYTES)


@dataclass(frozen=True)
class DeadLetterTo:
    """Where a stage dead-letters the outputs it cannot produce."""

    stage: str
    topic: str


def too_large(exc: BaseException | None) -> bool:
    """A too-large refusal, by the client or the broker (faust wraps them in ProducerSendError)."""
    while exc is not None:
        if isinstance(exc, TOO_LARGE):
            return True
        exc = exc.__cause__
    return False


def refused_letter(out: Output, exc: BaseException, dlq: DeadLetterTo) -> Output:
    """The small dead letter that replaces an output the broker will not take: it names the
    output and why, and keeps (the start of) the input the output answered."""
    reason = (f"{dlq.stage} could not produce its {out.topic} message of {len(out.value):,} bytes: "
              f"{type(exc).__name__}: {exc}")
    origin = out.origin
    if origin is None:  # nothing upstream to point at: the output is the original
        origin = RawRecord(out.value, out.topic, -1, -1, out.key)
    letter = letter_for(dlq.stage, reason, origin, out.job_id)
    return Output(dlq.topic, out.key, encode(letter), dead_letter=True, reason=reason, job_id=out.job_id)


Send = Callable[[Output], Awaitable[Awaitable]]  # sends one output; returns its ack future


async def produce_all(producer: AIOKafkaProducer, outputs: Iterable[Output],
                      on_sent: Callable[[int], None] | None = None, *,
                      dlq: DeadLetterTo | None = None) -> int:
    """Send every output and wait until the broker has acknowledged all of them (see `produce`)."""
    async def send(o: Output) -> Awaitable:
        return await producer.send(o.topic, o.value, key=o.key, headers=list(o.headers) or None)

    return await produce(send, outputs, on_sent, dlq=dlq)


async def produce(send: Send, outputs: Iterable[Output], on_sent: Callable[[int], None] | None = None,
                  *, dlq: DeadLetterTo | None = None) -> int:
    """Send every output and wait for all the acks.

    With `dlq`, an output refused as too large (by the client or the broker) is replaced by a
    dead letter for the input it answers, that input's later outputs in the batch are not sent,
    and the rest of the batch is produced as usual: one oversized message never takes its
    batch-mates with it, and never makes the stage restart into it. Without `dlq` a refusal
    is raised. Returns the messages produced, letters included."""
    pending: list[tuple[Output, Awaitable]] = []
    refused: list[tuple[Output, BaseException]] = []
    for o in outputs:
        if o.origin is not None and any(r.origin is o.origin for r, _ in refused):
            continue  # e.g. a decision whose work item was refused: it would claim routing that never happened
        try:
            pending.append((o, await send(o)))
        except Exception as exc:
            if dlq is None or not too_large(exc):
                raise
            refused.append((o, exc))
        if on_sent:
            on_sent(1)
    acks = await asyncio.gather(*(ack for _, ack in pending), return_exceptions=True)
    for (o, _), ack in zip(pending, acks):
        if isinstance(ack, BaseException):
            if dlq is None or not too_large(ack):
                raise ack
            refused.append((o, ack))
    letters = letters_for(refused, dlq) if refused else []
    if letters:
        await produce(send, letters)  # small by construction; a refused letter is raised
    return len(pending) - sum(isinstance(a, BaseException) for a in acks) + len(letters)


def letters_for(refused: list[tuple[Output, BaseException]], dlq: DeadLetterTo) -> list[Output]:
    """One dead letter per input whose outputs were refused."""
    letters: dict[int, Output] = {}
    for out, exc in refused:
        log.warning("%s: a %s message of %d bytes was refused as too large; dead-lettered: %s",
                    dlq.stage, out.topic, len(out.value), exc)
        key = id(out.origin if out.origin is not None else out)
        if key not in letters:
            letters[key] = refused_letter(out, exc, dlq)
    return list(letters.values())


@asynccontextmanager
async def producing(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer for one piece of work (a CLI command), stopped (and flushed) after."""
    producer = make_producer(kafka)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()

