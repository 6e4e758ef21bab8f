-- Switchyard's ClickHouse tables. Every table is a ReplacingMergeTree keyed by the request
-- (or the Kafka coordinates for dead letters), so a replayed message never doubles a row:
-- query with FINAL (or argMax) to read the deduplicated view.

CREATE TABLE IF NOT EXISTS requests (
    request_id String,
    job_id String,
    tenant LowCardinality(String),
    custom_id String,
    body String,
    prompt_chars UInt32,
    policy String,
    submitted_at DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (job_id, request_id);

CREATE TABLE IF NOT EXISTS decisions (
    request_id String,
    job_id String,
    tenant LowCardinality(String),
    custom_id String,
    tier LowCardinality(String),
    cluster Int32,
    router_model LowCardinality(String),
    served_model LowCardinality(String),
    router_version LowCardinality(String),
    predicted_quality Float64,
    predicted_cost_usd Float64,
    scores Map(String, Float64),
    policy String,
    prompt_chars UInt32,
    explored Bool DEFAULT false,
    propensity Float64 DEFAULT 1,
    submitted_at DateTime64(3, 'UTC'),
    decided_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(decided_at)
ORDER BY (job_id, request_id);

-- Tables created before exploration existed get its columns.
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS explored Bool DEFAULT false;
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS propensity Float64 DEFAULT 1;

CREATE TABLE IF NOT EXISTS results (
    request_id String,
    job_id String,
    tenant LowCardinality(String),
    custom_id String,
    tier LowCardinality(String),
    model LowCardinality(String),
    status LowCardinality(String),
    response String,
    answer String,
    error String,
    prompt_tokens UInt32,
    completion_tokens UInt32,
    cost_usd Float64,
    model_latency_ms Float64,
    end_to_end_ms Float64,
    router_version LowCardinality(String),
    submitted_at DateTime64(3, 'UTC'),
    finished_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(finished_at)
ORDER BY (job_id, request_id);

-- What a result did not do as asked (max_tokens capped, another model than the one named).
ALTER TABLE results ADD COLUMN IF NOT EXISTS warnings Array(String) DEFAULT [];
-- The tiers whose model failed a request before `tier` answered it (the breaker's fallback chain).
ALTER TABLE results ADD COLUMN IF NOT EXISTS fallback_from Array(LowCardinality(String)) DEFAULT [];
-- Answered by the semantic cache (docs/cache.md): the request whose answer it is, the cosine of
-- the two queries (1 for an exact hit) and how it matched ('exact' or 'similar'); '' / 0 otherwise.
ALTER TABLE results ADD COLUMN IF NOT EXISTS cache_hit Bool DEFAULT false;
ALTER TABLE results ADD COLUMN IF NOT EXISTS cache_source_request_id String DEFAULT '';
ALTER TABLE results ADD COLUMN IF NOT EXISTS cache_similarity Float64 DEFAULT 0;
ALTER TABLE results ADD COLUMN IF NOT EXISTS cache_match LowCardinality(String) DEFAULT '';

CREATE TABLE IF NOT EXISTS feedback (
    request_id String,
    job_id String,
    source LowCardinality(String),
    score Float64,
    metric String,
    comment String,
    created_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(created_at)
ORDER BY (job_id, request_id, source);

CREATE TABLE IF NOT EXISTS dead_letters (
    stage LowCardinality(String),
    reason String,
    original String,
    original_base64 String,
    topic String,
    partition Int32,
    offset Int64,
    job_id String,
    key String,
    created_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(created_at)
ORDER BY (stage, topic, partition, offset);

ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS tenant LowCardinality(String) DEFAULT '' AFTER job_id;

-- Every retrained candidate and the gate's verdict (from router.models): published versions
-- keep their artifact, so a fresh broker can be given the live version back.
CREATE TABLE IF NOT EXISTS router_versions (
    version String,
    parent_version String,
    verdict LowCardinality(String),
    reason String,
    metrics String,
    n_outcomes UInt32,
    artifact_base64 String,
    created_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(created_at)
ORDER BY (version, verdict);

ALTER TABLE router_versions ADD COLUMN IF NOT EXISTS training_mix Array(Float64) AFTER artifact_base64;

-- The router's training rows: one per graded answer, joining the decision (tier, exploration,
-- propensity, version), the result (served model, cost, latency), the request (its body, for
-- the query text) and the request's feedback (mean score over sources).
-- OR REPLACE: a changed definition reaches existing data dirs. Answers a fallback tier gave (a
-- breaker was open) are left out: the tier that answered is not the one the log's propensity is for;
-- so are answers from the semantic cache (no model ran for that request).
CREATE OR REPLACE VIEW training_outcomes AS
SELECT
    d.request_id AS request_id, d.job_id AS job_id, d.tenant AS tenant, d.custom_id AS custom_id, q.body AS body,
    d.tier AS tier, r.model AS served_model, r.status AS status, f.score AS score,
    f.sources AS feedback_sources, r.cost_usd AS cost_usd, r.completion_tokens AS completion_tokens,
    r.model_latency_ms AS model_latency_ms, r.end_to_end_ms AS end_to_end_ms,
    d.router_version AS router_version, d.cluster AS cluster, d.explored AS explored,
    d.propensity AS propensity, f.feedback_at AS feedback_at
FROM (SELECT * FROM decisions FINAL) AS d
INNER JOIN (SELECT * FROM results FINAL WHERE empty(fallback_from) AND NOT cache_hit) AS r ON r.request_id = d.request_id
INNER JOIN (SELECT request_id, body FROM requests FINAL) AS q ON q.request_id = d.request_id
INNER JOIN (
    SELECT request_id, avg(score) AS score, groupUniqArray(source) AS sources, max(created_at) AS feedback_at
    FROM feedback FINAL GROUP BY request_id
) AS f ON f.request_id = d.request_id;
