"""`switchyard`: the user's door to the stack."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from importlib.resources import files
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.markup import escape
from rich.table import Table

from schemas.common import TIERS
from switchyard.settings import Settings, get_settings

app = typer.Typer(help="Switchyard: route batch LLM requests to the cheapest model that answers well.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
stage_app = typer.Typer(help="Run one stage of the stack (used by `switchyard up`).", hidden=True)
app.add_typer(stage_app, name="stage")
console = Console(stderr=True)
out = Console()

try:  # the router brain's commands live beside the router (router fit/route, bench routing)
    from switchyard.cli_router import bench_app, router_app

    app.add_typer(router_app, name="router")
    app.add_typer(bench_app, name="bench")
except ImportError:  # pragma: no cover
    bench_app = typer.Typer(help="Benchmarks.")
    app.add_typer(bench_app, name="bench")


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


def _kafka_settings(settings: Settings):
    """An explicit SWITCHYARD_KAFKA__BOOTSTRAP wins; otherwise the running local stack's broker."""
    from switchyard.stack import StackInfo, info_path

    if "SWITCHYARD_KAFKA__BOOTSTRAP" not in os.environ:
        info = StackInfo.load(info_path(settings))
        if info is None:
            console.print("[red]No running stack found.[/] Start one with `switchyard up` "
                          "or set SWITCHYARD_KAFKA__BOOTSTRAP.")
            raise typer.Exit(2)
        settings.kafka.bootstrap = info.bootstrap
    return settings.kafka


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


# --- up ------------------------------------------------------------------------------------


@app.command()
def up(
    all_tiers_small: bool = typer.Option(False, help="Serve every tier with the small model (lean)."),
    engine: str = typer.Option("serve", help="serve: Ray Serve deployments; inprocess: no Ray."),
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


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


def submit_job(settings: Settings, file: Path, job_id: str | None, tenant: str, wait: bool,
               timeout: float):
    from switchyard.jobs import JobFile, JobFileError, prepare, publish, wait_for

    try:
        job = JobFile.read(file)
    except JobFileError as exc:
        _fail(str(exc))
    job_id = job_id or job.default_job_id()
    sub, messages = prepare(job, job_id, tenant)
    for number, reason in sub.invalid:
        console.print(f"[yellow]line {number}:[/] {reason} (sent; it will be dead-lettered)")
    kafka = _kafka_settings(settings)
    with _progress() as bar:
        task = bar.add_task(f"publishing {job_id}", total=len(messages))
        asyncio.run(publish(kafka, sub, messages, lambda n: bar.advance(task, n)))
        outcome = None
        if wait:
            task = bar.add_task("answered", total=len(sub.expected))
            outcome = asyncio.run(wait_for(kafka, sub, timeout, lambda n: bar.advance(task, n)))
    return sub, outcome


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
    sub, outcome = submit_job(settings, file, job_id, tenant, wait, timeout)
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
        _fail(f"no results for job {job_id}", code=1)
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
        _fail(str(exc))
    kafka = _kafka_settings(settings)
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
        _fail(f"--by must be one of {', '.join(OUTCOMES_BY)}")
    wh = Warehouse.open(_settings())
    try:
        rows = wh.rows(outcomes_sql(by, job_id is not None), {"job": job_id} if job_id else {})
    finally:
        wh.close()
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    out.print(outcomes_table(rows, by))


def outcomes_table(rows: list[dict], by: str) -> Table:
    table = Table(by, "requests", "errors", "graded", "quality", "cost USD", "p50 ms", "p95 ms")
    for r in rows:
        quality = "-" if r["quality"] is None else f"{r['quality']:.2f}"
        table.add_row(str(r[by]), str(r["requests"]), str(r["errors"]), str(r["graded"]), quality,
                      f"{r['cost_usd']:.6f}", f"{r['p50_ms']:.0f}", f"{r['p95_ms']:.0f}")
    return table


# --- demo --------------------------------------------------------------------------------------


@app.command()
def demo(
    all_tiers_small: bool = typer.Option(False, help="Serve every tier with the small model (lean)."),
    engine: str = typer.Option("serve", help="serve: Ray Serve deployments; inprocess: no Ray."),
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


@stage_app.command("router")
def stage_router() -> None:
    from streams.router_app import run

    _stage_logging()
    run(get_settings())


@stage_app.command("sink")
def stage_sink() -> None:
    from streams.sink import run_sink
    from switchyard.stack import mark_ready

    _stage_logging()
    settings = get_settings()
    asyncio.run(run_sink(settings, on_ready=lambda: mark_ready(settings, "sink")))


@stage_app.command("worker")
def stage_worker(tier: str = typer.Option(..., help="small | medium | large")) -> None:
    from switchyard.stack import mark_ready
    from workers.tier_worker import run_tier_worker

    if tier not in TIERS:
        _fail(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")
    _stage_logging()
    settings = get_settings()
    asyncio.run(run_tier_worker(tier, settings, on_ready=lambda: mark_ready(settings, f"worker-{tier}")))  # type: ignore[arg-type]


@stage_app.command("serve")
def stage_serve() -> None:
    """Start Ray Serve with one deployment per tier and keep it up until SIGTERM."""
    import signal

    from switchyard.stack import mark_ready
    from workers.serve import start_serve, stop_serve

    _stage_logging()
    settings = get_settings()
    cluster = start_serve(settings, TIERS)
    mark_ready(settings, "serve", cluster.gcs_address)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        while not stopping:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop_serve(settings)


if __name__ == "__main__":
    app()
