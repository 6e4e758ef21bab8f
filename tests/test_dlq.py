"""`switchyard dlq list|replay` on a real stack: dead letters show their stage, reason, job,
custom_id and coordinates; after a fix, replay re-drives exactly the chosen ones."""
import asyncio
import json
import os
import subprocess
import sys

from switchyard import dlq
from switchyard.feedback import feedback_lines, publish_lines
from switchyard.warehouse import Warehouse
from tests.conftest import request_line, run_job
from tests.test_lifecycle import _wait_until

JOB = "dlq-job"


def _feedback_n(settings) -> int:
    wh = Warehouse.open(settings)
    try:
        return wh.rows("SELECT count() AS n FROM feedback FINAL WHERE job_id = {job:String}", {"job": JOB})[0]["n"]
    finally:
        wh.close()


def _letters(settings, **filters):
    wh = Warehouse.open(settings)
    try:
        return dlq.letters(wh.rows, **filters)
    finally:
        wh.close()


def test_list_and_replay_after_a_fix(stack):
    settings = stack.settings
    # feedback that arrives before its request: the sink dead-letters it ("unknown request id")
    early = feedback_lines(JOB, [b'{"custom_id": "q1", "score": 0.9}'])
    asyncio.run(publish_lines(settings.kafka, JOB, [(k, v) for k, v, _ in early]))
    # stored before the request is sent (in one sink batch the request would make it known)
    _wait_until(lambda: _letters(settings, job=JOB, stage="sink"), 60, "the early feedback was not dead-lettered")
    # a request without a body: the router dead-letters it, custom_id and all
    run_job(settings, [request_line("q1", "Say yes."), b'{"custom_id": "no-body"}'], JOB)

    _wait_until(lambda: len(_letters(settings, job=JOB)) == 2, 60, "the two dead letters were not stored")
    env = {**os.environ, "SWITCHYARD_DATA_DIR": str(settings.data_dir)}
    listed = subprocess.run([sys.executable, "-m", "switchyard.cli", "dlq", "list", "--job", JOB, "--json"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    letters = {d["custom_id"]: d for d in map(json.loads, listed.stdout.splitlines())}
    assert set(letters) == {"q1", "no-body"}
    assert letters["q1"]["stage"] == "sink" and "unknown request id" in letters["q1"]["reason"]
    assert letters["q1"]["topic"] == settings.kafka.topics.feedback
    assert letters["no-body"]["stage"] == "router" and letters["no-body"]["topic"] == settings.kafka.topics.queries
    assert all(d["job_id"] == JOB and d["offset"] >= 0 for d in letters.values())

    # the request is known now: re-drive the feedback letter only
    chosen = _letters(settings, job=JOB, reason_contains="UNKNOWN REQUEST")
    assert [c.custom_id for c in chosen] == ["q1"]
    dry = asyncio.run(dlq.replay(settings.kafka, chosen, dry_run=True))
    assert dry.line(True) == f"would replay 1 dead letter(s): 1 to {settings.kafka.topics.feedback}"
    assert _feedback_n(settings) == 0
    done = asyncio.run(dlq.replay(settings.kafka, chosen))
    assert done.replayed == 1
    _wait_until(lambda: _feedback_n(settings) == 1, 60, "the replayed feedback was not stored")
    assert len(_letters(settings, job=JOB, stage="router")) == 1  # left alone


def test_a_truncated_letter_is_counted_not_sent():
    letter = dlq.Letter(stage="router", reason="too large (the letter keeps the first 65,536 of its 9 bytes)",
                        job_id="j", tenant="t", topic="queries", partition=0, offset=1, key="k", original=b"{")
    report = asyncio.run(dlq.replay(None, [letter], dry_run=True))
    assert (report.replayed, report.truncated) == (0, 1)
    submit_letter = dlq.Letter(stage="submit", reason="repeat", job_id="j", tenant="t", topic="submit:j",
                               partition=0, offset=3, key="j:line-3", original=b'{"custom_id": "x"}')
    (out,) = dlq.outputs_for([submit_letter], "queries")
    assert out.topic == "queries" and dict(out.headers) == {"switchyard-job-id": b"j", "switchyard-tenant": b"t"}
    assert submit_letter.custom_id == "x"
