"""Quality feedback: auto-grades of answers against ground truth, and user-supplied labels."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from schemas import Feedback, Result, encode
from schemas.common import request_id_for
from streams.kafka import produce_all, producing
from streams.records import Output
from streams.config import KafkaSettings


@dataclass(frozen=True)
class Reference:
    """What a correct answer looks like for one request of a job."""

    custom_id: str
    metric: str
    ground_truth: Any
    choices: Any = None
    query: str | None = None


def read_references(path: Path) -> dict[str, Reference]:
    refs = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            refs[row["custom_id"]] = Reference(row["custom_id"], row["metric"], row["ground_truth"],
                                               row.get("choices"), row.get("query"))
        except (ValueError, KeyError, TypeError) as exc:  # TypeError: a line that is not an object
            raise ValueError(f"{path}:{number}: not a reference line ({exc})") from None
    return refs


def auto_grade(results: Iterable[Result], references: dict[str, Reference]) -> list[Feedback]:
    """One auto_grade feedback per answered request that has a reference; errors score 0."""
    from grading import grade

    feedback = []
    for result in results:
        ref = references.get(result.custom_id)
        if ref is None:
            continue
        if result.status != "ok":
            score, comment = 0.0, f"no answer: {result.error}"
        else:
            g = grade(result.answer_text(), ref.ground_truth, ref.metric, ref.choices, ref.query)
            detail = f"; {g.detail}" if g.detail else ""
            score, comment = g.score, f"extracted: {g.extracted!r}"[:400] + detail[:400]
        feedback.append(Feedback(request_id=request_id_for(result.job_id, result.custom_id),
                                 job_id=result.job_id, source="auto_grade", score=score,
                                 metric=ref.metric, comment=comment))
    return feedback


async def publish_feedback(kafka: KafkaSettings, feedback: list[Feedback]) -> None:
    topic = kafka.topics.feedback
    async with producing(kafka) as producer:
        await produce_all(producer, (Output(topic, f.request_id.encode(), encode(f)) for f in feedback))


THUMBS = {"up": 1.0, "down": 0.0}


def feedback_lines(job_id: str, lines: list[bytes], source: str = "rating") -> list[tuple[bytes, bytes, str | None]]:
    """A user's feedback file → (key, message, problem) per line. Lines are `{"custom_id", "score"}`
    with a score in [0, 1], or `{"custom_id", "thumbs": "up" | "down"}`, and an optional comment.
    A line with a problem is still sent, as written plus the job, so the sink dead-letters it with
    the reason and nothing a user sent disappears."""
    from pydantic import ValidationError

    from schemas.validation import describe

    out = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except ValueError as exc:
            out.append((f"{job_id}:line-{number}".encode(), line, f"line {number}: not JSON ({exc})"))
            continue
        if not isinstance(row, dict) or not isinstance(row.get("custom_id"), str):
            out.append((f"{job_id}:line-{number}".encode(), line, f"line {number}: needs a string custom_id"))
            continue
        request_id = request_id_for(job_id, row["custom_id"])
        score = THUMBS.get(row["thumbs"]) if "thumbs" in row else row.get("score")
        raw = {"request_id": request_id, "job_id": job_id, "source": source, "score": score,
               "metric": "thumbs" if "thumbs" in row else "user_score", "comment": row.get("comment")}
        problem = None
        if "thumbs" in row and score is None:
            problem = f"line {number}: thumbs must be 'up' or 'down', got {row['thumbs']!r}"
        else:
            try:
                Feedback.model_validate(raw)
            except ValidationError as exc:
                problem = f"line {number}: {describe(exc)}"
        out.append((request_id.encode(), json.dumps(raw).encode(), problem))
    return out


async def publish_lines(kafka: KafkaSettings, job_id: str, messages: list[tuple[bytes, bytes]]) -> int:
    from schemas.common import HEADER_JOB_ID

    topic = kafka.topics.feedback
    headers = ((HEADER_JOB_ID, job_id.encode()),)
    async with producing(kafka) as producer:
        return await produce_all(producer, (Output(topic, k, v, headers) for k, v in messages))
