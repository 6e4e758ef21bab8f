import json

import pytest

from schemas import QueryRequest, Result, WorkItem, encode
from schemas.validation import InvalidMessage, parse_query
from tests.helpers import decode


def test_valid_request_gets_job_from_header_and_a_request_id():
    raw = json.dumps({"custom_id": "q1", "body": {"messages": [{"role": "user", "content": "hi"}]}}).encode()
    req = parse_query(raw, {"switchyard-job-id": b"job-7"})
    assert req.job_id == "job-7"
    assert req.request_id == "job-7:q1"
    assert decode(QueryRequest, encode(req)) == req


@pytest.mark.parametrize("raw, expected", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"custom_id": "a", "body": {}}', "body.messages: Field required"),
    (b'{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "x"}], "max_tokens": "lots"}}',
     "body.max_tokens"),
    (b'{"custom_id": "", "body": {"messages": [{"role": "user", "content": "x"}]}}', "custom_id"),
    (b'{"custom_id": "a", "url": "/v1/embeddings", "body": {"messages": [{"role": "user", "content": "x"}]}}', "url"),
])
def test_bad_requests_get_readable_reasons(raw, expected):
    with pytest.raises(InvalidMessage) as info:
        parse_query(raw, {"switchyard-job-id": b"j"})
    assert expected in info.value.reason
    assert info.value.job_id == "j"


def test_work_item_rejects_a_request_id_that_does_not_match_its_parts():
    with pytest.raises(ValueError, match="request_id"):
        WorkItem(request_id="x:y", job_id="x", tenant="t", custom_id="z", tier="small",
                 body={"messages": [{"role": "user", "content": "q"}]}, router_version="v",
                 submitted_at="2026-01-01T00:00:00Z", decided_at="2026-01-01T00:00:00Z")


def test_result_renders_as_an_openai_batch_output_line():
    ok = Result(request_id="j:1", job_id="j", tenant="t", custom_id="1", tier="small", model="m",
                status="ok", response={"choices": [{"message": {"content": "hello"}}]},
                router_version="v", submitted_at="2026-01-01T00:00:00Z")
    line = ok.to_batch_output_line()
    assert line["custom_id"] == "1" and line["error"] is None
    assert line["response"]["status_code"] == 200 and ok.answer_text() == "hello"
    failed = ok.model_copy(update={"status": "error", "response": None, "error": "boom"})
    assert failed.to_batch_output_line()["error"]["message"] == "boom"


def test_content_parts_and_tool_call_turns_are_requests_image_parts_a_clear_error():
    from schemas import ChatCompletionBody
    from pydantic import ValidationError

    body = ChatCompletionBody.model_validate({"messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}, {"type": "text", "text": "Now."}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                                 "function": {"name": "add", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "4"},
        {"role": "user", "content": [{"type": "text", "text": "Thanks."}]}]})
    assert body.last_user_text() == "Thanks."
    assert body.prompt_text().startswith("Be brief.\nWhat is 2+2?\nNow.\n\n4")
    with pytest.raises(ValidationError, match="type 'image_url' are not supported yet"):
        ChatCompletionBody.model_validate({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]})
    with pytest.raises(ValidationError, match="null only for an assistant message with tool_calls"):
        ChatCompletionBody.model_validate({"messages": [{"role": "user", "content": None}]})


def test_a_time_without_a_zone_is_read_as_utc_so_no_stage_subtracts_naive_from_aware():
    item = decode(WorkItem, json.dumps({
        "request_id": "j:c", "job_id": "j", "tenant": "t", "custom_id": "c", "tier": "small",
        "body": {"messages": [{"role": "user", "content": "hi"}]}, "router_version": "v",
        "submitted_at": "2026-01-01T00:00:00", "decided_at": "2026-01-01T00:00:01"}))
    assert item.submitted_at.utcoffset().total_seconds() == 0
    assert (item.decided_at - item.submitted_at).total_seconds() == 1
