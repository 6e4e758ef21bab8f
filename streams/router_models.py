"""Hot reload: the router stream follows `router.models` and swaps to each newly published version
between micro-batches, without a restart.

The topic is compacted on Kafka (latest value per version key); the embedded broker does not
compact, so the reader keeps the newest published version itself, by `created_at`. Refused
candidates are on the topic too (for the record in ClickHouse) and are skipped here.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from router.artifact import ArtifactError, from_bytes
from schemas import RouterVersion
from schemas.validation import InvalidMessage, parse_message
from streams.config import KafkaSettings

log = logging.getLogger(__name__)


def newest_published(values: list[bytes], after: RouterVersion | None = None) -> RouterVersion | None:
    """The newest published version among raw topic values (newer than `after`, if given)."""
    best = after
    for raw in values:
        try:
            version = parse_message(RouterVersion, raw)
        except InvalidMessage as exc:
            log.warning("ignoring a bad router.models message: %s", exc.reason)
            continue
        if version.verdict == "published" and (best is None or version.created_at > best.created_at):
            best = version
    return None if best is after else best


class ModelFollower:
    """Reads `router.models` from the beginning and hands each newer published router to `swap`."""

    def __init__(self, kafka: KafkaSettings, swap: Callable[[object], None], current_version: str = ""):
        self.kafka = kafka
        self.swap = swap
        self.current: RouterVersion | None = None
        self.current_version = current_version
        self.consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.kafka.bootstrap, enable_auto_commit=False,
                                         auto_offset_reset="earliest", group_id=None,
                                         max_partition_fetch_bytes=64 * 1024 * 1024,
                                         fetch_max_bytes=64 * 1024 * 1024)
        await self.consumer.start()
        topic = self.kafka.topics.router_models
        await self.consumer.topics()
        parts = [TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic) or ()]
        self.consumer.assign(parts)
        await self.consumer.seek_to_beginning(*parts)

    async def poll_once(self, timeout_ms: int = 500) -> int:
        """Fetch once; swap if a newer published version arrived. Returns the messages read."""
        assert self.consumer is not None, "start() first"
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=100)
        values = [m.value for msgs in batches.values() for m in msgs if m.value]
        newest = newest_published(values, self.current)
        if newest is not None and newest.version != self.current_version:
            try:
                router = await asyncio.to_thread(from_bytes, base64.b64decode(newest.artifact_base64))
            except (ArtifactError, ValueError) as exc:
                log.error("router version %s cannot be loaded, keeping %s: %s", newest.version,
                          self.current_version, exc)
            else:
                self.swap(router)
                self.current_version = router.version
        if newest is not None:
            self.current = newest
        return len(values)

    async def catch_up(self, quiet_seconds: float = 1.0, timeout: float = 30.0) -> None:
        """Read until the topic has been quiet for a moment (the embedded broker's end offsets are
        not reliable), so the stream starts on the latest published version."""
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            if await self.poll_once(timeout_ms=250):
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_seconds:
                return

    async def follow(self, poll_ms: int = 1000) -> None:
        while True:
            await self.poll_once(poll_ms)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
