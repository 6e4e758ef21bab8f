"""The named questions anyone but the operator may ask of ClickHouse, and nothing else.

Each question is fixed SQL with typed parameters; every one is scoped to a tenant: a tenant's
caller always gets its own tenant (whatever it sends), the operator may name one or ask for
all (tenant ""). The sink's endpoint and the direct (embedded) reader both go through `bind`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

# True for the operator's "all tenants", else the row's tenant must be the caller's.
SCOPE = "({tenant:String} = '' OR tenant = {tenant:String})"


class QuestionError(ValueError):
    """An unknown question or a parameter it does not take."""


@dataclass(frozen=True)
class Question:
    name: str
    help: str
    sql: str | Callable[[dict[str, str]], str]
    params: tuple[str, ...] = ()  # required string parameters (besides the tenant)
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)  # optional, enumerated
    defaults: dict[str, str] = field(default_factory=dict)


JOB_STATUS = f"""
SELECT
    (SELECT count() FROM requests FINAL WHERE job_id = {{job:String}} AND {SCOPE}) AS requests,
    (SELECT count() FROM decisions FINAL WHERE job_id = {{job:String}} AND {SCOPE}) AS routed,
    (SELECT count() FROM results FINAL WHERE job_id = {{job:String}} AND {SCOPE}) AS answered,
    (SELECT countIf(status = 'error') FROM results FINAL WHERE job_id = {{job:String}} AND {SCOPE}) AS errors,
    (SELECT countIf(cache_hit) FROM results FINAL WHERE job_id = {{job:String}} AND {SCOPE}) AS cached,
    (SELECT count() FROM dead_letters FINAL WHERE job_id = {{job:String}} AND {SCOPE}) AS dead_letters
"""

JOB_RESULTS = f"""
SELECT r.custom_id AS custom_id, r.tier AS tier, r.model AS model, r.status AS status,
       r.answer AS answer, r.error AS error, r.response AS response,
       r.end_to_end_ms AS end_to_end_ms, r.cost_usd AS cost_usd, d.cluster AS cluster
FROM (SELECT * FROM results FINAL WHERE job_id = {{job:String}} AND {SCOPE}) AS r
LEFT JOIN (SELECT request_id, cluster FROM decisions FINAL WHERE job_id = {{job:String}} AND {SCOPE}) AS d
USING request_id
ORDER BY custom_id
"""

JOB_DEAD_LETTERS = f"""
SELECT stage, reason, original, topic, partition, offset
FROM dead_letters FINAL WHERE job_id = {{job:String}} AND {SCOPE} ORDER BY topic, partition, offset
"""

# A job's answers that nobody has rated yet (no feedback from any source), with their requests:
# what the LLM judge is asked to mark.
JOB_UNRATED = f"""
SELECT r.custom_id AS custom_id, r.tenant AS tenant, q.body AS body, r.answer AS answer
FROM (SELECT request_id, tenant, custom_id, answer FROM results FINAL
      WHERE job_id = {{job:String}} AND {SCOPE} AND status = 'ok') AS r
INNER JOIN (SELECT request_id, body FROM requests FINAL WHERE job_id = {{job:String}} AND {SCOPE}) AS q
    USING request_id
LEFT ANTI JOIN (SELECT DISTINCT request_id FROM feedback FINAL WHERE job_id = {{job:String}}) AS f USING request_id
ORDER BY custom_id
"""

# One job's figures per tier, live from the base tables (status polls it while the job runs).
JOB_TIERS = f"""
SELECT r.tier AS tier, count() AS requests, countIf(r.status = 'error') AS errors,
       count(f.score) AS graded, avg(f.score) AS quality,
       sum(r.cost_usd) AS cost_usd, quantile(0.5)(r.end_to_end_ms) AS p50_ms,
       quantile(0.95)(r.end_to_end_ms) AS p95_ms
FROM (SELECT * FROM results FINAL WHERE job_id = {{job:String}} AND {SCOPE}) AS r
LEFT JOIN (SELECT request_id, avg(score) AS score FROM feedback FINAL WHERE job_id = {{job:String}}
           GROUP BY request_id) AS f USING request_id
