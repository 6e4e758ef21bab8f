"""The semantic cache on the real lean stack (embedded broker, faust router stream, SmolLM2 on every
tier, chDB sink): repeats and paraphrases of answered queries are hits, stored as such and
counted by job completion and the report; another tenant's identical queries never are."""
from __future__ import annotations

import re
import time
import urllib.request

import pytest

from infra.auth import Keyring
from switchyard.warehouse import Warehouse
from tests.conftest import lean_settings, request_line, run_job

ORIGINALS = {
    "france": "What is the capital of France?",
    "sky": "What colour is the sky?",
    "adder": "Write a python function that adds two numbers.",
    "spider": "How many legs does a spider have?",
}
PARAPHRASES = {"sky": "What color is the sky?", "spider": "How many legs do spiders have?"}  # cosine 0.99, 0.97


@pytest.fixture(scope="module")
def cached_stack(tmp_path_factory):
    from switchyard.stack import Stack

    settings = lean_settings(tmp_path_factory.mktemp("cache-stack"))
    settings.cache.enabled = True
    settings.retrain.enabled = False  # fewer processes to start on 2 cores; not needed here
    settings.api.enabled = False
    stack = Stack(settings)
    stack.start(timeout=300)
    yield stack
    stack.stop()


def _rows(settings, sql: str, job: str) -> list[dict]:
    wh = Warehouse.open(settings)
    try:
        return wh.rows(sql, {"job": job})
    finally:
        wh.close()


def _wait_rows(settings, sql: str, job: str, n: int, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(rows := _rows(settings, sql, job)) < n and time.monotonic() < deadline:
        time.sleep(0.3)
    return rows


def _cache_entries(stack) -> float:
    token = Keyring(stack.settings.secrets_dir).operator_token()
    req = urllib.request.Request(stack.info.metrics_urls["router"], headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    m = re.search(r"^switchyard_cache_entries (\S+)$", text, flags=re.M)
    return float(m.group(1)) if m else 0.0


def _wait_learned(stack, n: int, timeout: float = 20) -> None:
    """The router learns answers from `results` a moment after the client has seen them."""
    deadline = time.monotonic() + timeout
    while _cache_entries(stack) < n:
        assert time.monotonic() < deadline, f"the router's cache holds {_cache_entries(stack)} answers, not {n}"
        time.sleep(0.3)


RESULTS = ("SELECT custom_id, cache_hit, cache_match, cache_source_request_id, cache_similarity, cost_usd, "
           "prompt_tokens, completion_tokens, answer FROM results FINAL WHERE job_id = {job:String}")
DECIDED = "SELECT custom_id FROM decisions FINAL WHERE job_id = {job:String}"


def test_repeats_and_paraphrases_get_measured_hits_and_no_hit_crosses_tenants(cached_stack):
    s = cached_stack.settings
    started = time.monotonic()
    _, first = run_job(s, [request_line(cid, p) for cid, p in ORIGINALS.items()], "cache-first", tenant="acme")
    assert all(r.status == "ok" and not r.cache_hit for r in first.results.values())
    _wait_learned(cached_stack, len(ORIGINALS))

    # The second job repeats two queries (one with other whitespace), paraphrases two, asks one
    # new one, and repeats one with opt-out and one sampled: 4 hits, 3 routed.
    lines = [request_line("again-france", ORIGINALS["france"]),
             request_line("again-adder", "  " + ORIGINALS["adder"].replace(" ", "   ")),
             *[request_line(f"para-{cid}", p) for cid, p in PARAPHRASES.items()],
             request_line("new", "Name a planet."),
             request_line("optout", ORIGINALS["france"], routing={"cache": False}),
             request_line("sampled", ORIGINALS["sky"], body={"messages": [{"role": "user", "content": ORIGINALS["sky"]}],
                                                             "max_tokens": 8, "temperature": 0.8})]
    sub, second = run_job(s, lines, "cache-second", tenant="acme")
    assert set(second.results) == sub.expected  # job completion counts the hits
    hits = {cid for cid, r in second.results.items() if r.cache_hit}
    assert hits == {"again-france", "again-adder", "para-sky", "para-spider"}
    for cid in hits:
        r = second.results[cid]
        source = cid.split("-", 1)[1]
        assert r.cache_source_request_id == f"cache-first:{source}"
        assert r.answer_text() == first.results[source].answer_text() and r.cost_usd == 0
        assert r.cache_match == ("exact" if cid.startswith("again") else "similar")

    # Another tenant sends the very same queries: no hit from the first tenant's answers.
    _, other = run_job(s, [request_line(cid, p) for cid, p in ORIGINALS.items()], "cache-other", tenant="globex")
    assert not any(r.cache_hit for r in other.results.values()) and len(other.results) == len(ORIGINALS)

    # Stored: hits are result rows with their source and similarity, and no decision row.
    stored = {r["custom_id"]: r for r in _wait_rows(s, RESULTS, "cache-second", len(lines))}
    assert {cid for cid, r in stored.items() if r["cache_hit"]} == hits
    for cid in hits:
        row = stored[cid]
        assert row["cache_source_request_id"] == f"cache-first:{cid.split('-', 1)[1]}"
        assert row["cost_usd"] == 0 and row["prompt_tokens"] == row["completion_tokens"] == 0
        assert (row["cache_similarity"] == 1.0) == (row["cache_match"] == "exact")
        assert row["cache_match"] == "exact" or 0.95 <= row["cache_similarity"] < 1.0
    decided = {r["custom_id"] for r in _wait_rows(s, DECIDED, "cache-second", len(lines) - len(hits))}
    assert decided == {"new", "optout", "sampled"}
    other_rows = _wait_rows(s, RESULTS, "cache-other", len(ORIGINALS))
    assert not any(r["cache_hit"] for r in other_rows)

    # The report's figure, from the analytics views; and the status counts.
    wh = Warehouse.open(s)
    try:
        wh.refresh_analytics()
        report = {r["job"]: r for r in wh.ask("outcomes", by="job")}
        status = wh.ask("job_status", job="cache-second")[0]
    finally:
        wh.close()
    assert report["cache-second"]["cache_hits"] == 4 and report["cache-second"]["requests"] == 7
    assert report["cache-second"]["cache_hit_rate"] == pytest.approx(4 / 7)
    assert report["cache-first"]["cache_hits"] == 0 and report["cache-other"]["cache_hits"] == 0
    assert (status["answered"], status["routed"], status["cached"]) == (7, 3, 4)

    from rich.console import Console

    from switchyard.console import report_table

    console = Console(width=200, record=True)
    console.print(report_table(list(report.values()), "job"))
    assert "4 (57%)" in console.export_text()

    # What a restarted router would refill from: the answered, routed requests (through the
    # sink's read endpoint, as the router process reads them).
    from switchyard.cache_refill import stored_answers

    refill = {(r["tenant"], r["custom_id"]) for r in stored_answers(s, wait_seconds=5)}
    assert {("acme", c) for c in ORIGINALS} <= refill and ("globex", "france") in refill
    assert not {("acme", c) for c in hits} & refill  # hits are never sources
    assert time.monotonic() - started < 90
