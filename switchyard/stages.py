"""Wiring: each stage of the stack built from Settings and run in the foreground. The only
place that turns settings into the stages' constructor arguments (`switchyard stage ...`)."""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Callable

from schemas.common import Tier
from switchyard.settings import Settings

log = logging.getLogger(__name__)

Ready = Callable[[str], None]  # called with what a waiting parent may want to read (or "ok")


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


def router_processor(settings: Settings):
    from router.embeddings import embed, load_encoder
    from streams.routing import RouterProcessor
    from workers.tiers import served_models

    router = load_router(settings)
    encoder = load_encoder()
    batch_size = settings.router.embed_batch_size
    return RouterProcessor(
        router, lambda texts: embed(texts, encoder=encoder, batch_size=batch_size, use_cache=False),
        served_models(settings.workers), settings.kafka.topics)


def run_router(settings: Settings, ready: Ready) -> None:
    from streams.router_app import build_app, run

    processor = router_processor(settings)
    version = processor.router.version
    log.info("router stream using router %s", version)
    run(build_app(settings.kafka, processor, batch_size=settings.router.embed_batch_size,
                  max_wait_seconds=settings.router.embed_max_wait_seconds, data_dir=settings.data_dir,
                  dlq_limit=settings.dlq_limits.router, on_ready=lambda: ready(version)))


def run_sink(settings: Settings, ready: Ready) -> None:
    from streams.sink import run_sink as sink

    ch = settings.clickhouse
    asyncio.run(sink(settings.kafka, settings.clickhouse_dsn, batch_size=ch.sink_batch_size,
                     flush_seconds=ch.sink_flush_seconds, query_port=settings.query_port,
                     dlq_limit=settings.dlq_limits.sink, on_ready=lambda: ready("ok")))


def run_worker(tier: Tier, settings: Settings, ready: Ready) -> None:
    from workers.tier_worker import TierProcessor, run_tier_worker
    from workers.tiers import build_engine, served_tier

    async def main() -> None:
        engine = await asyncio.to_thread(build_engine, tier, settings.workers)
        processor = TierProcessor(served_tier(tier, settings.workers), engine, settings.kafka.topics)
        await run_tier_worker(processor, settings.kafka, dlq_limit=settings.dlq_limits.worker,
                              on_ready=lambda: ready("ok"))

    asyncio.run(main())


def run_serve(settings: Settings, ready: Ready) -> None:
    """Ray Serve with one deployment per tier, up until SIGTERM/SIGINT."""
    from schemas.common import TIERS
    from workers.serve import stop_serve
    from workers.tiers import serve_tiers

    cluster = serve_tiers(settings.workers, TIERS)
    ready(cluster.gcs_address)
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        while not stopping:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop_serve(settings.workers.ray_temp_dir)
