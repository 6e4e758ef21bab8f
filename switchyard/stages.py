"""Wiring: each stage of the stack built from Settings and run in the foreground. The only
place that turns settings into the stages' constructor arguments (`switchyard stage ...`)."""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Callable

from schemas.common import TIERS, Tier
from switchyard.settings import Settings

log = logging.getLogger(__name__)

Ready = Callable[[str], None]  # called with what a waiting parent may want to read (or "ok")


def router_processor(settings: Settings):
    from router.embeddings import embed, load_encoder
    from streams.routing import RouterProcessor
    from workers.tiers import served_models

    from switchyard.live_router import load_router

    router = load_router(settings)
    encoder = load_encoder()
    batch_size = settings.router.embed_batch_size
    return RouterProcessor(
        router, lambda texts: embed(texts, encoder=encoder, batch_size=batch_size, use_cache=False),
        served_models(settings.workers), settings.kafka.topics, settings.router.explore_rate,
        limits=tenant_gate(settings), cache=semantic_cache(settings))


def semantic_cache(settings: Settings):
    """The router's semantic cache (docs/cache.md), or None when it is off."""
    from streams.cache import SemanticCache

    if not settings.cache.enabled:
        return None
    return SemanticCache(settings.cache, settings.kafka.topics)


def cache_tasks(settings: Settings, processor) -> list:
    """The router process's cache tasks: follow `results` (how the cache learns answers) and,
    once, refill from ClickHouse's stored answers. [] when the cache is off."""
    from streams.cache_follower import ResultFollower

    cache = processor.cache
    if cache is None:
        return []
    tasks = [ResultFollower(settings.kafka, cache).follow]
    if settings.cache.refill_on_start:
        from switchyard.cache_refill import refill

        async def refill_once() -> None:
            try:
                await asyncio.to_thread(refill, settings, cache, processor.embed)
            except Exception:  # a refill is an optimisation: it never stops the router
                log.exception("semantic cache refill failed")

        tasks.append(refill_once)
    return tasks


def tenant_gate(settings: Settings):
    """The router's per-tenant limits, or None when no tenant has any (nothing is counted)."""
    from streams.limits import TenantGate

    if not settings.tenant_limits.active:
        return None
    return TenantGate(settings.tenant_limits, settings.workers.max_tokens_cap)


def run_router(settings: Settings, ready: Ready) -> None:
    from streams.router_app import build_app, run

    processor = router_processor(settings)
    log.info("router stream starting with router %s (newer published versions replace it)",
             processor.router.version)
    run(build_app(settings.kafka, processor, batch_size=settings.router.embed_batch_size,
                  max_wait_seconds=settings.router.embed_max_wait_seconds, data_dir=settings.data_dir,
                  dlq_limit=settings.dlq_limits.router, on_ready=lambda: ready(processor.router.version),
                  tasks=cache_tasks(settings, processor)))


def run_sink(settings: Settings, ready: Ready) -> None:
    from infra.auth import Keyring
    from streams.sink import run_sink as sink

    ch = settings.clickhouse
    keyring = Keyring(settings.secrets_dir)
    keyring.ensure_operator_token()  # the endpoint's owner makes sure its operator can call it
    from workers.tiers import price_table

    from switchyard.live_router import training_mixes

    prices = price_table(settings.workers)
    asyncio.run(sink(settings.kafka, settings.clickhouse_dsn, batch_size=ch.sink_batch_size,
                     flush_seconds=ch.sink_flush_seconds, query_port=settings.query_port,
                     analytics_refresh_seconds=ch.analytics_refresh_seconds, tier_prices=prices,
                     training_mixes=training_mixes(settings),
                     keyring=keyring, dlq_limit=settings.dlq_limits.sink, on_ready=lambda: ready("ok")))


def run_worker(tier: Tier, settings: Settings, ready: Ready) -> None:
    from workers.breaker import TierBreaker, breaker_file
    from workers.faults import FaultyEngine, fault_file
    from workers.tier_worker import TierProcessor, run_tier_worker
    from workers.tiers import build_engine, served_tier

    run_dir = settings.data_dir / "run"  # the stack's run dir (switchyard.stack.run_dir)
    workers = settings.workers

    async def main() -> None:
        engine = await asyncio.to_thread(build_engine, tier, workers)
        if workers.fault_files:
            engine = FaultyEngine(engine, fault_file(run_dir, tier))
        breaker = TierBreaker(tier, workers.breaker, breaker_file(run_dir, tier))
        processor = TierProcessor(served_tier(tier, workers), engine, settings.kafka.topics, breaker)
        await run_tier_worker(processor, settings.kafka, dlq_limit=settings.dlq_limits.worker,
                              on_ready=lambda: ready("ok"))

    asyncio.run(main())


