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
    submitted_at DateTime64(3, 'UTC'),
    decided_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(decided_at)
ORDER BY (job_id, request_id);

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
