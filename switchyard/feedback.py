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
        except (ValueError, KeyError) as exc:
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
            score, comment = g.score, f"extracted: {g.extracted!r}"[:500]
        feedback.append(Feedback(request_id=request_id_for(result.job_id, result.custom_id),
                                 job_id=result.job_id, source="auto_grade", score=score,
                                 metric=ref.metric, comment=comment))
    return feedback


async def publish_feedback(kafka: KafkaSettings, feedback: list[Feedback]) -> None:
    topic = kafka.topics.feedback
    async with producing(kafka) as producer:
        await produce_all(producer, (Output(topic, f.request_id.encode(), encode(f)) for f in feedback))