def run_serve(settings: Settings, ready: Ready) -> None:
    """Ray Serve with one deployment per tier, up until SIGTERM/SIGINT."""
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


def retrain_due(r, new_feedback: int, seconds_since_last: float, drift: float | None = None,
                drift_requests: int = 0) -> bool:
    drifted = drift is not None and drift >= r.drift_threshold and drift_requests >= r.drift_min_requests
    return new_feedback >= r.every_feedback or (new_feedback > 0 and (seconds_since_last >= r.every_minutes * 60
                                                                      or drifted))


def run_retrainer(settings: Settings, ready: Ready) -> None:
    """The schedule: retrain when `every_feedback` feedback rows arrived since the last verdict, or
    `every_minutes` passed since it with any new one (counted from ClickHouse, so a restart of
    this stage loses nothing). A failed retrain is logged and tried again at the next trigger; it
    never takes the stage down."""
    from switchyard.retrain import (
        DRIFT_SINCE_LAST_RETRAIN,
        SINCE_LAST_RETRAIN,
        RetrainError,
        retrain_once,
        retrain_options,
    )
    from streams import metrics
    from switchyard.warehouse import Warehouse, WarehouseError

    r = settings.retrain

    def stop(*_) -> None:  # raising ends a sleep (or a retrain) at once, not after poll_seconds
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    started = time.monotonic()
    not_before = 0.0  # after a retrain that produced no verdict, wait a whole period
    ready("ok")
    while True:
        time.sleep(r.poll_seconds)
        if time.monotonic() < not_before:
            continue
        try:
            wh = Warehouse.open(settings)
            try:
                row = wh.rows(SINCE_LAST_RETRAIN)[0]
                drift = wh.rows(DRIFT_SINCE_LAST_RETRAIN)[0]
            finally:
                wh.close()
        except (WarehouseError, OSError) as exc:
            log.warning("retrainer cannot read the feedback count: %s", exc)
            continue
        new = int(row["new_feedback"])
        metrics.FEEDBACK_SINCE_RETRAIN.set(new)
        waited = row["seconds_since"] if row["seconds_since"] is not None else time.monotonic() - started
        if not retrain_due(r, new, waited, drift["drift"], int(drift["requests"])):
            continue
        log.info("retraining: %d new feedback rows (mix drift %s over %d decisions)", new, drift["drift"],
                 int(drift["requests"]))
        began = time.perf_counter()
        try:
            summary = retrain_once(settings, retrain_options(settings), settings.kafka, lambda s: log.info(s))
            log.info("retrain verdict: %s %s: %s", summary["verdict"], summary["version"], summary["reason"])
            outcome = summary["verdict"]
        except RetrainError as exc:
            log.info("no candidate this time: %s", exc)
            not_before = time.monotonic() + r.every_minutes * 60
            outcome = "no_candidate"
        except Exception:  # a bug in one retrain must not stop the schedule (SystemExit is not one)
            log.exception("retrain failed")
            not_before = time.monotonic() + r.every_minutes * 60
            outcome = "failed"
        metrics.RETRAINS.labels(outcome).inc()
        metrics.RETRAIN_SECONDS.observe(time.perf_counter() - began)
        time.sleep(r.poll_seconds)  # let the sink store the verdict before counting again


def run_api(settings: Settings, ready: Ready) -> None:
    """The OpenAI-compatible API on `settings.api.host:port` (a free port when 0) until SIGTERM."""
    import socket

    import uvicorn

    from switchyard.api.app import create_app
    from workers.tiers import served_models

    api = settings.api
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((api.host, api.port))
    host, port = sock.getsockname()[:2]
    app = create_app(settings, settings.kafka, served_models(settings.workers))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))

    async def main() -> None:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        if server.started:
            ready(f"http://{host}:{port}/v1")
        await serving

    asyncio.run(main())
