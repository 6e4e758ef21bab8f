"""The stage contract and its runtime, written once.

A stage is a processor (a batch of records in, outputs out, no Kafka) and an effect (produce
the outputs and wait for the acks, or write them to ClickHouse). The runtime fetches a batch,
calls the processor, checks the dead-letter limit, applies the effect and only then commits
the batch's offsets; it stops on SIGTERM/SIGINT and says when it is ready. A crash between
the effect and the commit replays the batch, which is safe because every effect is idempotent
by request id. The router stream drives the same processor and limit from a faust agent.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from streams import metrics
from streams.config import DlqLimitSettings
from streams.records import RawRecord, reason_kind

log = logging.getLogger(__name__)

O = TypeVar("O")


@dataclass
class Stage(Generic[O]):
    name: str
    process: Callable[[list[RawRecord]], list[O] | Awaitable[list[O]]]
    effect: Callable[[list[O]], Awaitable[None]]
    dead_letter_reason: Callable[[O], str | None]  # why an output dead-letters its input; None: it does not


class DlqLimitExceeded(RuntimeError):
    """Too many invalid messages: the stage stops (uncommitted) instead of dead-lettering on."""


class DlqLimit:
    """arroyo's DlqLimit: a maximum share of invalid messages over a window, and a maximum run
    of invalid messages with no valid one between them (counted over whole batches: a batch
    with any valid message ends the run, since outputs do not say where in the batch it was)."""

    def __init__(self, settings: DlqLimitSettings, stage: str):
        self.settings = settings
        self.stage = stage
        self.recent: deque[bool] = deque(maxlen=max(1, settings.window))
        self.consecutive = 0

    def observe(self, records: int, invalid: int) -> None:
        """Record one batch; raise DlqLimitExceeded when a bound is crossed."""
        s = self.settings
        self.recent.extend([True] * (records - invalid) + [False] * invalid)
        self.consecutive = self.consecutive + invalid if invalid == records else 0
        if s.max_consecutive_count is not None and self.consecutive > s.max_consecutive_count:
            raise DlqLimitExceeded(f"stage {self.stage}: {self.consecutive} invalid messages in a row "
                                   f"(limit {s.max_consecutive_count})")
        if s.max_invalid_ratio is not None and len(self.recent) == self.recent.maxlen:
            ratio = self.recent.count(False) / len(self.recent)
            if ratio > s.max_invalid_ratio:
                raise DlqLimitExceeded(f"stage {self.stage}: {ratio:.0%} of the last {len(self.recent)} "
                                       f"messages were invalid (limit {s.max_invalid_ratio:.0%})")


async def process_batch(stage: Stage[O], records: list[RawRecord], limit: DlqLimit) -> None:
    """One batch through the contract: process, check the limit, apply the effect."""
    started = time.perf_counter()
    try:
        outputs = stage.process(records)
        if inspect.isawaitable(outputs):
            outputs = await outputs
        reasons = [r for r in map(stage.dead_letter_reason, outputs) if r]
        invalid = len(reasons)
        limit.observe(len(records), invalid)
        await stage.effect(outputs)
    except BaseException:
        metrics.BATCH_ERRORS.labels(stage.name).inc()
        raise
    metrics.RECORDS.labels(stage.name).inc(len(records))
    for reason in reasons:
        metrics.DEAD_LETTERS.labels(stage.name, reason_kind(reason)).inc()
    metrics.BATCH_SECONDS.labels(stage.name).observe(time.perf_counter() - started)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, for the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_stage(stage: Stage[O], consumer: AIOKafkaConsumer, *, max_records: int, timeout_ms: int,
                    dlq_limit: DlqLimitSettings = DlqLimitSettings(), stop: asyncio.Event | None = None,
                    on_ready: Callable[[], None] | None = None) -> None:
    """Drive `stage` over a started consumer until `stop` is set (default: SIGTERM/SIGINT).
    The consumer is stopped on the way out."""
    stop = stop or stop_on_signals()
    limit = DlqLimit(dlq_limit, stage.name)
    try:
        if on_ready:
            on_ready()
        log.info("stage %s running", stage.name)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
            records = [RawRecord.from_kafka(m) for msgs in batches.values() for m in msgs]
            if not records:
                continue
            await process_batch(stage, records, limit)
            offsets = {TopicPartition(tp.topic, tp.partition): msgs[-1].offset + 1 for tp, msgs in batches.items()}
            await _commit(consumer, offsets)
            metrics.observe_lag(stage.name, consumer.highwater, offsets)
    finally:
        await consumer.stop()


async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, IllegalStateError) as exc:
        # Partitions moved during the batch; their new owner replays it (idempotently).
        log.warning("commit skipped after rebalance: %s", exc)
