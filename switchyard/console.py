"""What the CLI and the demo share: the consoles, error exits, progress bars, the outcomes table
and submitting a job file."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import re
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams.config import KafkaSettings
from switchyard.settings import Settings

console = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


class PlainProgress:
    """What a progress bar becomes when its console is not a terminal (a log file, CI, a pipe):
    one plain line per tenth of a task's total, per description change and at the end, instead of
    a bar redrawn in place. The subset of rich's Progress the CLI uses."""

    def __init__(self, target: Console, steps: int = 10):
        self.target, self.steps = target, steps
        self.tasks: dict[int, dict] = {}

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def add_task(self, description: str, total: float | None = None, **_) -> int:
        task_id = len(self.tasks)
        self.tasks[task_id] = {"description": description, "total": total, "completed": 0, "said": -1, "done": False}
        self._say(task_id, force=True)
        return task_id

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, completed: float | None = None, advance: float | None = None,
               description: str | None = None, **_) -> None:
        task = self.tasks[task_id]
        changed = description is not None and description != task["description"]
        if description is not None:
            task["description"] = description
        if completed is not None:
            task["completed"] = completed
        if advance:
            task["completed"] += advance
        self._say(task_id, force=changed)

    def stop(self) -> None:
        for task_id, task in self.tasks.items():
            if not task["done"]:
                task["done"] = True
                self._line(task)

    def _say(self, task_id: int, force: bool = False) -> None:
        task = self.tasks[task_id]
        total = task["total"]
        step = int(task["completed"] * self.steps // total) if total else 0
        if force or step > task["said"]:
            task["said"] = step
            self._line(task)

    def _line(self, task: dict) -> None:
        total = f"/{task['total']:g}" if task["total"] else ""
        self.target.print(f"{task['description']}: {task['completed']:g}{total}", highlight=False, soft_wrap=True)


def progress(target: Console | None = None, transient: bool = False) -> Progress | PlainProgress:
    """A progress bar on `target` (default: stderr), or plain lines when it is not a terminal."""
    target = target or console
    if not target.is_terminal:
        return PlainProgress(target)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=target, transient=transient)


def kafka_for_cli(settings: Settings) -> KafkaSettings:
    """An explicit SWITCHYARD_KAFKA__BOOTSTRAP wins; otherwise the running local stack's broker."""
    from switchyard.stack import running_stack

    if "SWITCHYARD_KAFKA__BOOTSTRAP" in os.environ:
        return settings.kafka
    info = running_stack(settings)  # a stack.json whose process is gone is no stack
    if info is None:
        console.print("[red]No running stack found.[/] Start one with `switchyard up` "
                      "or set SWITCHYARD_KAFKA__BOOTSTRAP.")
        raise typer.Exit(2)
    return settings.kafka.model_copy(update={"bootstrap": info.bootstrap})