GROUP BY tier ORDER BY tier
SETTINGS join_use_nulls = 1
"""

# Routing outcomes for analysts, from the analytics views (infra/clickhouse/analytics.sql): volume,
# graded quality, cost, cost at the large tier's prices and what routing saved, latency quantiles.
OUTCOMES_BY = {"tier": "tier", "cluster": "cluster", "tenant": "tenant", "model": "model",
               "router_version": "router_version", "job": "job_id", "hour": "hour", "day": "toDate(hour)"}
# "" (or anything unparseable, which the CLI refuses first) means from the beginning.
SINCE = "ifNull(parseDateTime64BestEffortOrNull({since:String}, 3, 'UTC'), toDateTime64(0, 3, 'UTC'))"
ANALYTICS_WHERE = ("WHERE ({job:String} = '' OR job_id = {job:String}) AND " + SCOPE +
                   f" AND hour >= toStartOfHour({SINCE})")


def outcomes_sql(params: dict[str, str]) -> str:
    by = params["by"]
    grouped = _outcomes_grouped(by)
    if by != "cluster":
        return grouped
    # clusters get their label (analytics.cluster_labels; a cluster's label from the router
    # version that sent it most of the caller's requests)
    return f"""
SELECT o.*, l.label AS label, l.representative AS representative
FROM ({grouped.replace("SETTINGS prefer_column_name_to_alias = 1", "")}) AS o
LEFT JOIN (SELECT cluster, argMax(label, requests) AS label, argMax(representative, requests) AS representative
           FROM analytics.cluster_labels WHERE {SCOPE} GROUP BY cluster) AS l USING cluster
ORDER BY cluster
SETTINGS prefer_column_name_to_alias = 1
"""


def _outcomes_grouped(by: str) -> str:
    return f"""
SELECT {OUTCOMES_BY[by]} AS {by}, sum(requests) AS requests, sum(errors) AS errors,
       sum(fallbacks) AS fallbacks, sum(explored) AS explored,
       sum(cache_hits) AS cache_hits, if(sum(requests) = 0, 0, sum(cache_hits) / sum(requests)) AS cache_hit_rate,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
       sum(graded) AS graded, if(sum(graded) = 0, NULL, sum(score_sum) / sum(graded)) AS quality,
       sum(cost_usd) AS cost_usd, sum(cost_at_large_usd) AS cost_at_large_usd,
       sum(cost_at_large_usd) - sum(cost_usd) AS saved_usd,
       quantilesMerge(0.5, 0.9, 0.99)(end_to_end_ms) AS end_to_end_ms_p50_p90_p99,
       quantilesMerge(0.5, 0.9, 0.99)(model_latency_ms) AS model_latency_ms_p50_p90_p99
FROM analytics.outcomes_hourly {ANALYTICS_WHERE}
GROUP BY {by} ORDER BY {by}
SETTINGS prefer_column_name_to_alias = 1
"""


DEAD_LETTERS_BY_REASON = f"""
SELECT stage, reason, sum(n) AS dead_letters
FROM analytics.dead_letters_hourly {ANALYTICS_WHERE}
GROUP BY stage, reason ORDER BY dead_letters DESC, stage, reason
"""

# The dashboard's raw material: one row per hour × tier × cluster × router version × tenant.
OUTCOMES_GRID = f"""
SELECT hour, tenant, tier, cluster, router_version, sum(requests) AS requests, sum(graded) AS graded,
       sum(score_sum) AS score_sum, sum(cost_usd) AS cost_usd, sum(cost_at_large_usd) AS cost_at_large_usd,
       quantilesMerge(0.5, 0.9, 0.99)(end_to_end_ms) AS end_to_end_ms_p50_p90_p99
FROM analytics.outcomes_hourly {ANALYTICS_WHERE}
GROUP BY hour, tenant, tier, cluster, router_version ORDER BY hour, tenant, tier, cluster, router_version
SETTINGS prefer_column_name_to_alias = 1
"""

# End-to-end latencies of answered requests (a sample, for distributions).
LATENCY_SAMPLE = f"""
SELECT tier, end_to_end_ms FROM results FINAL
WHERE ({{job:String}} = '' OR job_id = {{job:String}}) AND {SCOPE}
  AND finished_at >= {SINCE}
  AND status = 'ok'
