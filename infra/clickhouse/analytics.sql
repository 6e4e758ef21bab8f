-- Analytics: aggregate tables for routing outcomes, recomputed from the deduplicated base tables.
--
-- Why refreshable materialized views and not insert-triggered ones: an insert-triggered view sees
-- every inserted block, and a replay re-inserts rows that the ReplacingMergeTree base tables
-- later collapse (same request id): the aggregate would count them twice, and sums (cost, tokens)
-- cannot be de-duplicated after aggregation. A refreshable view re-runs its SELECT over `FINAL`
-- on a schedule and swaps the result in atomically, so an aggregate is always the aggregate of
-- the de-duplicated rows, at most one refresh period old. (At larger scale the same view can
-- recompute only recent hours: REFRESH ... APPEND into a ReplacingMergeTree keyed by the hour.)
-- Refreshable views need an Atomic database; chDB's default database is not one.
-- {refresh_seconds} is filled in from settings (clickhouse.analytics_refresh_seconds).

CREATE DATABASE IF NOT EXISTS analytics ENGINE = Atomic;

-- The served tiers' prices, written by the sink at start from its settings: "cost avoided" prices
-- every answer with the large tier's prices.
CREATE TABLE IF NOT EXISTS analytics.tier_prices (
    tier LowCardinality(String),
    model String,
    price_per_mtok_in Float64,
    price_per_mtok_out Float64,
    updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY tier;

-- The view definitions may change between releases; they hold only derived data, so they are
-- dropped and created again (the first refresh runs at once).
DROP VIEW IF EXISTS analytics.outcomes_hourly;

-- One row per hour × tenant × job × tier × cluster × model × router version: volume, tokens, cost,
-- cost at the large tier's prices, graded quality (mean feedback score per request) and latency
-- quantile states (merge with quantilesMerge(0.5, 0.9, 0.99)).
CREATE MATERIALIZED VIEW analytics.outcomes_hourly
REFRESH EVERY {refresh_seconds} SECOND
ENGINE = MergeTree ORDER BY (hour, tenant, job_id, tier, cluster)
AS WITH
    (SELECT any(price_per_mtok_in) FROM analytics.tier_prices FINAL WHERE tier = 'large') AS large_in,
    (SELECT any(price_per_mtok_out) FROM analytics.tier_prices FINAL WHERE tier = 'large') AS large_out
SELECT
    toStartOfHour(r.finished_at) AS hour,
    r.tenant AS tenant,
    r.job_id AS job_id,
    r.tier AS tier,
    ifNull(d.cluster, -1) AS cluster,
    r.model AS model,
    r.router_version AS router_version,
    count() AS requests,
    countIf(r.status = 'error') AS errors,
    countIf(notEmpty(r.fallback_from)) AS fallbacks,
    countIf(ifNull(d.explored, false)) AS explored,
    countIf(r.cache_hit) AS cache_hits,
    sum(r.prompt_tokens) AS prompt_tokens,
    sum(r.completion_tokens) AS completion_tokens,
    sum(r.cost_usd) AS cost_usd,
    sum((r.prompt_tokens * large_in + r.completion_tokens * large_out) / 1e6)
        AS cost_at_large_usd,
    count(f.score) AS graded,
    sum(ifNull(f.score, 0)) AS score_sum,
    quantilesState(0.5, 0.9, 0.99)(r.end_to_end_ms) AS end_to_end_ms,
    quantilesState(0.5, 0.9, 0.99)(r.model_latency_ms) AS model_latency_ms
FROM (SELECT * FROM results FINAL) AS r
LEFT JOIN (SELECT request_id, cluster, explored FROM decisions FINAL) AS d ON d.request_id = r.request_id
LEFT JOIN (SELECT request_id, avg(score) AS score FROM feedback FINAL GROUP BY request_id) AS f
    ON f.request_id = r.request_id
GROUP BY hour, tenant, job_id, tier, cluster, model, router_version
SETTINGS join_use_nulls = 1;

DROP VIEW IF EXISTS analytics.dead_letters_hourly;

-- Dead letters per hour × tenant × job × stage × reason (the reason up to its first ':', which
-- keeps the kind and drops the particulars).
CREATE MATERIALIZED VIEW analytics.dead_letters_hourly
REFRESH EVERY {refresh_seconds} SECOND
ENGINE = MergeTree ORDER BY (hour, tenant, stage)
AS SELECT
    toStartOfHour(created_at) AS hour,
    tenant,
    job_id,
    stage,
    substring(splitByChar(':', reason)[1], 1, 120) AS reason,
    count() AS n
FROM dead_letters FINAL
GROUP BY hour, tenant, job_id, stage, reason
;

DROP VIEW IF EXISTS analytics.cluster_labels;

-- A readable label per tenant × router version × semantic cluster: the cluster's four most
-- frequent words (four letters or more, common words left out) and its most frequent query
-- (its first 160 characters), from the tenant's own requests only, so no tenant reads another's
-- words. The text is the last message's content (its first text part when it is a list).
CREATE MATERIALIZED VIEW analytics.cluster_labels
REFRESH EVERY {refresh_seconds} SECOND
ENGINE = MergeTree ORDER BY (tenant, router_version, cluster)
AS WITH base AS (
    SELECT d.tenant AS tenant, d.router_version AS router_version, d.cluster AS cluster,
           if(JSONType(q.body, 'messages', -1, 'content') = 'Array',
              JSONExtractString(q.body, 'messages', -1, 'content', 1, 'text'),
              JSONExtractString(q.body, 'messages', -1, 'content')) AS text
    FROM (SELECT request_id, tenant, router_version, cluster FROM decisions FINAL) AS d
    INNER JOIN (SELECT request_id, body FROM requests FINAL) AS q ON q.request_id = d.request_id
)
SELECT r.tenant AS tenant, r.router_version AS router_version, r.cluster AS cluster, r.requests AS requests,
       w.label AS label, r.representative AS representative
FROM (
    SELECT tenant, router_version, cluster, count() AS requests,
           topK(1)(substring(text, 1, 160))[1] AS representative
    FROM base GROUP BY tenant, router_version, cluster
) AS r
LEFT JOIN (
    SELECT tenant, router_version, cluster, arrayStringConcat(topK(4)(word), ' ') AS label
    FROM (
        SELECT tenant, router_version, cluster, arrayJoin(arrayFilter(x -> NOT has([
            'what', 'which', 'that', 'this', 'with', 'from', 'your', 'have', 'about', 'there', 'their',
            'would', 'could', 'should', 'these', 'those', 'than', 'then', 'into', 'when', 'where', 'were',
            'been', 'will', 'they', 'them', 'does', 'each', 'only', 'some', 'such', 'give', 'write',
            'answer', 'question', 'following', 'below', 'above', 'please', 'just', 'also', 'more', 'most',
            'other', 'many', 'much', 'very', 'here', 'after', 'before', 'because', 'being', 'over', 'under',
            'between', 'both', 'same', 'like', 'make', 'made', 'number', 'choose', 'correct', 'options'
        ], x), extractAll(lower(text), '[a-z]{4,}'))) AS word
        FROM base
    ) GROUP BY tenant, router_version, cluster
) AS w ON w.tenant = r.tenant AND w.router_version = r.router_version AND w.cluster = r.cluster
;

-- The training mix (share of training queries per cluster) of every router the stream may run:
-- retrained versions bring theirs on `router.models` (router_versions.training_mix); the shipped
-- or configured artifact's is written by the sink at start.
CREATE TABLE IF NOT EXISTS analytics.router_training_mix (
    router_version String,
    shares Array(Float64),
    updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY router_version;

CREATE OR REPLACE VIEW analytics.training_mix AS
SELECT router_version, argMax(shares, updated_at) AS shares FROM (
    SELECT router_version, shares, updated_at FROM analytics.router_training_mix
    UNION ALL
    SELECT version AS router_version, training_mix AS shares, created_at AS updated_at
    FROM router_versions FINAL WHERE verdict = 'published' AND notEmpty(training_mix)
) GROUP BY router_version;

-- Mix drift per tenant × job × router version: how far the job's cluster histogram (its routing
-- decisions) is from the training mix of the router that routed it, as total variation distance
-- 1 − Σ min(p_live, p_train): 0 = the training mix, 1 = no cluster in common. A plain view (not
-- refreshed): always current. Routers without a recorded training mix are left out.
CREATE OR REPLACE VIEW analytics.mix_drift AS
WITH live AS (
    SELECT tenant, job_id, router_version, cluster, count() AS n,
           sum(count()) OVER (PARTITION BY tenant, job_id, router_version) AS total,
           min(min(decided_at)) OVER (PARTITION BY tenant, job_id, router_version) AS first_at
    FROM decisions FINAL
    WHERE router_version IN (SELECT router_version FROM analytics.training_mix)
    GROUP BY tenant, job_id, router_version, cluster
), train AS (
    SELECT router_version, toInt32(i - 1) AS cluster, share
    FROM analytics.training_mix ARRAY JOIN shares AS share, arrayEnumerate(shares) AS i
)
SELECT l.tenant AS tenant, l.job_id AS job_id, l.router_version AS router_version,
       any(l.total) AS requests, any(l.first_at) AS first_decided_at,
       greatest(0, 1 - sum(least(l.n / l.total, t.share))) AS drift
FROM live AS l
LEFT JOIN train AS t ON t.router_version = l.router_version AND t.cluster = l.cluster
GROUP BY tenant, job_id, router_version
