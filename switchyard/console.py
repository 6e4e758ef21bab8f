"""What the CLI and the demo share: the consoles, error exits, progress bars, the outcomes table
and submitting a job file."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams.config import KafkaSettings
from switchyard.settings import Settings

console = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


def kafka_for_cli(settings: Settings) -> KafkaSettings:
    """An explicit SWITCHYARD_KAFKA__BOOTSTRAP wins; otherwise the running local stack's broker."""
    from switchyard.stack import StackInfo, info_path

    if "SWITCHYARD_KAFKA__BOOTSTRAP" in os.environ:
        return settings.kafka
    info = StackInfo.load(info_path(settings))
    if info is None:
        console.print("[red]No running stack found.[/] Start one with `switchyard up` "
                      "or set SWITCHYARD_KAFKA__BOOTSTRAP.")
        raise typer.Exit(2)
    return settings.kafka.model_copy(update={"bootstrap": info.bootstrap})


def submit_job(kafka: KafkaSettings, file: Path, job_id: str | None, tenant: str, wait: bool,
               timeout: float):
    from switchyard.jobs import JobFile, JobFileError, prepare, publish, wait_for

    try:
        job = JobFile.read(file)
    except JobFileError as exc:
        fail(str(exc))
    job_id = job_id or job.default_job_id()
    sub, messages = prepare(job, job_id, tenant)
    for number, reason in sub.invalid:
        console.print(f"[yellow]line {number}:[/] {reason} (sent; it will be dead-lettered)")
    with progress() as bar:
        task = bar.add_task(f"publishing {job_id}", total=len(messages))
        asyncio.run(publish(kafka, sub, messages, lambda n: bar.advance(task, n)))
        outcome = None
        if wait:
            task = bar.add_task("answered", total=len(sub.expected))
            outcome = asyncio.run(wait_for(kafka, sub, timeout, lambda n: bar.advance(task, n)))
    return sub, outcome


def outcomes_table(rows: list[dict], by: str) -> Table:
    table = Table(by, "requests", "errors", "graded", "quality", "cost USD", "p50 ms", "p95 ms")
    for r in rows:
        quality = "-" if r["quality"] is None else f"{r['quality']:.2f}"
        table.add_row(str(r[by]), str(r["requests"]), str(r["errors"]), str(r["graded"]), quality,
                      f"{r['cost_usd']:.6f}", f"{r['p50_ms']:.0f}", f"{r['p95_ms']:.0f}")
    return table
