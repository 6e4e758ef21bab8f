"""The LLM judge: how its verdict is read, and `switchyard judge` on a real lean stack (the small
model stands in for the large tier there, so its marks are not the point: what is checked is
that every unrated answer is asked about once, rated ones are left alone, and each readable
mark lands as feedback from the judge)."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from grading.judge import judge_messages, read_verdict
from schemas import Feedback
from switchyard.feedback import publish_feedback
from switchyard.judge import request_text
from switchyard.warehouse import Warehouse
from tests.conftest import request_line, run_job


@pytest.mark.parametrize("reply,score", [
    ("Score: 10", 1.0), ("score: 1", 0.0), ("Score: 7/10", 6 / 9), ("Rating = 4", 3 / 9), ("8", 7 / 9),
    (" 5/10. ", 4 / 9), ("The answer is fine.\nScore: 9", 8 / 9),
])
def test_a_readable_mark_is_mapped_onto_zero_to_one(reply, score):
    assert read_verdict(reply) == pytest.approx(score)


@pytest.mark.parametrize("reply", ["", "Great answer!", "Score: 11", "Score: 0", "I would give it 7 or 8 points",
                                   "Score: high"])
def test_a_reply_without_a_mark_gives_no_score(reply):
    assert read_verdict(reply) is None


def test_the_judge_sees_the_request_and_the_answer_but_not_without_bounds():
    messages = judge_messages("q" * 10_000, "a" * 10_000)
    assert messages[0]["role"] == "system" and "Score: N" in messages[0]["content"]
    assert 8_000 < len(messages[1]["content"]) < 8_200
    body = json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]})
    assert request_text(body) == "system: Be brief.\nuser: Hi"


def test_judge_marks_the_unrated_answers_of_a_job_as_feedback(stack):
    s = stack.settings
    job = "judged-job"
    run_job(s, [request_line(f"q{i}", f"Name a colour, number {i}.") for i in range(4)], job)
    asyncio.run(publish_feedback(s.kafka, [Feedback(request_id=f"{job}:q0", job_id=job, source="label", score=1)]))
    wh = Warehouse.open(s)
    deadline = time.monotonic() + 60
    while not wh.ask("job_tiers", job=job)[0]["graded"] and time.monotonic() < deadline:
        time.sleep(0.5)
    env = {**os.environ, "SWITCHYARD_DATA_DIR": str(s.data_dir)}
    env.pop("SWITCHYARD_API_KEY", None)
    done = subprocess.run([sys.executable, "-m", "switchyard.cli", "judge", job, "--json", "--timeout", "300"],
                          env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["asked"] == 3  # q0 was rated already
    assert report["judged"] + len(report["unreadable"]) + len(report["unanswered"]) == 3
    assert report["unanswered"] == []
    judged = []
    deadline = time.monotonic() + 60
    while len(judged) < report["judged"] and time.monotonic() < deadline:
        judged = wh.rows("SELECT request_id, score, metric FROM feedback FINAL WHERE job_id = {job:String} "
                         "AND source = 'judge'", {"job": job})
        time.sleep(0.5)
    assert len(judged) == report["judged"]
    assert all(0 <= r["score"] <= 1 and r["metric"] == "llm_judge" and r["request_id"] != f"{job}:q0" for r in judged)
    asked = wh.rows("SELECT tier, count() AS n FROM decisions FINAL WHERE job_id = {job:String} GROUP BY tier",
                    {"job": f"judge-{job}"})
    assert asked == [{"tier": "large", "n": 3}]
    wh.close()
