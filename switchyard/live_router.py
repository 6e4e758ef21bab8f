"""Which router the live stream runs: the newest published version (from `router_versions`),
else the configured artifact, else the shipped default, else the heuristic."""
from __future__ import annotations

import base64
import logging

from switchyard.settings import Settings

log = logging.getLogger(__name__)

LATEST_PUBLISHED = """
SELECT version, artifact_base64 FROM router_versions FINAL
WHERE verdict = 'published' ORDER BY created_at DESC LIMIT 1
"""


def load_router(settings: Settings):
    """The configured artifact, else the shipped default artifact, else the heuristic."""
    from router.artifact import ArtifactError, load_default, load_router as load_dir

    if settings.router.artifact_dir is not None:  # configured: a broken one must fail loudly
        try:
            return load_dir(settings.router.artifact_dir)
        except ArtifactError:
            raise
        except Exception as exc:  # a corrupt arrays.npz or a router.json missing a field: say where
            raise ArtifactError(f"configured router artifact {settings.router.artifact_dir} cannot be "
                                f"loaded: {type(exc).__name__}: {exc}") from exc
    from router.artifact import DEFAULT_DIR

    if not (DEFAULT_DIR / "router.json").exists() or not (DEFAULT_DIR / "arrays.npz").exists():
        log.warning("no shipped router artifact at %s; using the heuristic router", DEFAULT_DIR)
    else:  # present but unreadable: a broken install, never routed around quietly
        try:
            return load_default()
        except ArtifactError as exc:
            raise ArtifactError(f"the shipped router artifact is broken ({exc}); reinstall Switchyard "
                                f"or set SWITCHYARD_ROUTER__ARTIFACT_DIR") from exc
        except Exception as exc:
            raise ArtifactError(f"the shipped router artifact {DEFAULT_DIR} cannot be loaded: "
                                f"{type(exc).__name__}: {exc}; reinstall Switchyard or set "
                                f"SWITCHYARD_ROUTER__ARTIFACT_DIR") from exc
    from router.heuristic import HeuristicRouter

    return HeuristicRouter()


def training_mixes(settings: Settings) -> dict[str, list[float]]:
    """{version: training mix} of the router the stream runs when nothing is published (the
    configured or shipped artifact), for the drift figure; {} for the heuristic or an artifact
    fitted before mixes were recorded."""
    router = load_router(settings)
    mix = getattr(router, "training_mix", None)
    return {router.version: mix} if mix and getattr(router, "version", "") else {}


def latest_published(rows: list[dict]):
    """The router of the newest published row of `router_versions`, if any."""
    from router.artifact import from_bytes

    if not rows:
        return None
    return from_bytes(base64.b64decode(rows[0]["artifact_base64"]))


def current_router(settings: Settings, wh):
    """What the router stream runs now: the newest published version, else its configured one."""
    return latest_published(wh.rows(LATEST_PUBLISHED)) or load_router(settings)


LATEST_PUBLISHED_ROW = """
SELECT version, parent_version, verdict, reason, metrics, n_outcomes, artifact_base64, created_at
FROM router_versions FINAL WHERE verdict = 'published' ORDER BY created_at DESC LIMIT 1
"""


def restore_published(settings: Settings) -> str | None:
    """Put the newest published router version back on `router.models` (the embedded broker
    forgets its topics when it restarts; ClickHouse does not), so the router stream starts on it
    instead of the shipped default. Run before the sink owns the engine; returns the version."""
    import asyncio
    import json

    from infra.clickhouse import apply_schema, connect
    from schemas import RouterVersion, encode
    from streams.kafka import produce_all, producing
    from streams.records import Output

    client = connect(settings.clickhouse_dsn)
    try:
        apply_schema(client)
        result = client.query(LATEST_PUBLISHED_ROW)
        rows = [dict(zip(result.column_names, r)) for r in result.result_rows]
    finally:
        client.close()
    if not rows:
        return None
    row = rows[0]
    version = RouterVersion.model_validate({**row, "metrics": json.loads(row["metrics"] or "{}")})
    async def publish() -> None:
        async with producing(settings.kafka) as producer:
            await produce_all(producer, [Output(settings.kafka.topics.router_models, version.version.encode(),
                                                encode(version))])

    asyncio.run(publish())
    log.info("restored router version %s on %s", version.version, settings.kafka.topics.router_models)
    return version.version
