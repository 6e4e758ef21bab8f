"""The analytics views on a real lean stack: the report's per-tier and per-cluster figures add up
to the de-duplicated base tables, also after a job was published twice (every row doubled in
the ReplacingMergeTree tables until they merge)."""
from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time

import pytest

from schemas import Feedback
from switchyard.feedback import publish_feedback
from switchyard.warehouse import Warehouse
from tests.conftest import request_line, run_job

JOB = "analytics-job"
PROMPTS = ["What is 2 + {i}?", "Write one word for the colour of grass, number {i}.",
           "def add_{i}(a, b): complete this Python function", "Name a capital city, number {i}."]


def _rows(settings, sql: str, params: dict | None = None) -> list[dict]:
    wh = Warehouse.open(settings)
    try:
        return wh.rows(sql, params or {})
    finally:
        wh.close()


def _wait(settings, sql: str, params: dict, done, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        got = _rows(settings, sql, params)
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


RAW = """
SELECT {key} AS key, count() AS requests, sum(r.cost_usd) AS cost_usd, sum(r.completion_tokens) AS completion_tokens,
       sum(f.graded) AS graded, sum(f.score) AS score_sum
FROM (SELECT * FROM results FINAL WHERE job_id = {{job:String}}) AS r
LEFT JOIN (SELECT request_id, cluster FROM decisions FINAL WHERE job_id = {{job:String}}) AS d USING request_id
LEFT JOIN (SELECT request_id, avg(score) AS score, 1 AS graded FROM feedback FINAL WHERE job_id = {{job:String}}
           GROUP BY request_id) AS f USING request_id
GROUP BY key ORDER BY key
"""


def _report(stack, by: str) -> dict:
    env = {**os.environ, "SWITCHYARD_DATA_DIR": str(stack.settings.data_dir)}
    env.pop("SWITCHYARD_API_KEY", None)  # the operator
    done = subprocess.run([sys.executable, "-m", "switchyard.cli", "report", "--job", JOB, "--by", by, "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def doubled_job(stack):
    """A 12-request job published twice (a replay of the whole job), with feedback on 6 of them,
    sent twice as well."""
    s = stack.settings
    lines = [request_line(f"q{i}", PROMPTS[i % len(PROMPTS)].format(i=i)) for i in range(12)]
    feedback = [Feedback(request_id=f"{JOB}:q{i}", job_id=JOB, source="label", score=(i % 3) / 2)
                for i in range(6)]
    answered = ("SELECT count() AS n, min(finished_at) AS first, max(finished_at) AS last FROM results FINAL "
                "WHERE job_id = {job:String}")
    run_job(s, lines, JOB)
    asyncio.run(publish_feedback(s.kafka, feedback))
    first = _wait(s, answered, {"job": JOB}, lambda r: r[0]["n"] == 12)[0]
    run_job(s, lines, JOB)  # the same request ids again: every table gets each row a second time
    asyncio.run(publish_feedback(s.kafka, feedback))
    # FINAL keeps the latest version of a row: once every result is newer than the first run's
    # last one, every request was answered (and inserted) twice
    again = _wait(s, answered, {"job": JOB}, lambda r: str(r[0]["first"]) > str(first["last"]))[0]
    _wait(s, "SELECT count() AS n FROM feedback FINAL WHERE job_id = {job:String}", {"job": JOB},
          lambda r: r[0]["n"] == 6)
    return {"answered": again["n"], "replaced": str(again["first"]) > str(first["last"])}


@pytest.mark.parametrize("by,key", [("tier", "r.tier"), ("cluster", "d.cluster")])
def test_report_sums_equal_the_deduplicated_tables_after_a_replay(stack, doubled_job, by, key):
    assert doubled_job == {"answered": 12, "replaced": True}, "every result was stored a second time"
    report = _report(stack, by)
    raw = {r["key"]: r for r in _rows(stack.settings, RAW.format(key=key), {"job": JOB})}
    got = {r[by]: r for r in report["rows"]}
    assert set(got) == set(raw) and report["as_of"]
    assert sum(r["requests"] for r in got.values()) == 12
    for k, want in raw.items():
        row = got[k]
        assert row["requests"] == want["requests"], (k, row, want)
        assert row["graded"] == want["graded"]
        assert math.isclose(row["cost_usd"], want["cost_usd"], rel_tol=1e-9, abs_tol=1e-15)
        assert row["completion_tokens"] == want["completion_tokens"]
        if row["graded"]:
            assert math.isclose(row["quality"], want["score_sum"] / want["graded"], rel_tol=1e-9)
    assert sum(r["graded"] for r in got.values()) == 6
    if by == "cluster":  # every cluster is named from the job's own words ("What is 2 + 1?" has none to give)
        words = {w for p in PROMPTS for w in p.lower().replace(",", " ").replace(".", " ").split()}
        labels = [row["label"] for row in got.values()]
        assert any(labels) and all(set(label.split()) <= words for label in labels), labels
        for row in got.values():
            assert row["representative"].split(" ")[0] in {p.split(" ")[0] for p in PROMPTS}


def test_cost_at_large_prices_every_answer_with_the_large_tiers_prices(stack, doubled_job):
    prices = stack.settings.workers.models["small"]  # lean stack: the small model serves every tier
    tokens = _rows(stack.settings, "SELECT sum(prompt_tokens) AS p, sum(completion_tokens) AS c FROM results FINAL "
                                   "WHERE job_id = {job:String}", {"job": JOB})[0]
    (row,) = _report(stack, "job")["rows"]
    want = (tokens["p"] * prices.price_per_mtok_in + tokens["c"] * prices.price_per_mtok_out) / 1e6
    assert math.isclose(row["cost_at_large_usd"], want, rel_tol=1e-9)
    assert math.isclose(row["saved_usd"], row["cost_at_large_usd"] - row["cost_usd"], rel_tol=1e-9, abs_tol=1e-15)
    p50, p90, p99 = row["end_to_end_ms_p50_p90_p99"]
    assert 0 < p50 <= p90 <= p99


def _drift_report(stack, job: str) -> list[dict]:
    env = {**os.environ, "SWITCHYARD_DATA_DIR": str(stack.settings.data_dir)}
    env.pop("SWITCHYARD_API_KEY", None)
    done = subprocess.run([sys.executable, "-m", "switchyard.cli", "report", "--job", job, "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["drift"]


def test_report_shows_how_far_a_jobs_mix_is_from_the_routers_training_mix(stack):
    """Two jobs through the live router: one drawn like the shipped router's training queries
    (stratified by its clusters), one of a single kind. The report's drift for each equals the
    distance computed offline from the same router's clusters, and the single-kind job is far."""
    import gzip

    import numpy as np

    from router.artifact import load_default
    from router.embeddings import embed
    from router.learned import cluster_mix, mix_drift
    import switchyard

    router = load_default()
    assert router.training_mix, "the shipped router records its training mix"
    path = os.path.join(os.path.dirname(switchyard.__file__), "data", "local_outcomes.jsonl.gz")
    texts = sorted({json.loads(line)["query_text"] for line in gzip.open(path, "rt")}, key=len)
    clusters = router.predict(texts, embed(texts)).cluster
    like = []  # per cluster, its share of 24 requests, shortest texts first
    for c, share in enumerate(router.training_mix):
        like += [t for t, k in zip(texts, clusters) if k == c][: max(1, round(share * 24))]
    single = [f"Write a Python function add_{i}(a, b) that returns a + b." for i in range(12)]
    figures = {}
    for job, prompts in (("drift-like", like), ("drift-single", single)):
        run_job(stack.settings, [request_line(f"q{i}", p) for i, p in enumerate(prompts)], job)
        (row,) = _drift_report(stack, job)
        offline = mix_drift(cluster_mix(router.predict(prompts, embed(prompts)).cluster), router.training_mix)
        assert row["router_version"] == router.version and row["requests"] == len(prompts)
        assert abs(row["drift"] - offline) < 1e-3, (job, row, offline)
        figures[job] = row["drift"]
    assert figures["drift-single"] > 0.5 and figures["drift-single"] > figures["drift-like"] + 0.3, figures
