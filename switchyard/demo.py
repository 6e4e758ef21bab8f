"""`switchyard demo`: the whole path, end to end, on the embedded stack."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rich.console import Console

from switchyard.console import outcomes_table, submit_job
from switchyard.settings import Settings
from switchyard.stack import Stack
from switchyard.warehouse import Warehouse

FEEDBACK_N = "SELECT count() AS n FROM feedback FINAL WHERE job_id = {job:String}"


def wait_until_stored(settings: Settings, job_id: str, expected: dict[str, int], timeout: float = 120) -> bool:
    """The submitter sees results on Kafka first; the sink writes them a moment later. True once
    ClickHouse holds the expected counts, False if it still does not after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        wh = Warehouse.open(settings)
        try:
            counts = wh.ask("job_status", job=job_id)[0]
            counts["feedback"] = wh.rows(FEEDBACK_N, {"job": job_id})[0]["n"]
        finally:
            wh.close()
        if all(counts[k] >= n for k, n in expected.items()):
            return True
        time.sleep(0.5)
    return False


def references_for(job_file: Path) -> Path | None:
    refs = job_file.with_name(job_file.name.replace(".jsonl", ".grades.jsonl"))
    return refs if refs.exists() and refs != job_file else None


def run_demo(settings: Settings, job_file: Path, console: Console, out: Console) -> dict:
    from switchyard.feedback import auto_grade, publish_feedback, read_references

    started = time.monotonic()
    stack = Stack(settings)
    try:
        with console.status("starting the stack (the first start assembles the models)…"):
            info = stack.start()
        console.print(f"stack up in {time.monotonic() - started:.0f}s (broker {info.bootstrap})")
        settings = stack.settings  # the running stack's (broker address, query port)
        sub, outcome = submit_job(settings.kafka, job_file, None, "demo", wait=True, timeout=1200)
        cached = sum(r.cache_hit for r in outcome.results.values())  # answered with no decision
        expected = {"answered": len(sub.expected), "routed": len(sub.expected) - cached,
                    "dead_letters": len(sub.invalid)}
        refs_path = references_for(job_file)
        if refs_path is not None:  # grade the answers and send the grades as feedback
            feedback = auto_grade(outcome.results.values(), read_references(refs_path))
            asyncio.run(publish_feedback(settings.kafka, feedback))
            expected["feedback"] = len(feedback)
        wait_until_stored(settings, sub.job_id, expected)
        console.print("stopping the stack…")
    finally:
        stack.stop()
    # The stack is down: the in-process ClickHouse is ours to read directly.
    wh = Warehouse.open(settings)
    try:
        counts = wh.ask("job_status", job=sub.job_id)[0]
        tiers = wh.ask("job_tiers", job=sub.job_id)
        overall = wh.rows("SELECT quantile(0.5)(end_to_end_ms) AS p50, quantile(0.95)(end_to_end_ms) AS p95, "
                          "sum(cost_usd) AS cost FROM results FINAL WHERE job_id = {job:String}",
                          {"job": sub.job_id})[0]
    finally:
        wh.close()
    table = outcomes_table(tiers, "tier")
    table.title = f"job {sub.job_id}"
    out.print(table)
    for letter in outcome.dead_letters:
        console.print(f"dead letter: {letter.reason}")
    return {
        "job_id": sub.job_id,
        "valid": len(sub.expected),
        "answered": len(outcome.results),
        "errors": sum(r.status == "error" for r in outcome.results.values()),
        "dead_letters": len(outcome.dead_letters),
        "clickhouse": {"result_rows": counts["answered"], "decision_rows": counts["routed"],
                       "request_rows": counts["requests"]},
        "tiers": {t["tier"]: t["requests"] for t in tiers},
        "quality": {t["tier"]: None if t["quality"] is None else round(t["quality"], 3) for t in tiers},
        "latency_ms": {"p50": round(overall["p50"], 1), "p95": round(overall["p95"], 1)},
        "cost_usd": round(overall["cost"], 8),
        "wall_seconds": round(time.monotonic() - started, 1),
    }
