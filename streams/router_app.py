"""The router stream: a faust agent over `queries` that drives the router stage's processor.

Offsets are committed by faust only after the batch's events are acked (after this agent has
sent its outputs) and after the producer is flushed, so delivery is at-least-once; downstream
effects are idempotent by request id. The composition root builds the processor and passes it in.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Awaitable, Callable, Sequence

import faust

from streams.config import DlqLimitSettings, KafkaSettings
from streams.metrics import observe_lag
from streams.kafka import MAX_PRODUCE_BYTES, DeadLetterTo, produce
from streams.records import Output, RawRecord
from streams.router_models import ModelFollower
from streams.routing import STAGE, RouterProcessor
from streams.runtime import DlqLimit, Stage, process_batch

log = logging.getLogger(__name__)


def build_app(kafka: KafkaSettings, processor: RouterProcessor, *, batch_size: int,
              max_wait_seconds: float, data_dir: Path, dlq_limit: DlqLimitSettings = DlqLimitSettings(),
              on_ready: Callable[[], None] | None = None,
              tasks: Sequence[Callable[[], Awaitable[None]]] = ()) -> faust.App:
    """`tasks`: more background coroutines of the router process, started with the app (the
    semantic cache's results follower and refill, `streams.cache_follower`)."""
    topics = kafka.topics
    app = faust.App(
        topics.group("switchyard-router"),
        broker=f"kafka://{kafka.bootstrap}",
        store="memory://",
        web_enabled=False,
        broker_session_timeout=kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=kafka.heartbeat_interval_ms / 1000,
        topic_partitions=4,
        producer_acks=-1,
        producer_max_request_size=MAX_PRODUCE_BYTES,  # faust's default (1 MB) is below a whole request
        datadir=str(data_dir / "faust"),
    )
    queries = app.topic(topics.queries, key_serializer="raw", value_serializer="raw")
    limit = DlqLimit(dlq_limit, STAGE)

    async def send_one(out: Output):
        return await app.send(out.topic, key=out.key, value=out.value, headers=list(out.headers) or None,
                              key_serializer="raw", value_serializer="raw")

    async def send(outputs: list[Output]) -> None:
        # Waits for the acks, so a message the broker refuses as too large is dead-lettered here
        # (with its batch-mates still produced) instead of failing the agent into a restart.
        await produce(send_one, outputs, dlq=DeadLetterTo(STAGE, topics.dlq))

    # Embedding is CPU work: the processor runs in a thread, keeping the loop free for
    # heartbeats and fetches.
    stage = Stage(STAGE, lambda records: asyncio.to_thread(processor.process, records), send,
                  lambda out: out.reason if out.dead_letter else None)

    # Hot reload: start on the latest published router version, then follow the topic.
    follower = ModelFollower(kafka, processor.swap, processor.router.version)

    @app.task
    async def follow_router_models() -> None:
        await follower.start()
        try:
            await follower.catch_up()
            if on_ready:
                on_ready()
            await follower.follow()
        finally:
            await follower.stop()

    for task in tasks:
        app.task(task)

    @app.agent(queries)
    async def route(stream):
        async for events in stream.take_events(batch_size, within=max_wait_seconds):
            await process_batch(stage, [RawRecord.from_kafka(e.message) for e in events], limit)
            nxt: dict = {}
            for e in events:
                tp = e.message.tp
                nxt[tp] = max(nxt.get(tp, 0), e.message.offset + 1)
            observe_lag(STAGE, _highwater(app), nxt)

    return app


def _highwater(app: faust.App) -> Callable[[object], int | None]:
    def highwater(tp) -> int | None:
        try:
            return app.consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - a metric never stops the stream
            return None
    return highwater


def run(app: faust.App) -> None:
    """Run the app in the foreground until SIGTERM/SIGINT (faust's worker handles both)."""
    app.finalize()
    worker = faust.Worker(app, loglevel="INFO", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
