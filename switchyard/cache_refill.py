"""The semantic cache's refill at router start: the newest stored answers within the TTL, from
ClickHouse (requests ⋈ results), embedded again and indexed, so a router restart does not start
with an empty cache. Bounded (`cache.refill_max_entries`, newest first) and run in the
background: the router routes meanwhile, and a refill that cannot reach ClickHouse is logged,
never fatal. With the embedded engine the sink owns the chDB directory, so the refill waits for
the sink's read endpoint rather than opening the directory itself."""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Sequence

import numpy as np

from schemas import ChatCompletionBody, QueryRequest, Result, RoutingPolicy
from streams.cache import SemanticCache
from switchyard.settings import Settings

log = logging.getLogger(__name__)

REFILL = """
SELECT r.request_id AS request_id, r.job_id AS job_id, r.tenant AS tenant, r.custom_id AS custom_id,
       q.body AS body, q.policy AS policy, q.submitted_at AS submitted_at, r.tier AS tier, r.model AS model,
       r.router_version AS router_version, r.response AS response, r.warnings AS warnings,
       r.finished_at AS finished_at
FROM (SELECT request_id, job_id, tenant, custom_id, tier, model, router_version, response, warnings, finished_at
      FROM results FINAL
      WHERE status = 'ok' AND NOT cache_hit AND notEmpty(response)
        AND finished_at >= parseDateTime64BestEffort({since:String}, 3, 'UTC')) AS r
INNER JOIN (SELECT request_id, tenant, body, policy, submitted_at FROM requests FINAL) AS q
    ON q.request_id = r.request_id AND q.tenant = r.tenant
ORDER BY r.finished_at DESC
LIMIT {limit:UInt32}
"""


def parse_rows(rows: Sequence[dict]) -> tuple[list[QueryRequest], list[Result]]:
    """The stored request and its answer, per row (rows that no longer parse are skipped)."""
    requests, results = [], []
    for row in rows:
        try:
            request = QueryRequest(custom_id=row["custom_id"], job_id=row["job_id"], tenant=row["tenant"],
                                   body=ChatCompletionBody.model_validate_json(row["body"]),
                                   routing=RoutingPolicy.model_validate_json(row["policy"] or "{}"),
                                   submitted_at=row["submitted_at"])
            result = Result(request_id=row["request_id"], job_id=row["job_id"], tenant=row["tenant"],
                            custom_id=row["custom_id"], tier=row["tier"], model=row["model"], status="ok",
                            response=json.loads(row["response"]), router_version=row["router_version"],
                            submitted_at=row["submitted_at"], finished_at=row["finished_at"],
                            warnings=list(row.get("warnings") or []))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("cache refill: skipping stored answer %s: %s", row.get("request_id"), exc)
            continue
        if request.request_id == result.request_id:
            requests.append(request)
            results.append(result)
    return requests, results


def fill(cache: SemanticCache, rows: Sequence[dict], embed: Callable[[Sequence[str]], np.ndarray]) -> int:
    requests, results = parse_rows(rows)
    if not requests:
        return 0
    embeddings = embed([r.body.last_user_text() for r in requests])
    return cache.seed(requests, results, embeddings)


def stored_answers(settings: Settings, wait_seconds: float = 120.0) -> list[dict]:
    """The rows to refill from; [] when ClickHouse cannot be read (logged)."""
    from switchyard.stack import StackInfo, info_path
    from switchyard.warehouse import Warehouse, WarehouseError, _alive

    c = settings.cache
    if c.refill_max_entries == 0:
        return []
    if settings.clickhouse.dsn is None:  # the embedded engine: only through the sink
        deadline = time.monotonic() + wait_seconds
        while True:
            info = StackInfo.load(info_path(settings))
            if info is not None and _alive(info.query_url):
                break
            if time.monotonic() > deadline:
                log.warning("cache refill skipped: the sink's read endpoint did not answer in %.0f s", wait_seconds)
                return []
            time.sleep(1.0)
    since = (datetime.now(timezone.utc) - timedelta(seconds=c.ttl_s)).strftime("%Y-%m-%d %H:%M:%S")
    try:
        wh = Warehouse.open(settings)
        try:
            return wh.rows(REFILL, {"since": since, "limit": str(c.refill_max_entries)})
        finally:
            wh.close()
    except (WarehouseError, OSError) as exc:
        log.warning("cache refill skipped: %s", exc)
        return []


def refill(settings: Settings, cache: SemanticCache, embed: Callable[[Sequence[str]], np.ndarray]) -> int:
    started = time.perf_counter()
    rows = stored_answers(settings)
    added = fill(cache, rows, embed)
    log.info("semantic cache refilled with %d of %d stored answers in %.1f s", added, len(rows),
             time.perf_counter() - started)
    return added
