"""`switchyard feedback`, `switchyard retrain` and `switchyard experiment ...` (mounted by switchyard.cli)."""
from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Optional

import typer

from switchyard.access import require_operator, require_own_job
from switchyard.console import console, fail, kafka_for_cli, out, progress
from switchyard.settings import get_settings

experiment_app = typer.Typer(help="Experiments on the embedded stack with the real local models.",
                             no_args_is_help=True)


def feedback(job_id: str = typer.Argument(..., help="The job the feedback is about."),
             file: Path = typer.Option(..., "--file", help='JSONL: {"custom_id", "score": 0..1} or '
                                       '{"custom_id", "thumbs": "up"|"down"}, optional "comment".'),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Send users' quality feedback for a job's answers (lines with a problem are dead-lettered)."""
    from switchyard.feedback import feedback_lines, publish_lines

    if not file.exists():
        fail(f"{file}: no such file")
    lines = [ln for ln in file.read_bytes().splitlines() if ln.strip()]
    if not lines:
        fail(f"{file}: no feedback lines")
    settings = get_settings()
    require_own_job(settings, job_id)
    kafka = kafka_for_cli(settings)
    parsed = feedback_lines(job_id, lines)
    for _, _, problem in parsed:
        if problem:
            console.print(f"[yellow]{problem}[/] (sent; it will be dead-lettered)")
    sent = asyncio.run(publish_lines(kafka, job_id, [(k, v) for k, v, _ in parsed]))
    summary = {"job_id": job_id, "sent": sent, "invalid": sum(p is not None for _, _, p in parsed)}
    out.print_json(json.dumps(summary)) if as_json else console.print(summary)


def retrain_command(
    prior: Optional[Path] = typer.Option(None, help="Full-information outcomes to add (default: "
                                         "SWITCHYARD_RETRAIN__PRIOR_PATH, else the shipped local outcomes)."),
    no_prior: bool = typer.Option(False, "--no-prior", help="Learn from the stack's own outcomes only."),
    holdout_share: Optional[float] = typer.Option(None, min=0.05, max=0.9, help="Most recent share of "
                                                  "queries held back for the gate."),
    force: bool = typer.Option(False, "--force", help="Publish even if the gate refuses (recorded as forced)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Fit and judge, publish nothing."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the verdict and metrics here."),
) -> None:
    """Fit a candidate on the stack's graded outcomes, gate it against the live version, publish."""
    from switchyard.retrain import RetrainError, dump_json, retrain_once, retrain_options

    settings = get_settings()
    require_operator(settings, "retraining")
    kafka = None if dry_run else kafka_for_cli(settings)
    options = retrain_options(settings, holdout_share=holdout_share, force=force or None)
    if no_prior:
        options.prior = None
    elif prior is not None:
        options.prior = prior
    with progress() as bar:
        task = bar.add_task("retraining", total=5)

        def step(message: str) -> None:
            bar.update(task, description=message, advance=1)

        try:
            summary = retrain_once(settings, options, kafka, step)
        except RetrainError as exc:
            fail(str(exc), code=1)
        bar.update(task, completed=5, description="done")
    if json_out:
        dump_json(json_out, summary)
    colour = "green" if summary["verdict"] == "published" else "yellow"
    console.print(f"[{colour}]{summary['verdict']}[/] {summary['version']} "
                  f"(parent {summary['parent_version']}): {summary['reason']}", highlight=False)


# --- experiments ---------------------------------------------------------------------------


@experiment_app.command("outcomes")
def experiment_outcomes(
    per_task: int = typer.Option(12, help="Graded training queries per task."),
    out_file: Path = typer.Option(Path("switchyard/data/local_outcomes.jsonl.gz"), "--out"),
    graded: Path = typer.Option(Path("../shared/data/graded/llmrouter_train.jsonl.gz"), help="Graded queries."),
    data_dir: Path = typer.Option(Path(".switchyard-outcomes"), help="The stack's data dir for this run."),
    seed: int = typer.Option(13),
    threads: int = typer.Option(os.cpu_count() or 1, help="Threads per model (one tier works at a time)."),
) -> None:
    """Answer graded queries with every tier (pinned) on the embedded stack, grade them, and write
    the full-information outcomes the shipped default is fitted on."""
    from switchyard.experiments import collect_local_outcomes

    settings = get_settings().model_copy(update={"data_dir": data_dir})
    summary = collect_local_outcomes(settings, graded, per_task, seed, out_file, console, threads)
    out.print_json(json.dumps(summary))


@experiment_app.command("ship")
def experiment_ship(
    outcomes: Path = typer.Option(Path("switchyard/data/local_outcomes.jsonl.gz"), help="Local outcomes."),
    out_dir: Path = typer.Option(Path("router/artifacts/default"), "--out"),
    holdout_share: float = typer.Option(0.25, help="Share of queries held back to report on before the final fit."),
    json_out: Optional[Path] = typer.Option(None, "--json"),
) -> None:
    """Fit the shipped default on local outcomes: report it on held-back queries first (against
    always-small / medium / large on the same queries), then fit on all and save."""
    from switchyard.experiments import ship_default
    from switchyard.retrain import dump_json

    summary = ship_default(outcomes, out_dir, holdout_share, console)
    if json_out:
        dump_json(json_out, summary)
    out.print_json(json.dumps(summary, default=str))


@experiment_app.command("learning")
def experiment_learning(
    queries: int = typer.Option(56, help="Graded queries per round (spread over the tasks)."),
    rounds: int = typer.Option(3, min=2),
    json_out: Path = typer.Option(Path("experiment-learning.json"), "--json"),
    explore_rate: float = typer.Option(0.5, min=0, max=1, help="Exploration share during the experiment."),
    match_first_cost: bool = typer.Option(True, "--match-first-cost/--default-knob-last",
                                          help="Route the last round at the first round's cost per request."),
    data_dir: Path = typer.Option(Path(".switchyard-experiment"), help="The stack's data dir for this run."),
    graded: Path = typer.Option(Path("../shared/data/graded/llmrouter_train.jsonl.gz")),
    lean: bool = typer.Option(False, "--lean", help="Every tier served by the small model (a smoke run)."),
) -> None:
    """From a router that knows nothing of the local models: rounds of graded traffic through the
    embedded stack, graded, retrained between rounds; per round quality, cost, tier mix per task,
    router version and the gate's verdict."""
    from switchyard.experiments import learning_experiment
    from switchyard.retrain import dump_json

    settings = get_settings().model_copy(update={"data_dir": data_dir})
    if lean:
        settings.workers.all_tiers_small = True
    report = learning_experiment(settings, graded, queries, rounds, explore_rate, console, match_first_cost)
    dump_json(json_out, report)
    console.print(f"wrote {json_out}")
    out.print_json(json.dumps(report["rounds_summary"], default=str))