def quiet_kafka_logs() -> None:
    """aiokafka logs every failed reconnect at WARNING/ERROR (hundreds of lines when the broker
    is gone); the CLI says what happened once, itself."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def submit_job(kafka: KafkaSettings, file: Path, job_id: str | None, tenant: str, wait: bool,
               timeout: float, count_stored=None, stored_timeout: float = 120):
    """`count_stored`: how many of the job's requests ClickHouse holds; given, submit returns only
    once all are stored (or after `stored_timeout`, with `sub.stored` short)."""
    from switchyard.jobs import BrokerLost, JobFile, JobFileError, prepare, publish, wait_for, wait_stored

    try:
        job = JobFile.read(file)
    except JobFileError as exc:
        fail(str(exc))
    job_id = job_id or job.default_job_id(tenant)
    sub, messages = prepare(job, job_id, tenant)
    lettered = {d.offset for d in sub.letters}
    for number, reason in sub.invalid:
        how = "dead-lettered at submit" if number in lettered else "sent; it will be dead-lettered"
        console.print(f"[yellow]line {number}:[/] {escape(reason)} ({how})")
    for number, warning in sub.warnings:
        console.print(f"[yellow]line {number}:[/] {escape(warning)}")
    with progress() as bar:
        task = bar.add_task(f"publishing {job_id}", total=len(messages))
        quiet_kafka_logs()
        try:
            asyncio.run(publish(kafka, sub, messages, lambda n: bar.advance(task, n)))
        except BrokerLost as exc:
            bar.stop()
            fail(f"lost the broker while publishing {job_id} ({exc.sent} of {len(messages)} sent; {exc}); "
                 f"keep {file} and submit it again once the stack is back (re-submitting is idempotent)",
                 code=1)
        if count_stored is not None:
            stored_task = bar.add_task("stored in ClickHouse", total=len(sub.expected))
            sub.stored = wait_stored(lambda: count_stored(job_id), len(sub.expected), stored_timeout)
            bar.update(stored_task, completed=sub.stored)
        outcome = None
        if wait:
            task = bar.add_task("answered", total=len(sub.expected))
            outcome = asyncio.run(wait_for(kafka, sub, timeout, lambda n: bar.advance(task, n)))
    if outcome is not None:
        for line in warning_summary(outcome.results.values()):
            console.print(f"[yellow]warning:[/] {escape(line)}")
        hits = Counter(r.cache_match for r in outcome.results.values() if r.cache_hit)
        if hits:
            console.print(f"{_answers(sum(hits.values()))} answered from the semantic cache "
                          f"({hits['exact']} exact, {hits['similar']} similar)")
    return sub, outcome


def warning_summary(results) -> list[str]:
    """One line per kind of result warning: "12 answers were capped at 256 tokens"."""
    capped: Counter[str] = Counter()
    other_model: Counter[str] = Counter()
    rest: Counter[str] = Counter()
    for result in results:
        for w in result.warnings:
            if m := re.fullmatch(r"max_tokens \d+ capped at (\d+)", w):
                capped[m.group(1)] += 1
            elif m := re.fullmatch(r"model (.+) is not served here; (.+) answered", w):
                other_model[f"{m.group(1)} was asked for; {m.group(2)} answered"] += 1
            else:
                rest[w] += 1
    lines = [f"{_answers(n)} capped at {cap} tokens" for cap, n in capped.items()]
    lines += [f"{_answers(n)} not from the model named: {what}" for what, n in other_model.items()]
    lines += [f"{_answers(n)}: {w}" for w, n in rest.items()]
    return lines


def _answers(n: int) -> str:
    return f"{n} answer was" if n == 1 else f"{n} answers were"


def outcomes_table(rows: list[dict], by: str) -> Table:
    table = Table(by, "requests", "errors", "graded", "quality", "cost USD", "p50 ms", "p95 ms")
    for r in rows:
        quality = "-" if r["quality"] is None else f"{r['quality']:.2f}"
        table.add_row(str(r[by]), str(r["requests"]), str(r["errors"]), str(r["graded"]), quality,
                      f"{r['cost_usd']:.6f}", f"{r['p50_ms']:.0f}", f"{r['p95_ms']:.0f}")
    return table


def _ms(quantiles) -> str:
    return " / ".join(f"{q:.0f}" for q in quantiles) if quantiles else "-"


def report_table(rows: list[dict], by: str) -> Table:
    table = Table(by, "requests", "errors", "cache hits", "graded", "quality", "cost USD", "at large USD", "saved",
                  "e2e ms p50/p90/p99")
    for r in rows:
        quality = "-" if r["quality"] is None else f"{r['quality']:.2f}"
        at_large = r["cost_at_large_usd"]
        saved = "-" if not at_large else f"{1 - r['cost_usd'] / at_large:.0%}"
        name = r.get("label") or (r.get("representative") or "")[:40]
        key = str(r[by]) + (f" {escape(name)}" if name else "")
        hits = r.get("cache_hits") or 0
        cached = f"{hits} ({hits / r['requests']:.0%})" if hits and r["requests"] else str(hits)
        table.add_row(key, str(r["requests"]), str(r["errors"]), cached, str(r["graded"]), quality,
                      f"{r['cost_usd']:.6f}", f"{at_large:.6f}", saved, _ms(r["end_to_end_ms_p50_p90_p99"]))
    return table


def drift_table(rows: list[dict]) -> Table:
    table = Table("job", "router version", "requests", "mix drift",
                  title="cluster mix vs the router's training mix (total variation: 0 same, 1 disjoint)")
    for r in rows:
        table.add_row(escape(r["job_id"]), r["router_version"], str(r["requests"]), f"{float(r['drift']):.2f}")
    return table


def dead_letters_table(rows: list[dict]) -> Table:
    table = Table("stage", "reason", "dead letters", title="dead letters")
    for r in rows:
        table.add_row(r["stage"], escape(r["reason"]), str(r["dead_letters"]))
    return table


_AGO = re.compile(r"^(\d+)\s*([mhd])$")


def since_to_utc(since: str, now: dt.datetime | None = None) -> str:
    """'30m' / '24h' / '7d' ago, or a date or date-time (read as UTC without a zone), as an ISO
    UTC string; ValueError with the accepted forms otherwise."""
    now = now or dt.datetime.now(dt.timezone.utc)
    m = _AGO.match(since.strip())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        at = now - dt.timedelta(minutes=n * {"m": 1, "h": 60, "d": 1440}[unit])
    else:
        try:
            at = dt.datetime.fromisoformat(since.strip())
        except ValueError:
            raise ValueError(f"--since {since!r}: give 30m, 24h, 7d or a date/time such as 2026-12-01T08:00") from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=dt.timezone.utc)
    return at.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
