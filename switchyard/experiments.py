"""The learning loop's experiments on the embedded stack with the real local models.

- `collect_local_outcomes`: every graded query answered by every tier (pinned), graded, exported
  as full-information outcomes (the data the shipped default is fitted on);
- `ship_default`: fit the shipped default on them, reporting held-back queries first;
- `learning_experiment`: rounds of graded traffic from a router that knows nothing of the local
  models, retrained between rounds.
"""
from __future__ import annotations

import gzip
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console

from switchyard.graded import GradedQuery, in_holdout, read_graded, sample_per_task
from switchyard.learning import GradedJob, collect_outcomes, finish_graded, submit_graded, summary
from switchyard.settings import Settings
from switchyard.stack import Stack
from switchyard.warehouse import Warehouse

SAMPLE_JOB = Path(__file__).parent / "data" / "sample_job.jsonl"
LOCAL_DATASET = "local"

EXPORT_ROWS = """
SELECT job_id, custom_id, body, tier, served_model, score, cost_usd, completion_tokens
FROM training_outcomes WHERE job_id LIKE {prefix:String} ORDER BY custom_id, tier
"""


def sample_job_ids() -> set[str]:
    return {json.loads(line)["custom_id"] for line in SAMPLE_JOB.read_text().splitlines() if line.strip()}


# --- full-information outcomes ----------------------------------------------------------------


def collect_local_outcomes(settings: Settings, graded: Path, per_task: int, seed: int, out_file: Path,
                           console: Console, threads: int = 2) -> dict:
    from switchyard.retrain import query_text

    queries = sample_per_task(read_graded(graded), per_task, seed, exclude=sample_job_ids())
    tasks = {q.id: q.task for q in queries}
    prefix = f"outcomes-s{seed}-n{per_task}"
    settings = settings.model_copy(deep=True)
    settings.retrain.enabled = False
    settings.router.explore_rate = 0.0
    for model in settings.workers.models.values():
        model.threads = threads  # one tier works at a time: give it the cores
    started = time.monotonic()
    with Stack(settings) as stack:
        console.print(f"stack up; answering {len(queries)} queries with every tier")
        jobs = collect_outcomes(stack.settings, queries, ["small", "medium", "large"], prefix, 6 * 3600,
                                lambda s: console.print(s))
        wh = Warehouse.open(stack.settings)
        try:
            rows = wh.rows(EXPORT_ROWS, {"prefix": f"{prefix}-%"})
        finally:
            wh.close()
    write_outcomes(out_file, [dict(dataset=LOCAL_DATASET, query_id=r["custom_id"], task=tasks.get(r["custom_id"]),
                                   query_text=query_text(r["body"]), model=r["served_model"], tier=r["tier"],
                                   score=r["score"], cost_usd=r["cost_usd"],
                                   completion_tokens=r["completion_tokens"]) for r in rows])
    return {"queries": len(queries), "rows": len(rows), "jobs": jobs, "out": str(out_file),
            "wall_seconds": round(time.monotonic() - started, 1)}


