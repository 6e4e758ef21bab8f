"""aiokafka plumbing shared by the plain-consumer stages (tier workers, sink).

Each stage is: fetch a batch → handle it (produce downstream or write to ClickHouse) →
commit the batch's offsets. A crash between the effect and the commit replays the batch, which
is safe because every effect is idempotent by request id.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator, Awaitable, Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from streams.records import Output, RawRecord
from switchyard.settings import KafkaSettings

log = logging.getLogger(__name__)

BatchHandler = Callable[[list[RawRecord]], Awaitable[None]]


def make_consumer(kafka: KafkaSettings, group_id: str, *topics: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *(f"{kafka.topic_prefix}{t}" for t in topics),
        bootstrap_servers=kafka.bootstrap, group_id=f"{kafka.topic_prefix}{group_id}",
        enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        max_poll_interval_ms=600_000,
    )


def make_producer(kafka: KafkaSettings) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=5,
                            max_request_size=16 * 1024 * 1024)


async def produce_all(producer: AIOKafkaProducer, outputs: Iterable[Output],
                      on_sent: Callable[[int], None] | None = None) -> int:
    """Send every output and wait until the broker has acknowledged all of them."""
    futures = []
    for o in outputs:
        futures.append(await producer.send(o.topic, o.value, key=o.key, headers=list(o.headers) or None))
        if on_sent:
            on_sent(1)
    if futures:
        await asyncio.gather(*futures)
    return len(futures)


@asynccontextmanager
async def producing(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer for one piece of work (a CLI command), stopped (and flushed) after."""
    producer = make_producer(kafka)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def consume_in_batches(consumer: AIOKafkaConsumer, handle: BatchHandler, *,
                             max_records: int, timeout_ms: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        records = [RawRecord.from_kafka(m) for msgs in batches.values() for m in msgs]
        if not records:
            continue
        await handle(records)
        offsets = {TopicPartition(tp.topic, tp.partition): msgs[-1].offset + 1
                   for tp, msgs in batches.items()}
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # Partitions moved during the batch; their new owner replays it (idempotently).
            log.warning("commit skipped after rebalance: %s", exc)
