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

    if settings.router.artifact_dir is not None:
        return load_dir(settings.router.artifact_dir)  # configured: a broken one must fail loudly
    try:
        return load_default()
    except (ArtifactError, FileNotFoundError) as exc:
        log.warning("no usable shipped router artifact (%s); using the heuristic router", exc)
    from router.heuristic import HeuristicRouter

    return HeuristicRouter()


def latest_published(rows: list[dict]):
    """The router of the newest published row of `router_versions`, if any."""
    from router.artifact import from_bytes

    if not rows:
        return None
    return from_bytes(base64.b64decode(rows[0]["artifact_base64"]))


def current_router(settings: Settings, wh):
    """What the router stream runs now: the newest published version, else its configured one."""
    return latest_published(wh.rows(LATEST_PUBLISHED)) or load_router(settings)
