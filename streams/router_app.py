"""The router stream: a faust agent over `queries` that routes micro-batches.

Offsets are committed by faust only after the batch's events are acked (after this agent has
sent its outputs) and after the producer is flushed, so delivery is at-least-once; downstream
effects are idempotent by request id.
"""
from __future__ import annotations

import asyncio
import logging

import faust

from infra.topics import QUERIES
from router.embeddings import embed, load_encoder
from streams.records import RawRecord
from streams.routing import RouterProcessor
from switchyard.settings import Settings
from switchyard.stack import mark_ready

log = logging.getLogger(__name__)


def load_router(settings: Settings):
    """The configured artifact, else the shipped default artifact, else the heuristic."""
    from router.artifact import ArtifactError, load_default, load_router as load_dir

    if settings.router.artifact_dir is not None:
        return load_dir(settings.router.artifact_dir)  # configured: a broken one must fail loudly
    try:
        return load_default()
    except (ArtifactError, FileNotFoundError) as exc:
        log.warning("no usable shipped router artifact (%s); using the heuristic router", exc)
    from router.heuristic import HeuristicRouter

    return HeuristicRouter()


def served_models(settings: Settings) -> dict[str, str]:
    models = settings.workers.models
    if settings.workers.all_tiers_small:
        return {tier: models["small"].name for tier in models}
    return {tier: m.name for tier, m in models.items()}


def build_app(settings: Settings) -> faust.App:
    app = faust.App(
        f"{settings.kafka.topic_prefix}switchyard-router",
        broker=f"kafka://{settings.kafka.bootstrap}",
        store="memory://",
        web_enabled=False,
        broker_session_timeout=settings.kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval_ms / 1000,
        topic_partitions=4,
        producer_acks=-1,
        datadir=str(settings.data_dir / "faust"),
    )
    queries = app.topic(f"{settings.kafka.topic_prefix}{QUERIES}", key_serializer="raw",
                        value_serializer="raw")
    router = load_router(settings)
    encoder = load_encoder()
    processor = RouterProcessor(
        router, lambda texts: embed(texts, encoder=encoder, batch_size=settings.router.embed_batch_size,
                                    use_cache=False),
        served_models(settings), settings.kafka.topic_prefix,
    )
    log.info("router stream using router %s", router.version)

    @app.task
    async def announce_ready() -> None:
        mark_ready(settings, "router", router.version)

    @app.agent(queries)
    async def route(stream):
        async for events in stream.take_events(settings.router.embed_batch_size,
                                               within=settings.router.embed_max_wait_seconds):
            records = [RawRecord.from_kafka(e.message) for e in events]
            # Embedding is CPU work; keep the event loop free for heartbeats and fetches.
            outputs = await asyncio.to_thread(processor.process, records)
            for out in outputs:
                await app.send(out.topic, key=out.key, value=out.value,
                               key_serializer="raw", value_serializer="raw")

    return app


def run(settings: Settings) -> None:
    app = build_app(settings)
    app.finalize()
    worker = faust.Worker(app, loglevel="INFO", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
