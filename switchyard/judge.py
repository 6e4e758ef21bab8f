"""`switchyard judge JOB`: the large tier marks a job's answers that have no reference.

The answers nobody has rated yet (no feedback from any source) are sent, with their requests,
as a job of their own (`judge-<JOB>`, pinned to the large tier, temperature 0) through the same
topics as any job; each mark the judge gives becomes feedback with source "judge" on the
original request, which retraining then learns from like any other score. A reply without a
readable mark gives no feedback and is counted as unreadable.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from grading.judge import judge_messages, read_verdict
from schemas import Feedback
from streams.config import KafkaSettings
from switchyard.feedback import publish_feedback
from switchyard.jobs import JobFile, prepare, publish, wait_for

JUDGE_TIER = "large"
JUDGE_MAX_TOKENS = 16


@dataclass
class JudgeReport:
    job_id: str
    judge_job_id: str
    asked: int = 0
    judged: int = 0
    unreadable: list[str] = field(default_factory=list)  # custom_ids whose verdict had no mark
    unanswered: list[str] = field(default_factory=list)  # the judge gave no answer (error, timeout)
    mean_score: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def request_text(body: str) -> str:
    """The conversation of a stored request body, one 'role: text' line per message."""
    messages = json.loads(body).get("messages") or []
    lines = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        lines.append(f"{m.get('role', 'user')}: {content or ''}")
    return "\n".join(lines)


def judge_lines(rows: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps({"custom_id": r["custom_id"], "method": "POST", "url": "/v1/chat/completions",
                        "body": {"messages": judge_messages(request_text(r["body"]), r["answer"]),
                                 "max_tokens": JUDGE_MAX_TOKENS, "temperature": 0},
                        "routing": {"pinned_tier": JUDGE_TIER}}).encode() for r in rows]


def judge_job(kafka: KafkaSettings, job_id: str, tenant: str, unrated: list[dict[str, Any]], timeout: float,
              progress: Callable[[int], None] | None = None) -> JudgeReport:
    """Ask the judge about `unrated` (job_unrated rows) and publish its marks as feedback."""
    judge_id = f"judge-{job_id}"
    report = JudgeReport(job_id=job_id, judge_job_id=judge_id, asked=len(unrated))
    if not unrated:
        return report
    sub, messages = prepare(JobFile(Path(f"{judge_id}.jsonl"), judge_lines(unrated)), judge_id, tenant)
    asyncio.run(publish(kafka, sub, messages))
    outcome = asyncio.run(wait_for(kafka, sub, timeout, progress))
    feedback = []
    for row in unrated:
        cid = row["custom_id"]
        result = outcome.results.get(cid)
        if result is None or result.status != "ok":
            report.unanswered.append(cid)
            continue
        score = read_verdict(result.answer_text())
        if score is None:
            report.unreadable.append(cid)
            continue
        feedback.append(Feedback(request_id=f"{job_id}:{cid}", job_id=job_id, source="judge", score=score,
                                 metric="llm_judge", comment=f"{judge_id} ({result.model})"))
    asyncio.run(publish_feedback(kafka, feedback))
    report.judged = len(feedback)
    report.mean_score = sum(f.score for f in feedback) / len(feedback) if feedback else None
    return report
