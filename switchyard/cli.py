"""`switchyard`: the user's door to the stack."""
from __future__ import annotations

import asyncio
import json
import logging
from importlib.resources import files
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from schemas.common import TIERS
from switchyard.cli_learning import experiment_app, feedback, retrain_command
from switchyard.cli_router import bench_app, router_app
from switchyard.console import console, fail, kafka_for_cli, out, outcomes_table, submit_job
from switchyard.settings import Settings, get_settings

app = typer.Typer(help="Switchyard: route batch LLM requests to the cheapest model that answers well.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
stage_app = typer.Typer(help="Run one stage of the stack (used by `switchyard up`).", hidden=True)
app.add_typer(stage_app, name="stage")
app.add_typer(router_app, name="router")
app.add_typer(bench_app, name="bench")
app.add_typer(experiment_app, name="experiment")
app.command("feedback")(feedback)
app.command("retrain")(retrain_command)


@bench_app.command("pipeline")
def bench_pipeline(requests: int = typer.Option(256, help="Queries through the router stage."),
                   sink_rows: int = typer.Option(2000, help="Rows through the ClickHouse writer."),
                   json_out: Path = typer.Option(Path("bench-pipeline.json"), "--json")) -> None:
    """Router and sink stage throughput at two batch sizes, side by side; writes JSON."""
    from switchyard.bench_pipeline import run

    with console.status("measuring the router and sink stages…"):
        figures = run(requests, sink_rows)
    json_out.write_text(json.dumps(figures, indent=2))
    out.print_json(json.dumps(figures))


def _settings(all_tiers_small: bool | None = None, engine: str | None = None) -> Settings:
    settings = get_settings()
    if all_tiers_small is not None:
        settings.workers.all_tiers_small = all_tiers_small
    if engine is not None:
        settings.workers.engine = engine  # type: ignore[assignment]
    return settings


# --- up ------------------------------------------------------------------------------------


@app.command()
def up(
    all_tiers_small: Optional[bool] = typer.Option(
        None, "--all-tiers-small/--no-all-tiers-small",
        help="Serve every tier with the small model (lean). Default: SWITCHYARD_WORKERS__ALL_TIERS_SMALL, else off."),
    engine: Optional[str] = typer.Option(
        None, help="serve: Ray Serve deployments; inprocess: no Ray. Default: SWITCHYARD_WORKERS__ENGINE, else serve."),
) -> None:
    """Start the embedded stack in the foreground; Ctrl-C stops every process."""
    from switchyard.stack import Stack, StackError

    settings = _settings(all_tiers_small, engine)
    stack = Stack(settings)
    try:
        with console.status("starting broker, Ray Serve and stages (first start assembles models)…"):
            info = stack.start()
        console.print(f"[green]Switchyard is up.[/] broker {info.bootstrap}; logs in {settings.data_dir}/logs")
        console.print("Submit work with `switchyard submit FILE.jsonl --wait`. Ctrl-C stops.")
        stack.supervise()
    except KeyboardInterrupt:
        console.print("stopping…")
    except StackError as exc:
        console.print(f"[red]stack failed:[/] {exc}")
        raise typer.Exit(1)
    finally:
        stack.stop()


@app.command()
def init() -> None:
    """Create the topics and ClickHouse tables on an existing Kafka and ClickHouse (production)."""
    from infra.broker import create_topics_sync
    from infra.clickhouse import apply_schema, connect

    settings = _settings()
    create_topics_sync(settings.kafka.bootstrap, settings.kafka.topic_prefix)
    client = connect(settings.clickhouse_dsn)
    try:
        apply_schema(client)
    finally:
        client.close()
    console.print(f"topics created on {settings.kafka.bootstrap}; tables ready at {settings.clickhouse_dsn}")


# --- submit / status / results ---------------------------------------------------------------


@app.command()
def submit(
    file: Path = typer.Argument(..., help="OpenAI Batch style JSONL, one request per line."),
    wait: bool = typer.Option(False, "--wait", help="Wait for every answer, with a progress bar."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="With --wait: write OpenAI Batch output here."),
    job_id: Optional[str] = typer.Option(None, help="Default: derived from the file's content (idempotent)."),
    tenant: str = typer.Option("default"),
    timeout: float = typer.Option(1800, help="Seconds to wait with --wait."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary."),
) -> None:
    """Publish a job to the queries topic."""
    from switchyard.jobs import write_batch_output

    settings = _settings()
    sub, outcome = submit_job(kafka_for_cli(settings), file, job_id, tenant, wait, timeout)
    summary = {"job_id": sub.job_id, "sent": sub.sent, "valid": len(sub.expected),
               "invalid": len(sub.invalid)}
    if outcome is not None:
        summary.update(answered=len(outcome.results),
                       errors=sum(r.status == "error" for r in outcome.results.values()),
                       dead_letters=len(outcome.dead_letters), timed_out=outcome.timed_out)
        for letter in outcome.dead_letters:
            console.print(f"[yellow]dead letter[/] ({letter.stage}): {letter.reason}")
        if out_file:
            write_batch_output(out_file, outcome)
            summary["out"] = str(out_file)
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        console.print(summary)
    if outcome is not None and outcome.timed_out:
        raise typer.Exit(1)


@app.command()
def status(job_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Progress and per-tier figures of a job, from ClickHouse."""
    from switchyard.warehouse import JOB_STATUS, Warehouse, outcomes_sql

    wh = Warehouse.open(_settings())
    try:
        counts = wh.rows(JOB_STATUS, {"job": job_id})[0]
        tiers = wh.rows(outcomes_sql("tier", job_filter=True), {"job": job_id})
    finally:
        wh.close()
    if as_json:
        out.print_json(json.dumps({"job_id": job_id, **counts, "tiers": tiers}, default=str))
        return
    out.print(f"job {job_id}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    out.print(outcomes_table(tiers, "tier"))


@app.command()
def results(job_id: str, out_file: Optional[Path] = typer.Option(None, "--out"),
            as_json: bool = typer.Option(False, "--json")) -> None:
    """A job's answers from ClickHouse (JSON lines with --json or --out)."""
    from switchyard.warehouse import JOB_DEAD_LETTERS, JOB_RESULTS, Warehouse

    wh = Warehouse.open(_settings())
    try:
        rows = wh.rows(JOB_RESULTS, {"job": job_id})
        dead = wh.rows(JOB_DEAD_LETTERS, {"job": job_id})
    finally:
        wh.close()
    for letter in dead:  # on stderr, so --json output stays one result per line
        console.print(f"[yellow]dead letter[/] ({letter['stage']}, {letter['topic']}@{letter['offset']}): "
                      f"{escape(letter['reason'])}", highlight=False)
    if not rows:
        fail(f"no results for job {job_id}", code=1)
    if out_file or as_json:
        lines = [json.dumps({k: v for k, v in r.items() if k != "response"}, default=str) for r in rows]
        if out_file:
            out_file.write_text("\n".join(lines) + "\n")
            console.print(f"wrote {len(rows)} results to {out_file}")
        else:
            for line in lines:
                out.print(line, highlight=False, soft_wrap=True)
        return
    table = Table("custom_id", "tier", "cluster", "status", "answer")
    for r in rows:
        answer = (r["answer"] or r["error"]).replace("\n", " ")
        table.add_row(r["custom_id"], r["tier"], str(r["cluster"]), r["status"], answer[:80])
    out.print(table)


@app.command()
def grade(job_id: str,
          references: Path = typer.Option(..., help="JSONL of {custom_id, metric, ground_truth, choices?, query?}."),
          timeout: float = typer.Option(60, help="Seconds to wait for the job's results on Kafka."),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Grade a job's answers against references and publish the grades as feedback."""
    from switchyard.feedback import auto_grade, publish_feedback, read_references
    from switchyard.jobs import Submission, wait_for

    settings = _settings()
    try:
        refs = read_references(references)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    kafka = kafka_for_cli(settings)
    outcome = asyncio.run(wait_for(kafka, Submission(job_id=job_id, tenant="", expected=set(refs)), timeout))
    feedback = auto_grade(outcome.results.values(), refs)
    asyncio.run(publish_feedback(kafka, feedback))
    mean = sum(f.score for f in feedback) / len(feedback) if feedback else None
    summary = {"job_id": job_id, "graded": len(feedback), "missing": len(refs) - len(outcome.results),
               "mean_score": mean}
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        console.print(summary)


@app.command()
def report(job_id: Optional[str] = typer.Option(None, "--job", help="One job; default: everything."),
           by: str = typer.Option("tier", help="tier | cluster | tenant | model"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Routing outcomes from ClickHouse: volume, quality (feedback), cost and latency."""
    from switchyard.warehouse import OUTCOMES_BY, Warehouse, outcomes_sql

    if by not in OUTCOMES_BY:
        fail(f"--by must be one of {', '.join(OUTCOMES_BY)}")
    wh = Warehouse.open(_settings())
    try:
        rows = wh.rows(outcomes_sql(by, job_id is not None), {"job": job_id} if job_id else {})
    finally:
        wh.close()
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    out.print(outcomes_table(rows, by))


# --- demo --------------------------------------------------------------------------------------


@app.command()
def demo(
    all_tiers_small: Optional[bool] = typer.Option(
        None, "--all-tiers-small/--no-all-tiers-small",
        help="Serve every tier with the small model (lean). Default: SWITCHYARD_WORKERS__ALL_TIERS_SMALL, else off."),
    engine: Optional[str] = typer.Option(
        None, help="serve: Ray Serve deployments; inprocess: no Ray. Default: SWITCHYARD_WORKERS__ENGINE, else serve."),
    job_file: Optional[Path] = typer.Option(None, help="Default: the bundled sample job."),
) -> None:
    """Bring the stack up, run the bundled sample job, print a summary, shut down."""
    from switchyard.demo import run_demo

    settings = _settings(all_tiers_small, engine)
    job_file = job_file or Path(str(files("switchyard").joinpath("data/sample_job.jsonl")))
    summary = run_demo(settings, job_file, console, out)
    print(json.dumps(summary), flush=True)
    if summary["answered"] < summary["valid"]:
        raise typer.Exit(1)


# --- stages ------------------------------------------------------------------------------------


def _stage_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _run_stage(name: str, run) -> None:
    from switchyard.stack import mark_ready

    _stage_logging()
    settings = get_settings()
    run(settings, lambda content: mark_ready(settings, name, content))


@stage_app.command("router")
def stage_router() -> None:
    from switchyard.stages import run_router

    _run_stage("router", run_router)


@stage_app.command("sink")
def stage_sink() -> None:
    from switchyard.stages import run_sink

    _run_stage("sink", run_sink)


@stage_app.command("worker")
def stage_worker(tier: str = typer.Option(..., help="small | medium | large")) -> None:
    from switchyard.stages import run_worker

    if tier not in TIERS:
        fail(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")
    _run_stage(f"worker-{tier}", lambda settings, ready: run_worker(tier, settings, ready))  # type: ignore[arg-type]


@stage_app.command("retrainer")
def stage_retrainer() -> None:
    """Retrain every N new feedback rows or T minutes (settings.retrain)."""
    from switchyard.stages import run_retrainer

    _run_stage("retrainer", run_retrainer)


@stage_app.command("serve")
def stage_serve() -> None:
    """Start Ray Serve with one deployment per tier and keep it up until SIGTERM."""
    from switchyard.stages import run_serve

    _run_stage("serve", run_serve)


if __name__ == "__main__":
    app()
