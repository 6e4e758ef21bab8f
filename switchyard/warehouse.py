"""Reading routing outcomes back out of ClickHouse.

The embedded engine (chDB) lets one process own its directory; while the stack runs, that is
the sink, which serves read-only queries on a loopback port. `Warehouse.open` picks the sink's
endpoint when the stack is up and the engine directly otherwise; a ClickHouse server DSN is
always queried directly.
"""
from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any

from infra.clickhouse import connect
from switchyard.settings import Settings


class WarehouseError(RuntimeError):
    pass


@dataclass
class Warehouse:
    client: Any = None
    url: str | None = None

    @classmethod
    def open(cls, settings: Settings) -> Warehouse:
        from switchyard.stack import StackInfo, info_path

        info = StackInfo.load(info_path(settings))
        if settings.clickhouse.dsn is None and info is not None and _alive(info.query_url):
            return cls(url=info.query_url)
        return cls(client=connect(settings.clickhouse_dsn))

    def rows(self, sql: str, parameters: dict | None = None) -> list[dict[str, Any]]:
        if self.client is not None:
            result = self.client.query(sql, parameters=parameters or {})
            return [dict(zip(result.column_names, r)) for r in result.result_rows]
        payload = json.dumps({"sql": sql, "parameters": parameters or {}}).encode()
        req = urllib.request.Request(f"{self.url}/query", data=payload,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())["rows"]
        except urllib.error.HTTPError as exc:
            raise WarehouseError(exc.read().decode(errors="replace")) from None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def _alive(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2):
            return True
    except OSError:
        return False


# --- the questions the CLI asks -------------------------------------------------------------

JOB_STATUS = """
SELECT
    (SELECT count() FROM requests FINAL WHERE job_id = {job:String}) AS requests,
    (SELECT count() FROM decisions FINAL WHERE job_id = {job:String}) AS routed,
    (SELECT count() FROM results FINAL WHERE job_id = {job:String}) AS answered,
    (SELECT countIf(status = 'error') FROM results FINAL WHERE job_id = {job:String}) AS errors,
    (SELECT count() FROM dead_letters FINAL WHERE job_id = {job:String}) AS dead_letters
"""

JOB_RESULTS = """
SELECT r.custom_id AS custom_id, r.tier AS tier, r.model AS model, r.status AS status,
       r.answer AS answer, r.error AS error, r.response AS response,
       r.end_to_end_ms AS end_to_end_ms, r.cost_usd AS cost_usd, d.cluster AS cluster
FROM (SELECT * FROM results FINAL WHERE job_id = {job:String}) AS r
LEFT JOIN (SELECT request_id, cluster FROM decisions FINAL WHERE job_id = {job:String}) AS d
USING request_id
ORDER BY custom_id
"""

JOB_DEAD_LETTERS = """
SELECT stage, reason, original, topic, partition, offset
FROM dead_letters FINAL WHERE job_id = {job:String} ORDER BY topic, partition, offset
"""

# Routing outcomes for analysts: volume, quality (mean feedback score), cost and latency.
OUTCOMES_BY = {"tier": "r.tier", "cluster": "d.cluster", "tenant": "r.tenant", "model": "r.model"}


def outcomes_sql(group_by: str, job_filter: bool) -> str:
    key = OUTCOMES_BY[group_by]
    where = "WHERE job_id = {job:String}" if job_filter else ""
    return f"""
SELECT {key} AS {group_by}, count() AS requests, countIf(r.status = 'error') AS errors,
       count(f.score) AS graded, avg(f.score) AS quality,
       sum(r.cost_usd) AS cost_usd, quantile(0.5)(r.end_to_end_ms) AS p50_ms,
       quantile(0.95)(r.end_to_end_ms) AS p95_ms
FROM (SELECT * FROM results FINAL {where}) AS r
LEFT JOIN (SELECT request_id, cluster FROM decisions FINAL {where}) AS d USING request_id
LEFT JOIN (SELECT request_id, avg(score) AS score FROM feedback FINAL {where} GROUP BY request_id) AS f
    USING request_id
GROUP BY {group_by} ORDER BY {group_by}
SETTINGS join_use_nulls = 1
"""
