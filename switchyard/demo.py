"""`switchyard demo`: the whole path, end to end, on the embedded stack."""
from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from switchyard.settings import Settings
from switchyard.stack import Stack
from switchyard.warehouse import JOB_BY_TIER, JOB_STATUS, Warehouse


def wait_until_stored(settings: Settings, job_id: str, expected: int, timeout: float = 120) -> dict:
    """The submitter sees results on Kafka first; the sink writes them a moment later."""
    deadline = time.monotonic() + timeout
    while True:
        wh = Warehouse.open(settings)
        try:
            counts = wh.rows(JOB_STATUS, {"job": job_id})[0]
        finally:
            wh.close()
        if (counts["answered"] >= expected and counts["routed"] >= expected) or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)


def run_demo(settings: Settings, job_file: Path, console: Console, out: Console) -> dict:
    from switchyard.cli import submit_job

    started = time.monotonic()
    stack = Stack(settings)
    try:
        with console.status("starting the stack (the first start assembles the models)…"):
            info = stack.start()
        console.print(f"stack up in {time.monotonic() - started:.0f}s (broker {info.bootstrap})")
        sub, outcome = submit_job(settings, job_file, None, "demo", wait=True, timeout=1200)
        wait_until_stored(settings, sub.job_id, len(sub.expected))
        console.print("stopping the stack…")
    finally:
        stack.stop()
    # The stack is down: the in-process ClickHouse is ours to read directly.
    wh = Warehouse.open(settings)
    try:
        counts = wh.rows(JOB_STATUS, {"job": sub.job_id})[0]
        tiers = wh.rows(JOB_BY_TIER, {"job": sub.job_id})
        latency = wh.rows("SELECT quantile(0.5)(end_to_end_ms) AS p50, quantile(0.95)(end_to_end_ms) AS p95, "
                          "sum(cost_usd) AS cost FROM results FINAL WHERE job_id = {job:String}",
                          {"job": sub.job_id})[0]
    finally:
        wh.close()
    table = Table("tier", "model", "requests", "p50 ms", "p95 ms", "cost USD", title=f"job {sub.job_id}")
    for t in tiers:
        table.add_row(t["tier"], t["model"], str(t["requests"]), f"{t['p50_ms']:.0f}",
                      f"{t['p95_ms']:.0f}", f"{t['cost_usd']:.6f}")
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
        "latency_ms": {"p50": round(latency["p50"], 1), "p95": round(latency["p95"], 1)},
        "cost_usd": round(latency["cost"], 8),
        "wall_seconds": round(time.monotonic() - started, 1),
    }
