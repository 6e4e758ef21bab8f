"""Graded traffic through a running stack: publish graded queries as jobs, wait for the answers,
grade them and send the grades as feedback, so that the outcomes land in ClickHouse where
`switchyard retrain` reads them."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from schemas import Feedback
from switchyard.feedback import Reference, auto_grade, publish_feedback
from switchyard.graded import GradedQuery, job_lines
from switchyard.demo import wait_until_stored
from switchyard.jobs import JobFile, JobOutcome, Submission, prepare, publish, wait_for
from switchyard.settings import Settings


@dataclass
class GradedJob:
    job_id: str
    queries: list[GradedQuery]
    submission: Submission
    outcome: JobOutcome | None = None
    feedback: list[Feedback] | None = None


def references(queries: list[GradedQuery]) -> dict[str, Reference]:
    return {q.id: Reference(q.id, q.metric, q.ground_truth, q.choices, q.query) for q in queries}


def submit_graded(settings: Settings, queries: list[GradedQuery], job_id: str, tenant: str = "learning",
                  pinned_tier: str | None = None, max_tokens: int = 256,
                  budget_usd: float | None = None) -> GradedJob:
    lines = job_lines(queries, max_tokens, pinned_tier, budget_usd)
    sub, messages = prepare(JobFile(Path(f"{job_id}.jsonl"), lines), job_id, tenant)
    asyncio.run(publish(settings.kafka, sub, messages))
    return GradedJob(job_id, queries, sub)


def finish_graded(settings: Settings, job: GradedJob, timeout: float,
                  progress: Callable[[int], None] | None = None) -> GradedJob:
    """Wait for every answer, grade it, publish the grades, and wait until ClickHouse has both."""
    job.outcome = asyncio.run(wait_for(settings.kafka, job.submission, timeout, progress))
    job.feedback = auto_grade(job.outcome.results.values(), references(job.queries))
    asyncio.run(publish_feedback(settings.kafka, job.feedback))
    expected = {"answered": len(job.outcome.results), "feedback": len(job.feedback)}
    if not wait_until_stored(settings, job.job_id, expected):
        raise TimeoutError(f"job {job.job_id}: ClickHouse does not hold {expected} after 120s")
    return job


def summary(job: GradedJob) -> dict:
    assert job.outcome is not None and job.feedback is not None
    scores = [f.score for f in job.feedback]
    return {"job_id": job.job_id, "answered": len(job.outcome.results), "expected": len(job.submission.expected),
            "timed_out": job.outcome.timed_out,
            "quality": sum(scores) / len(scores) if scores else None,
            "cost_usd": sum(r.cost_usd for r in job.outcome.results.values())}


def collect_outcomes(settings: Settings, queries: list[GradedQuery], tiers: list[str], job_prefix: str,
                     timeout: float, on_done: Callable[[dict], None] = lambda s: None) -> list[dict]:
    """Every query answered by every tier (pinned): the full-information outcomes a router is fitted
    on. One tier at a time: on a small machine each model then has every core to itself."""
    summaries = []
    for tier in tiers:
        job = finish_graded(settings, submit_graded(settings, queries, f"{job_prefix}-{tier}", pinned_tier=tier),
                            timeout)
        summaries.append(summary(job))
        on_done(summaries[-1])
    return summaries
