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
from switchyard.access import open_warehouse, require_own_job
from switchyard.cli_learning import experiment_app, feedback, retrain_command
from switchyard.cli_ops import chaos_command, dlq_app, replay_command
from switchyard.cli_router import bench_app, router_app
from switchyard.console import console, fail, kafka_for_cli, out, outcomes_table, quiet_kafka_logs, submit_job
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
app.command("replay")(replay_command)
app.command("chaos")(chaos_command)
app.add_typer(dlq_app, name="dlq")


@bench_app.command("pipeline")
def bench_pipeline(requests: int = typer.Option(256, help="Queries through the router stage."),
                   sink_rows: int = typer.Option(2000, help="Rows through the ClickHouse writer."),
                   offered_rps: float = typer.Option(200.0, min=0.1, help="Kafka path: requests per second offered."),
                   seconds: float = typer.Option(10.0, min=0.5, help="Kafka path: seconds of offered load."),
                   kafka: bool = typer.Option(True, "--kafka/--no-kafka",
                                              help="Also measure the path through Kafka (a lean echo stack)."),
                   json_out: Path = typer.Option(Path("bench-pipeline.json"), "--json")) -> None:
    """Router and sink stage throughput at two batch sizes, side by side, then the pipeline's own
    overhead through Kafka with an instant echo engine (docs/performance.md); writes JSON."""
    from switchyard.bench_pipeline import run

    if kafka:
        quiet_kafka_logs()
    with console.status("measuring the router and sink stages, then the Kafka path…" if kafka
                        else "measuring the router and sink stages…"):
        figures = run(requests, sink_rows, kafka=kafka, offered_rps=offered_rps, seconds=seconds)
    json_out.write_text(json.dumps(figures, indent=2))
    out.print_json(json.dumps(figures))


@bench_app.command("analytics")
def bench_analytics(requests: int = typer.Option(1_000_000, help="Synthetic requests (a decision and a result each)."),
                    json_out: Path = typer.Option(Path("bench-analytics.json"), "--json")) -> None:
    """The report's questions over N synthetic rows in a scratch chDB: view refresh, report
    queries, and the same per-tier figures straight from the base tables; writes JSON."""
    import tempfile

    from infra.clickhouse import connect
    from switchyard.bench_analytics import run

    with tempfile.TemporaryDirectory(prefix="switchyard-bench-analytics-") as scratch:
        client = connect(f"chdb://{scratch}")
        try:
            with console.status(f"generating {requests:,} requests and timing the report…"):
                figures = run(client, requests)
        finally:
            client.close()
    json_out.write_text(json.dumps(figures, indent=2))
    out.print_json(json.dumps(figures))


@bench_app.command("cache")
def bench_cache(entries: int = typer.Option(10_000, help="Answers the tenant's cache holds, all in one scope."),
                repeat: int = typer.Option(200, help="Lookups timed per path."),
                model_calls: int = typer.Option(8, help="Small-model calls timed."),
                max_tokens: int = typer.Option(32, help="Completion tokens per model call."),
                json_out: Path = typer.Option(Path("bench-cache.json"), "--json")) -> None:
    """A semantic-cache hit (exact and similar) against a call of the small model, per request,
    with the ratio (goal: a hit under 5% of a model call); writes JSON."""
    from switchyard.bench_cache import run

    with console.status("timing cache lookups and the small model…"):
        figures = run(entries, repeat, model_calls, max_tokens)
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
    """Start the embedded stack in the foreground; Ctrl-C or SIGTERM stops every process, in order."""
    import signal

    from switchyard.stack import Stack, StackError, clear_stale

    settings = _settings(all_tiers_small, engine)
    stale = clear_stale(settings)
    if stale:
        console.print(f"[yellow]{escape(stale)}[/]", soft_wrap=True)
    stack = Stack(settings)
    signal.signal(signal.SIGTERM, _interrupt)  # systemd, Docker and Kubernetes stop with SIGTERM
    try:
        with console.status("starting broker, Ray Serve and stages (first start assembles models)…"):
            info = stack.start()
        console.print(f"[green]Switchyard is up.[/] broker {info.bootstrap}; logs in {settings.data_dir}/logs")
        if info.api_url:
            console.print(f"OpenAI-compatible API at {info.api_url} (keys: `switchyard keys create --tenant T`)",
                          soft_wrap=True)
        if info.metrics_urls:
            console.print("Prometheus metrics (operator's bearer token): " +
                          ", ".join(f"{n} {u}" for n, u in info.metrics_urls.items()), soft_wrap=True)
        console.print("Submit work with `switchyard submit FILE.jsonl --wait`. Ctrl-C stops.")
        stack.supervise()
    except KeyboardInterrupt:
        console.print("stopping (draining in-flight work)…")
    except StackError as exc:
        console.print(f"[red]stack failed:[/] {exc}")
        raise typer.Exit(1)
    finally:
        # A second Ctrl-C must not cut the ordered stop short (kill -9 still ends everything:
        # the children die with this process).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


