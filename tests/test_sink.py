"""The sink's processor and writer against the real in-process ClickHouse engine."""
import json

import pytest

from infra.clickhouse import apply_schema, connect
from schemas import Feedback, Result, encode
from streams.records import RawRecord
from streams.sink import ClickHouseWriter, to_rows


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    c = connect(f"chdb://{tmp_path_factory.mktemp('ch')}")
    apply_schema(c)
    yield c
    c.close()


def _result(custom_id: str, answer: str) -> Result:
    return Result(request_id=f"job:{custom_id}", job_id="job", tenant="t", custom_id=custom_id,
                  tier="medium", model="m", status="ok",
                  response={"choices": [{"message": {"content": answer}}]},
                  usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                  router_version="v1", submitted_at="2026-01-01T00:00:00Z")


def _record(topic: str, value: bytes, offset: int = 0) -> RawRecord:
    return RawRecord(value=value, topic=topic, partition=0, offset=offset)


def test_a_replayed_result_never_doubles_a_row(client):
    writer = ClickHouseWriter(client)
    first = to_rows(_record("results", encode(_result("a", "first"))))
    replay = to_rows(_record("results", encode(_result("a", "second"))))
    other = to_rows(_record("results", encode(_result("b", "x"))))
    writer.write([first, other])
    writer.write([replay])
    rows = client.query("SELECT custom_id, answer FROM results FINAL WHERE job_id = 'job' ORDER BY custom_id").result_rows
    assert rows == [("a", "second"), ("b", "x")]


def test_bad_feedback_becomes_a_dead_letter_row(client):
    row = to_rows(_record("feedback", b'{"request_id": "job:a", "score": 7}', offset=42))
    assert row.table == "dead_letters"
    ClickHouseWriter(client).write([row])
    stage, reason, offset = client.query(
        "SELECT stage, reason, offset FROM dead_letters FINAL WHERE offset = 42").result_rows[0]
    assert stage == "sink" and offset == 42
    assert "score" in reason and "job_id" in reason


def test_feedback_and_invalid_queries(client):
    fb = Feedback(request_id="job:a", job_id="job", source="auto_grade", score=1.0, metric="em_mc")
    ClickHouseWriter(client).write([to_rows(_record("feedback", encode(fb)))])
    assert client.query("SELECT score FROM feedback FINAL WHERE request_id = 'job:a'").result_rows == [(1.0,)]
    # Invalid queries are the router's to dead-letter; the sink must not write a second letter.
    assert to_rows(_record("queries", b"garbage")) is None
    valid = json.dumps({"custom_id": "c", "job_id": "job", "body": {"messages": [{"role": "user", "content": "hey"}]}})
    assert to_rows(_record("queries", valid.encode())).values["prompt_chars"] == 3


def test_a_row_clickhouse_refuses_is_dead_lettered_and_the_batch_still_lands(client):
    good = to_rows(_record("results", encode(_result("p-good", "fine")), offset=100))
    poison = to_rows(_record("results", encode(_result("p-bad", "x")), offset=101))
    poison.values["prompt_tokens"] = "not a number"  # what a schema drift would look like
    refused = ClickHouseWriter(client).write([good, poison])
    assert [r.values["offset"] for r in refused] == [101]
    assert client.query("SELECT custom_id FROM results FINAL WHERE custom_id LIKE 'p-%'").result_rows == [("p-good",)]
    reason, job = client.query("SELECT reason, job_id FROM dead_letters FINAL WHERE offset = 101").result_rows[0]
    assert "ClickHouse refused the results row" in reason and job == "job"
