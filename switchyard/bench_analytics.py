"""`switchyard bench analytics`: the report over many synthetic decision and result rows on chDB.

Rows are generated inside the engine (INSERT … SELECT FROM numbers(N)): three tenants, fifty
jobs, three tiers, twenty clusters, two router versions, a graded quarter, a dead letter per
thousand. Timed side by side in one run: the analytics views' refresh, the report's questions
over the views, and the same per-tier figures computed straight from the base tables with FINAL.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from infra.clickhouse import apply_analytics, apply_schema, refresh_analytics
from infra.clickhouse.questions import bind

# A job is a contiguous block of requests within about an hour (a batch job), one of 50, of the
# tenant job % 3; each request's tier and cluster are hashed from its number.
JOB = "intDiv(number * 50, {n})"
TENANTS = "['acme', 'globex', 'initech'][{job} % 3 + 1]"
TIER_OF = "['small', 'medium', 'large'][cityHash64(number) % 3 + 1]"
AT = "now64(3) - toIntervalHour(50 - {job}) + toIntervalMillisecond(number % 3000000)"


def fill_synthetic(client, n: int) -> None:
    """n requests' decisions and results, feedback on a quarter, n/1000 dead letters."""
    job = JOB.format(n=int(n))
    request_id = f"concat('syn-', toString({job}), ':', toString(number))"
    job_id = f"concat('syn-', toString({job}))"
    tenant, at = TENANTS.format(job=job), AT.format(job=job)
    # dead letter k stands for request 1000·k: its job, tenant and time
    dl_job = f"intDiv(number * 1000 * 50, {int(n)})"
    dl_job_id, dl_tenant, dl_at = f"concat('syn-', toString({dl_job}))", TENANTS.format(job=dl_job), AT.format(job=dl_job)
    client.command(f"""
INSERT INTO decisions (request_id, job_id, tenant, custom_id, tier, cluster, router_model, served_model,
                       router_version, predicted_quality, predicted_cost_usd, policy, prompt_chars,
                       explored, propensity, submitted_at, decided_at)
SELECT {request_id}, {job_id},
       {tenant}, toString(number), {TIER_OF}, toInt32(cityHash64(number, 1) % 20),
       'm', 'm', ['v1', 'v2'][number % 2 + 1], (number % 100) / 100, 1e-6, '{{}}', 200,
       number % 20 = 0, if(number % 20 = 0, 0.05, 0.95), {at}, {at}
FROM numbers({int(n)})""")
    client.command(f"""
INSERT INTO results (request_id, job_id, tenant, custom_id, tier, model, status, response, answer, error,
                     prompt_tokens, completion_tokens, cost_usd, model_latency_ms, end_to_end_ms,
                     router_version, submitted_at, finished_at)
SELECT {request_id}, {job_id},
       {tenant}, toString(number), {TIER_OF}, 'm',
       if(number % 97 = 0, 'error', 'ok'), '', '', '', 50 + number % 200, 10 + number % 100,
       (50 + number % 200) * 1e-7 + (10 + number % 100) * 4e-7,
       100 + cityHash64(number, 2) % 2000, 150 + cityHash64(number, 2) % 2000,
       ['v1', 'v2'][number % 2 + 1], {at}, {at} + toIntervalSecond(2)
FROM numbers({int(n)})""")
    client.command(f"""
INSERT INTO feedback (request_id, job_id, source, score, metric, comment, created_at)
SELECT {request_id}, {job_id},
       'label', (cityHash64(number, 3) % 101) / 100, '', '', {at} + toIntervalSecond(5)
FROM numbers({int(n)}) WHERE number % 4 = 0""")
    client.command(f"""
INSERT INTO dead_letters (stage, reason, original, original_base64, topic, partition, offset, job_id, tenant,
                          key, created_at)
SELECT ['router', 'sink', 'worker-small'][number % 3 + 1],
       ['invalid request: body.messages missing', 'not valid JSON: line 1', 'too large: 5000000 bytes'][number % 3 + 1],
       '', '', 'queries', 0, number, {dl_job_id}, {dl_tenant}, '', {dl_at}
FROM numbers({max(1, int(n) // 1000)})""")


RAW_BY_TIER = """
SELECT r.tier AS tier, count() AS requests, sum(r.cost_usd) AS cost_usd, count(f.score) AS graded,
       avg(f.score) AS quality, quantiles(0.5, 0.9, 0.99)(r.end_to_end_ms) AS e2e
FROM (SELECT * FROM results FINAL) AS r
LEFT JOIN (SELECT request_id, avg(score) AS score FROM feedback FINAL GROUP BY request_id) AS f USING request_id
GROUP BY tier ORDER BY tier
SETTINGS join_use_nulls = 1
"""


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def run(client, n: int, repeats: int = 3) -> dict:
    apply_schema(client)
    fill_s, _ = _timed(lambda: fill_synthetic(client, n))
    apply_analytics(client, 3600, {"large": ("m", 3.0, 15.0)})  # refreshed here, not by the schedule
    refresh_s = min(_timed(lambda: refresh_analytics(client))[0] for _ in range(repeats))

    def ask(name: str, **params: str):
        sql, bound = bind(name, params, None)
        return client.query(sql, parameters=bound).result_rows

    questions = {f"outcomes by {by}": (lambda by=by: ask("outcomes", by=by))
                 for by in ("tier", "cluster", "tenant", "router_version", "day")}
    questions["outcomes_grid"] = lambda: ask("outcomes_grid")
    questions["dead_letters_by_reason"] = lambda: ask("dead_letters_by_reason")
    report = {name: round(min(_timed(q)[0] for _ in range(repeats)), 4) for name, q in questions.items()}
    raw_s = min(_timed(lambda: client.query(RAW_BY_TIER).result_rows)[0] for _ in range(repeats))
    rows = client.query("SELECT (SELECT count() FROM results) AS results, (SELECT count() FROM decisions) AS decisions, "
                        "(SELECT count() FROM analytics.outcomes_hourly) AS aggregate_rows, "
                        "(SELECT sum(requests) FROM analytics.outcomes_hourly) AS aggregated_requests, "
                        "(SELECT sum(graded) FROM analytics.outcomes_hourly) AS aggregated_graded").result_rows[0]
    return {"requests": n, "results_rows": rows[0], "decisions_rows": rows[1], "aggregate_rows": rows[2],
            "aggregated_requests": rows[3], "aggregated_graded": rows[4],
            "fill_seconds": round(fill_s, 3), "refresh_seconds": round(refresh_s, 3),
            "report_seconds": report, "raw_final_by_tier_seconds": round(raw_s, 4),
            "raw_over_view_by_tier": round(raw_s / max(report["outcomes by tier"], 1e-9), 1),
            "repeats": repeats, "timing": "best of repeats, wall-clock, this machine"}
