"""The operator's recovery commands (mounted by switchyard.cli): `replay JOB` after a broker loss,
`dlq list|replay` for dead letters, `chaos` to prove both under fire."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from switchyard.access import open_warehouse, require_operator
from switchyard.console import console, fail, kafka_for_cli, out, quiet_kafka_logs
from switchyard.settings import get_settings

dlq_app = typer.Typer(help="Dead letters: list them, re-drive them after a fix (the operator's).",
                      no_args_is_help=True)


def replay_command(job_id: str = typer.Argument(..., help="The job to re-publish unanswered requests of."),
                   dry_run: bool = typer.Option(False, "--dry-run", help="Count, publish nothing."),
                   as_json: bool = typer.Option(False, "--json")) -> None:
    """Re-publish every stored request of JOB that has no result (after a broker loss); answered
    ones are skipped, and the tables stay one row per request."""
    from switchyard.replay import ReplayError, replay
    from switchyard.warehouse import WarehouseError

    settings = get_settings()
    require_operator(settings, "replaying")
    quiet_kafka_logs()
    kafka = None if dry_run else kafka_for_cli(settings)
    wh = open_warehouse(settings)
    try:
        report = asyncio.run(replay(wh.rows, kafka, job_id, dry_run=dry_run))
    except (ReplayError, WarehouseError) as exc:
        fail(str(exc), code=1)
    finally:
        wh.close()
    if as_json:
        out.print_json(json.dumps({"job_id": job_id, "replayed": report.replayed,
                                   "skipped_answered": report.skipped_answered, "dry_run": dry_run}))
    else:
        console.print(report.line() + (" (dry run: nothing sent)" if dry_run else ""))


def _letters(job: str | None, stage: str | None, reason_contains: str | None):
    from switchyard.dlq import letters
    from switchyard.warehouse import WarehouseError

    settings = get_settings()
    require_operator(settings, "reading dead letters across jobs")
    wh = open_warehouse(settings)
    try:
        return settings, letters(wh.rows, job, stage, reason_contains)
    except WarehouseError as exc:
        fail(str(exc))
    finally:
        wh.close()


@dlq_app.command("list")
def dlq_list(job: Optional[str] = typer.Option(None, "--job"),
             stage: Optional[str] = typer.Option(None, "--stage", help="router | worker | sink | ..."),
             reason_contains: Optional[str] = typer.Option(None, "--reason-contains"),
             as_json: bool = typer.Option(False, "--json", help="One JSON object per line.")) -> None:
    """Dead letters with their stage, reason, job, custom_id and Kafka coordinates."""
    _, found = _letters(job, stage, reason_contains)
    if as_json:
        for letter in found:
            out.print(json.dumps(letter.summary()), highlight=False, soft_wrap=True)
        return
    table = Table("stage", "job", "custom_id", "topic@partition:offset", "reason")
    for letter in found:
        table.add_row(letter.stage, letter.job_id, letter.custom_id or "-",
                      f"{letter.topic}@{letter.partition}:{letter.offset}", escape(letter.reason[:120]))
    out.print(table)
    console.print(f"{len(found)} dead letter(s)")


@dlq_app.command("replay")
def dlq_replay(job: Optional[str] = typer.Option(None, "--job"),
               stage: Optional[str] = typer.Option(None, "--stage"),
               reason_contains: Optional[str] = typer.Option(None, "--reason-contains"),
               dry_run: bool = typer.Option(False, "--dry-run", help="Count, publish nothing."),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Re-publish dead letters' original bytes to their original topic, with their key."""
    from switchyard.dlq import replay

    settings, found = _letters(job, stage, reason_contains)
    quiet_kafka_logs()
    kafka = None if dry_run or not found else kafka_for_cli(settings)
    report = asyncio.run(replay(kafka, found, dry_run=dry_run))
    if as_json:
        out.print_json(json.dumps({"replayed": report.replayed, "truncated": report.truncated,
                                   "by_topic": report.by_topic, "dry_run": dry_run}))
    else:
        console.print(report.line(dry_run))


def chaos_command(requests: int = typer.Option(200, "--requests", min=12, help="Requests in the job."),
                  json_out: Path = typer.Option(Path("chaos.json"), "--json", help="Write the report here."),
                  seed: int = typer.Option(0, help="Which stages die, and when."),
                  data_dir: Optional[Path] = typer.Option(
                      None, help="The run's own stack directory (default: a new one under SWITCHYARD_DATA_DIR)."),
                  timeout: float = typer.Option(1800, help="Seconds to wait for every answer.")) -> None:
    """A job on the embedded lean stack while it kills and restarts the router, a tier worker,
    the sink and the broker (then replays), injects bad messages and fails one tier's model;
    reports submitted, answered, lost, duplicated, dead-lettered and the breaker's timings."""
    import time

    from switchyard.chaos import ChaosError, run_chaos

    settings = get_settings()
    require_operator(settings, "a chaos run")
    quiet_kafka_logs()
    settings.data_dir = data_dir or settings.data_dir / f"chaos-{time.strftime('%Y%m%d-%H%M%S')}"
    settings.clickhouse.dsn = None  # the run's own embedded engine, never a shared server
    settings.workers.engine, settings.workers.all_tiers_small = "inprocess", True
    try:
        report = run_chaos(settings, requests, seed, lambda line: console.print(escape(line)), timeout)
    except ChaosError as exc:
        fail(str(exc), code=1)
    json_out.write_text(json.dumps(report, indent=2))
    out.print_json(json.dumps({k: v for k, v in report.items() if k != "events"}))
    if report["lost"] or report["duplicated"] or report["bad_dead_lettered_with_reason"] < report["injected_bad"]:
        raise typer.Exit(1)