keys_app = typer.Typer(help="Tenants' API keys (the operator's; only their digests are stored).",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _keyring(settings: Settings):
    from infra.auth import Keyring

    if settings.api_key:
        fail("managing keys is the operator's; unset SWITCHYARD_API_KEY")
    return Keyring(settings.secrets_dir)


@keys_app.command("create")
def keys_create(name: str = typer.Option(..., "--tenant", help="The tenant the key reads and submits as.")) -> None:
    """Create an API key for a tenant; printed once (alone on the last line), only its digest is kept."""
    try:
        key = _keyring(_settings()).add_tenant(name)
    except ValueError as exc:
        fail(str(exc))
    console.print(f"API key for tenant {name!r} (shown once; give it to the tenant as SWITCHYARD_API_KEY):")
    out.print(key, highlight=False)


@keys_app.command("list")
def keys_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Tenants that have keys, with how many."""
    tenants = _keyring(_settings()).tenants()
    if as_json:
        out.print_json(json.dumps(tenants))
        return
    for name, keys in sorted(tenants.items()):
        out.print(f"{name}: {keys} key(s)")


@keys_app.command("revoke")
def keys_revoke(name: str = typer.Option(..., "--tenant")) -> None:
    """Revoke every key of a tenant (at once, also for a running stack)."""
    n = _keyring(_settings()).revoke_tenant(name)
    if not n:
        fail(f"tenant {name!r} has no keys", code=1)
    console.print(f"revoked {n} key(s) of tenant {name!r}")


@app.command()
def init() -> None:
    """Create the topics and ClickHouse tables on an existing Kafka and ClickHouse (production)."""
    from aiokafka.errors import KafkaError

    from infra.broker import create_topics_sync
    from infra.clickhouse import apply_analytics, apply_schema, connect
    from switchyard.live_router import training_mixes
    from workers.tiers import price_table

    settings = _settings()
    quiet_kafka_logs()  # the error below says it once
    try:
        create_topics_sync(settings.kafka.bootstrap, settings.kafka.topic_prefix, settings.kafka.partitions)
    except KafkaError as exc:
        fail(f"cannot create the topics on Kafka at {settings.kafka.bootstrap}: {exc}")
    client = connect(settings.clickhouse_dsn)
    try:
        apply_schema(client)
        apply_analytics(client, settings.clickhouse.analytics_refresh_seconds, price_table(settings.workers),
                        training_mixes(settings))
    finally:
        client.close()
    console.print(f"topics created on {settings.kafka.bootstrap}; tables ready at {settings.clickhouse_dsn}")


# --- submit / status / results ---------------------------------------------------------------


@app.command()
def submit(
    file: Path = typer.Argument(..., help="OpenAI Batch style JSONL, one request per line."),
    wait: bool = typer.Option(False, "--wait", help="Wait for every answer, with a progress bar."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="With --wait: write OpenAI Batch output here."),
    errors_file: Optional[Path] = typer.Option(
        None, "--errors", help="With --wait: the error file (failed and dead-lettered lines); default with "
                               "--out: OUT's name with .errors.jsonl, written when there are any."),
    job_id: Optional[str] = typer.Option(None, help="Default: derived from the file's content (idempotent)."),
    tenant: Optional[str] = typer.Option(
        None, help="The operator submits for any tenant (default: 'default'); with SWITCHYARD_API_KEY "
                   "the key's tenant is used and another is refused."),
    timeout: float = typer.Option(1800, help="Seconds to wait with --wait."),
    stored_timeout: float = typer.Option(
        120, help="Seconds to wait until ClickHouse holds every request (what `replay` re-publishes "
                  "after a broker loss); 0: do not wait."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary."),
) -> None:
    """Publish a job to the queries topic, stamped with the submitter's tenant; returns once every
    request is stored in ClickHouse (or says to keep the file)."""
    from switchyard.jobs import write_batch_errors, write_batch_output
    from switchyard.submit_checks import broker_lost_line, stored_counter, unstored_line

    settings = _settings()
    tenant = _submitter_tenant(settings, tenant)
    counter = stored_counter(settings) if stored_timeout > 0 else None
    try:
        sub, outcome = submit_job(kafka_for_cli(settings), file, job_id, tenant, wait, timeout,
                                  counter, stored_timeout)
    finally:
        if counter is not None:
            counter.close()
    summary = {"job_id": sub.job_id, "sent": sub.sent, "valid": len(sub.expected),
               "invalid": len(sub.invalid), "stored": sub.stored}
    if sub.stored is None or sub.stored < len(sub.expected):
        console.print(f"[yellow]{escape(unstored_line(sub, file))}[/]", soft_wrap=True)
    if outcome is not None:
        summary.update(answered=len(outcome.results),
                       errors=sum(r.status == "error" for r in outcome.results.values()),
                       dead_letters=len(outcome.dead_letters), timed_out=outcome.timed_out)
        for letter in outcome.dead_letters:
            console.print(f"[yellow]dead letter[/] ({letter.stage}): {letter.reason}")
        if out_file:
            write_batch_output(out_file, outcome)
            summary["out"] = str(out_file)
        failed = sum(r.status != "ok" for r in outcome.results.values()) + len(outcome.dead_letters)
        if errors_file is None and out_file is not None and failed:
            errors_file = out_file.with_name(out_file.name.removesuffix(".jsonl") + ".errors.jsonl")
        if errors_file is not None:
            write_batch_errors(errors_file, outcome)
            summary["errors_file"] = str(errors_file)
    if outcome is not None and outcome.broker_lost:
        summary["broker_lost"] = True
        console.print(f"[red]{escape(broker_lost_line(sub, outcome, out_file))}[/]", soft_wrap=True)
    if outcome is not None and outcome.timed_out:
        console.print(f"[red]timed out[/] after {timeout:g}s waiting for job {sub.job_id}: "
                      f"{len(outcome.results)} of {len(sub.expected)} answered; "
                      f"the rest may still come (`switchyard status {sub.job_id}`)", soft_wrap=True)
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        console.print(summary)
    if outcome is not None and (outcome.timed_out or outcome.broker_lost):
        raise typer.Exit(1)


def _submitter_tenant(settings: Settings, asked: str | None) -> str:
    """Who submits decides the tenant: a tenant's key names its own (checked by the stack's
    endpoint); only the operator may submit for another tenant."""
    if not settings.api_key:
        return asked or "default"
    from switchyard.warehouse import WarehouseError

    wh = open_warehouse(settings)
    try:
        own = wh.whoami()
    except WarehouseError as exc:
        fail(f"SWITCHYARD_API_KEY: {exc}")
    finally:
        wh.close()
    if own is None:
        return asked or "default"
    if asked is not None and asked != own:
        fail(f"your key belongs to tenant {own!r}; it cannot submit for {asked!r}")
    return own


def _ask(wh, question: str, **params: str) -> list[dict]:
    from switchyard.warehouse import WarehouseError

    try:
        return wh.ask(question, **params)
    except WarehouseError as exc:
        fail(str(exc))


@app.command()
def status(job_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Progress and per-tier figures of a job, from ClickHouse (only your tenant's jobs)."""
    wh = open_warehouse(_settings())
    try:
        counts = _ask(wh, "job_status", job=job_id)[0]
        tiers = _ask(wh, "job_tiers", job=job_id)
    finally:
        wh.close()
    found = counts["requests"] or counts["dead_letters"]
    if as_json:  # printed even for no job yet (all zeros), so a script can poll a fresh job
        out.print_json(json.dumps({"job_id": job_id, **counts, "tiers": tiers}, default=str))
        if not found:
            raise typer.Exit(1)
        return
    if not found:
        fail(f"no job {job_id} (none of your tenant's jobs has that id)", code=1)
    out.print(f"job {job_id}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    out.print(outcomes_table(tiers, "tier"))


@app.command()
def results(job_id: str, out_file: Optional[Path] = typer.Option(None, "--out"),
            as_json: bool = typer.Option(False, "--json")) -> None:
    """A job's answers from ClickHouse (JSON lines with --json or --out; only your tenant's jobs)."""
    wh = open_warehouse(_settings())
    try:
        rows = _ask(wh, "job_results", job=job_id)
        dead = _ask(wh, "job_dead_letters", job=job_id)
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
    require_own_job(settings, job_id)
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
def judge(job_id: str,
          timeout: float = typer.Option(900, help="Seconds to wait for the judge's answers."),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """The large tier marks JOB's answers that have no feedback yet (1-10, as a score in [0, 1]);
    the marks are published as feedback (source "judge") for reports and retraining."""
    from switchyard.console import progress
    from switchyard.judge import judge_job

    settings = _settings()
    require_own_job(settings, job_id)
    wh = open_warehouse(settings)
    try:
        unrated = _ask(wh, "job_unrated", job=job_id)
    finally:
        wh.close()
    kafka = kafka_for_cli(settings)
    tenant = unrated[0]["tenant"] if unrated else ""
    with progress() as bar:
        task = bar.add_task(f"judging {job_id}", total=len(unrated))
        report = judge_job(kafka, job_id, tenant, unrated, timeout,
                           progress=lambda n: bar.advance(task, n))
    summary = report.as_dict()
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        console.print(summary)


@app.command()
def report(job_id: Optional[str] = typer.Option(None, "--job", help="One job; default: everything."),
           by: str = typer.Option("tier", help="tier | cluster | tenant | model | router_version | job | hour | day"),
           since: Optional[str] = typer.Option(None, help="Only since then: 30m, 24h, 7d, or a date/time (UTC)."),
           tenant: Optional[str] = typer.Option(None, help="Operator only: one tenant (a tenant's key "
                                                      "always reads its own)."),
           refresh: bool = typer.Option(True, "--refresh/--no-refresh",
                                        help="Recompute the analytics views first (else: as of their last "
                                             "scheduled refresh)."),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Routing outcomes from ClickHouse's analytics views: volume, graded quality, cost, what
    routing saved against the large tier's prices, latency quantiles, dead letters by reason, and
    each job's mix drift from its router's training mix."""
    from infra.clickhouse.questions import OUTCOMES_BY
    from switchyard.console import dead_letters_table, drift_table, report_table, since_to_utc

    if by not in OUTCOMES_BY:
        fail(f"--by must be one of {', '.join(OUTCOMES_BY)}")
    try:
        since_at = since_to_utc(since) if since else ""
    except ValueError as exc:
        fail(str(exc))
    params = {"by": by, "job": job_id or "", "since": since_at}
    if tenant is not None:
        params["tenant"] = tenant
    wh = open_warehouse(_settings())
    try:
        as_of = wh.refresh_analytics() if refresh else None
        rows = _ask(wh, "outcomes", **params)
        dead = _ask(wh, "dead_letters_by_reason", **{k: v for k, v in params.items() if k != "by"})
        drift = _ask(wh, "mix_drift", **{k: v for k, v in params.items() if k != "by"})
    finally:
        wh.close()
    if as_json:
        out.print_json(json.dumps({"by": by, "since": since_at or None, "as_of": as_of, "rows": rows,
                                   "dead_letters": dead, "drift": drift}, default=str))
        return
    out.print(report_table(rows, by))
    if dead:
        out.print(dead_letters_table(dead))
    if drift:
        out.print(drift_table(drift))


@app.command()
def dashboard(out_file: Optional[Path] = typer.Option(None, "--out", help="Write the page here (self-contained HTML)."),
              serve_page: bool = typer.Option(False, "--serve", help="Serve it on loopback instead, rebuilt on every load."),
              port: int = typer.Option(0, help="With --serve: the port (0: a free one)."),
              job_id: Optional[str] = typer.Option(None, "--job", help="One job; default: everything."),
              since: Optional[str] = typer.Option(None, help="Only since then: 30m, 24h, 7d, or a date/time (UTC)."),
              tenant: Optional[str] = typer.Option(None, help="Operator only: one tenant.")) -> None:
    """Routing outcomes as a page of plots: quality vs cost per router version, tier mix over
    time, cluster × tier quality, latency, spend and savings per tenant, dead letters by reason."""
    from switchyard.console import since_to_utc
    from switchyard.dashboard import gather, render, serve

    if (out_file is None) == (not serve_page):
        fail("give --out FILE or --serve")
    try:
        params = {"job": job_id or "", "since": since_to_utc(since) if since else "", "tenant": tenant}
    except ValueError as exc:
        fail(str(exc))
    settings = _settings()

    def build() -> str:
        wh = open_warehouse(settings)
        try:
            as_of = wh.refresh_analytics()
            data = gather(lambda q, **p: _ask(wh, q, **p), **params)
        finally:
            wh.close()
        data.as_of = as_of
        return render(data)

    if serve_page:
        serve(build, port=port, on_ready=lambda url: out.print(f"dashboard at {url} (Ctrl-C stops)"))
        return
    out_file.write_text(build())
    out.print(f"wrote {out_file}")


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
    from infra.auth import Keyring
    from streams.metrics import serve_metrics
    from switchyard.stack import mark_ready

    _stage_logging()
    settings = get_settings()
    port = settings.metrics_ports.get(name)
    if port:
        serve_metrics(port, Keyring(settings.secrets_dir).ensure_operator_token())
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


@stage_app.command("restore-router")
def stage_restore_router() -> None:
    """Republish the newest published router version from ClickHouse to router.models."""
    from switchyard.live_router import restore_published

    _stage_logging()
    version = restore_published(get_settings())
    logging.getLogger(__name__).info("restored %s", version or "nothing (no published version)")


@stage_app.command("api")
def stage_api() -> None:
    """The OpenAI-compatible API (settings.api)."""
    from switchyard.stages import run_api

    _run_stage("api", run_api)


@app.command("api")
def api_command(port: Optional[int] = typer.Option(None, help="Default: SWITCHYARD_API__PORT, else a free port."),
                host: Optional[str] = typer.Option(None, help="Default: SWITCHYARD_API__HOST, else 127.0.0.1.")) -> None:
    """Serve the OpenAI-compatible API (Files, Batches, chat completions) for a running stack, in the
    foreground. `switchyard up` starts one itself."""
    from switchyard.stages import run_api

    settings = _settings()
    settings.kafka = kafka_for_cli(settings)
    if port is not None:
        settings.api.port = port
    if host is not None:
        settings.api.host = host
    _stage_logging()
    run_api(settings, lambda url: console.print(f"OpenAI-compatible API at {url} (Ctrl-C stops it)"))


@stage_app.command("serve")
def stage_serve() -> None:
    """Start Ray Serve with one deployment per tier and keep it up until SIGTERM."""
    from switchyard.stages import run_serve

    _run_stage("serve", run_serve)


if __name__ == "__main__":
    app()