ORDER BY cityHash64(request_id) LIMIT 5000
"""

ANALYTICS_DEFAULTS = {"job": "", "since": ""}

CLUSTER_LABELS = f"""
SELECT cluster, argMax(label, requests) AS label, argMax(representative, requests) AS representative
FROM analytics.cluster_labels WHERE {SCOPE} GROUP BY cluster ORDER BY cluster
"""

# How far each job's cluster mix is from its router's training mix (analytics.mix_drift).
MIX_DRIFT = f"""
SELECT job_id, router_version, requests, round(drift, 4) AS drift, first_decided_at
FROM analytics.mix_drift
WHERE ({{job:String}} = '' OR job_id = {{job:String}}) AND {SCOPE} AND first_decided_at >= {SINCE}
ORDER BY first_decided_at DESC, job_id LIMIT 50
"""


QUESTIONS: dict[str, Question] = {q.name: q for q in (
    Question("job_status", "counts of a job's requests, decisions, results, errors, cache hits and dead letters",
             JOB_STATUS, params=("job",)),
    Question("job_results", "a job's answers, one row per request", JOB_RESULTS, params=("job",)),
    Question("job_dead_letters", "a job's dead letters with their reasons", JOB_DEAD_LETTERS,
             params=("job",)),
    Question("job_unrated", "a job's answers with no feedback yet, with their requests", JOB_UNRATED,
             params=("job",)),
    Question("job_tiers", "one job's volume, graded quality, cost and latency per tier", JOB_TIERS,
             params=("job",)),
    Question("outcomes", "volume, graded quality, cost, savings and latency, grouped (one job or all)",
             outcomes_sql, choices={"by": tuple(OUTCOMES_BY)}, defaults=ANALYTICS_DEFAULTS),
    Question("dead_letters_by_reason", "dead letters per stage and reason", DEAD_LETTERS_BY_REASON,
             defaults=ANALYTICS_DEFAULTS),
    Question("outcomes_grid", "outcomes per hour, tenant, tier, cluster and router version", OUTCOMES_GRID,
             defaults=ANALYTICS_DEFAULTS),
    Question("cluster_labels", "a label and a representative query per semantic cluster (your requests only)",
             CLUSTER_LABELS),
    Question("mix_drift", "per job: distance of its cluster mix from the router's training mix (0 same … 1 disjoint)",
             MIX_DRIFT, defaults=ANALYTICS_DEFAULTS),
    Question("latency_sample", "end-to-end latencies of up to 5,000 answers", LATENCY_SAMPLE,
             defaults=ANALYTICS_DEFAULTS),
)}


def bind(name: str, params: dict, tenant: str | None) -> tuple[str, dict[str, str]]:
    """The SQL and parameters for question `name` asked by a caller of `tenant` (None: the
    operator, who may pass `tenant` itself, "" meaning every tenant)."""
    question = QUESTIONS.get(name)
    if question is None:
        raise QuestionError(f"unknown question {name!r}; known: {', '.join(sorted(QUESTIONS))}")
    if not isinstance(params, dict):
        raise QuestionError("parameters must be a JSON object")
    allowed = set(question.params) | set(question.choices) | set(question.defaults) | {"tenant"}
    unknown = set(params) - allowed
    if unknown:
        raise QuestionError(f"{name} takes no parameter {', '.join(sorted(unknown))}")
    bound = {**question.defaults}
    for key, value in params.items():
        if not isinstance(value, str):
            raise QuestionError(f"{name}: parameter {key} must be a string")
        bound[key] = value
    missing = [p for p in question.params if not bound.get(p)]
    if missing:
        raise QuestionError(f"{name} needs {', '.join(missing)}")
    for key, options in question.choices.items():
        bound.setdefault(key, options[0])
        if bound[key] not in options:
            raise QuestionError(f"{name}: {key} must be one of {', '.join(options)}")
    bound["tenant"] = bound.get("tenant", "") if tenant is None else tenant
    sql = question.sql(bound) if callable(question.sql) else question.sql
    return sql, bound