def write_outcomes(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")


def ship_default(outcomes_path: Path, out_dir: Path, holdout_share: float, console: Console) -> dict:
    """Report the held-back comparison, then fit on every query and save the artifact."""
    from router.artifact import save_router
    from router.data import build_table, load_rows
    from router.embeddings import embed
    from router.outcomes import fit_on_outcomes

    rows = load_rows([outcomes_path])
    tiers = {r["model"]: r["tier"] for r in rows}
    task_of = {r["query_id"]: r.get("task") for r in rows}
    table = build_table(rows)
    emb = embed(table.texts)
    held = np.array([in_holdout(q, holdout_share) for q in table.query_ids])
    report: dict = {"outcomes": str(outcomes_path), "queries": len(table), "models": table.models,
                    "heldback_queries": int(held.sum())}
    if held.any() and (~held).any():
        router = fit_on_outcomes(table.subset(np.flatnonzero(~held)), emb[~held], tiers)
        report["heldback"] = replay(router, table.subset(np.flatnonzero(held)), emb[held], tiers, task_of)
        console.print(f"held back {int(held.sum())} queries: {json.dumps(report['heldback']['summary'])}")
    router = fit_on_outcomes(table, emb, tiers)
    router.meta.update(dataset=LOCAL_DATASET, outcomes_file=outcomes_path.name)
    save_router(router, out_dir)
    report.update(version=router.version, default_alpha=router.default_alpha, out=str(out_dir))
    return report


def _replayed(router, table, emb: np.ndarray, tiers: dict[str, str], alpha: float | None = None):
    """The router's tier per query at one knob, and the realised score and cost of each pick."""
    from router.base import Knobs

    col = {tiers[m]: j for j, m in enumerate(table.models)}
    picked = [c.tier for c in router.route(table.texts, emb, [Knobs(alpha=alpha)] * len(table))]
    rows, chosen = np.arange(len(table)), np.array([col[t] for t in picked])
    return picked, table.scores[rows, chosen], table.costs[rows, chosen]


def replay(router, table, emb: np.ndarray, tiers: dict[str, str], task_of: dict | None = None) -> dict:
    """A router's default picks on full-information outcomes (exact, no estimate), against
    always-small / medium / large on the same queries; per task too."""
    picked, q, c = _replayed(router, table, emb, tiers)
    col = {tiers[m]: j for j, m in enumerate(table.models)}
    large = col["large"]
    out = {"summary": {
        "router_quality": round(float(q.mean()), 4), "router_cost_usd": float(c.mean()),
        **{f"always_{t}_quality": round(float(table.scores[:, j].mean()), 4) for t, j in col.items()},
        **{f"always_{t}_cost_usd": float(table.costs[:, j].mean()) for t, j in col.items()},
        "quality_vs_large": round(float(q.mean() / max(table.scores[:, large].mean(), 1e-12)), 4),
        "cost_vs_large": round(float(c.mean() / max(table.costs[:, large].mean(), 1e-12)), 4),
        "tier_mix": dict(Counter(picked)),
    }}
    if task_of:
        per_task: dict = defaultdict(Counter)
        for qid, tier in zip(table.query_ids, picked):
            per_task[task_of.get(qid) or "?"][tier] += 1
        out["tier_mix_per_task"] = {t: dict(v) for t, v in sorted(per_task.items())}
    return out


# --- the learning experiment --------------------------------------------------------------------

VERSIONS = "SELECT version, verdict, reason FROM router_versions FINAL ORDER BY created_at"


def round_queries(graded: Path, n: int, rnd: int, exclude: set[str]) -> list[GradedQuery]:
    """n queries spread over the tasks, fresh each round (seeded by the round)."""
    all_q = read_graded(graded)
    tasks = sorted({q.task for q in all_q})
    per_task = max(1, n // len(tasks))
    picked = sample_per_task(all_q, per_task, seed=1000 + rnd, exclude=exclude)
    return picked[:n]


def replay_set(path: Path):
    """The full-information local outcomes as a table, for judging each round's router exactly on
    the same queries (the experiment never sends them)."""
    from router.data import build_table, load_rows
    from router.embeddings import embed

    rows = load_rows([path])
    table = build_table(rows)
    return table, embed(table.texts), {r["model"]: r["tier"] for r in rows}, {r["query_id"]: r.get("task") for r in rows}


def replay_curve(router, table, emb, tiers, points: int = 11) -> list[tuple[float, float]]:
    """(mean cost, mean quality) of the router over an α sweep on full-information outcomes."""
    curve = []
    for alpha in np.linspace(0, 1, points):
        _, q, c = _replayed(router, table, emb, tiers, float(alpha))
        curve.append((float(c.mean()), float(q.mean())))
    return curve


def round_report(job: GradedJob, tiers_by_request: dict[str, tuple[str, str, bool]]) -> dict:
    """Quality and cost of a round's traffic, all of it and the on-policy part, tier mix per task."""
    s = summary(job)
    assert job.feedback is not None and job.outcome is not None
    score = {f.request_id.split(":", 1)[1]: f.score for f in job.feedback}
    by_id = {q.id: q for q in job.queries}
    mix: dict = defaultdict(Counter)
    on_q, on_c = [], []
    for cid, result in job.outcome.results.items():
        tier, version, explored = tiers_by_request.get(cid, (result.tier, result.router_version, False))
        mix[by_id[cid].task][tier] += 1
        if not explored:
            on_q.append(score.get(cid, 0.0))
            on_c.append(result.cost_usd)
    s.update(on_policy_quality=float(np.mean(on_q)) if on_q else None,
             on_policy_cost_usd=float(np.mean(on_c)) if on_c else None,
             cost_usd_per_request=s["cost_usd"] / max(1, s["answered"]),
             tier_mix_per_task={t: dict(v) for t, v in sorted(mix.items())})
    return s


def learning_experiment(settings: Settings, graded: Path, n_queries: int, rounds: int, explore_rate: float,
                        console: Console, match_first_cost: bool = True, min_matched: int = 5) -> dict:
    """Rounds at the default knob; with `match_first_cost`, the last round's requests carry the
    first round's mean cost per request as their budget, so the last router is compared with the
    first at the same spend."""
    from router.artifact import DCROUTER_DIR
    from router.outcomes import GateRules
    from switchyard.retrain import RetrainError, retrain_once, retrain_options

    settings = settings.model_copy(deep=True)
    settings.retrain.enabled = False  # the experiment retrains between rounds itself
    settings.router.explore_rate = explore_rate
    settings.router.artifact_dir = DCROUTER_DIR  # knows nothing of the local models
    from router.artifact import load_router
    from router.bench.metrics import envelope
    from switchyard.live_router import current_router
    from switchyard.retrain import SHIPPED_OUTCOMES

    table, emb, tiers, task_of = replay_set(SHIPPED_OUTCOMES)
    exclude = sample_job_ids() | set(table.query_ids)
    report: dict = {"queries_per_round": n_queries, "rounds": [], "explore_rate": explore_rate,
                    "start_router": str(settings.router.artifact_dir),
                    "replay_set": f"{SHIPPED_OUTCOMES.name}: {len(table)} queries answered by every tier"}
    router = load_router(DCROUTER_DIR)
    started = time.monotonic()
    with Stack(settings) as stack:
        s = stack.settings
        for rnd in range(1, rounds + 1):
            queries = round_queries(graded, n_queries, rnd, exclude)
            exclude |= {q.id for q in queries}
            budget = None
            if match_first_cost and rnd == rounds and report["rounds"]:
                budget = report["rounds"][0]["cost_usd_per_request"]
            job = finish_graded(s, submit_graded(s, queries, f"learning-r{rnd}", budget_usd=budget),
                                timeout=4 * 3600)
            wh = Warehouse.open(s)
            try:
                decisions = wh.rows("SELECT custom_id, tier, router_version, explored FROM decisions FINAL "
                                    "WHERE job_id = {job:String}", {"job": job.job_id})
            finally:
                wh.close()
            by_request = {d["custom_id"]: (d["tier"], d["router_version"], bool(d["explored"])) for d in decisions}
            row = round_report(job, by_request)
            # the router that served this round, judged exactly on the same unseen queries every round
            row["replay"] = replay(router, table, emb, tiers, task_of)
            row["replay"]["curve"] = replay_curve(router, table, emb, tiers)
            row.update(round=rnd, budget_usd=budget, router_versions=dict(Counter(v for _, v, _ in by_request.values())),
                       tier_mix=dict(Counter(t for t, _, _ in by_request.values())))
            if rnd < rounds:
                options = retrain_options(s, min_outcomes=20)
                options.prior = None  # only what the loop itself has seen
                # rounds are small: accept a thinner held-back sample than the stack's default
                options.rules = GateRules(min_matched=min_matched)
                try:
                    row["retrain"] = retrain_once(s, options, s.kafka)
                except RetrainError as exc:
                    row["retrain"] = {"verdict": "no candidate", "reason": str(exc)}
                if row["retrain"].get("verdict") == "published":
                    wait_for_swap(stack, row["retrain"]["version"])
                    wh = Warehouse.open(s)
                    try:
                        router = current_router(s, wh)
                    finally:
                        wh.close()
            report["rounds"].append(row)
            console.print(f"round {rnd}: quality {row['quality']:.3f}, ${row['cost_usd_per_request']:.3g}/request, "
                          f"tiers {row['tier_mix']}, retrain {row.get('retrain', {}).get('verdict', '-')}")
        wh = Warehouse.open(s)
        try:
            report["router_versions"] = wh.rows(VERSIONS)
        finally:
            wh.close()
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    first, last = report["rounds"][0]["replay"], report["rounds"][-1]["replay"]
    first_cost = first["summary"]["router_cost_usd"]
    report["last_vs_first"] = {
        "first_quality": first["summary"]["router_quality"], "first_cost_usd": first_cost,
        "last_quality_default_knob": last["summary"]["router_quality"],
        "last_cost_usd_default_knob": last["summary"]["router_cost_usd"],
        # the last router's sweep read at the first router's cost (the bench's interpolated frontier)
        "last_quality_at_first_cost": float(envelope(last["curve"], first_cost)[0]),
    }
    report["rounds_summary"] = [{k: r.get(k) for k in ("round", "budget_usd", "quality", "cost_usd_per_request",
                                                        "on_policy_quality", "on_policy_cost_usd", "tier_mix",
                                                        "router_versions")}
                                | {"verdict": r.get("retrain", {}).get("verdict"),
                                   "replay": r["replay"]["summary"]} for r in report["rounds"]]
    return report


def wait_for_swap(stack: Stack, version: str, timeout: float = 60) -> None:
    """The router stage logs each swap; the next round must be routed by the new version."""
    log = stack.settings.data_dir / "logs" / "router.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"-> {version}" in log.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise TimeoutError(f"the router stream did not swap to {version} within {timeout:.0f}s")
