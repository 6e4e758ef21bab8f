"""aiokafka clients shared by the plain-consumer stages (tier workers, sink) and the CLI.
The fetch → effect → commit loop is `streams.runtime`."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.config import KafkaSettings
from streams.records import Output


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

