"""The OpenAI-compatible API driven by the real `openai` SDK against the running lean stack:
Files + Batches end to end, chat completions (streaming included), models, tenancy."""
import json
import threading
import time

import openai
import pytest
from openai.types.chat import ChatCompletion

from infra.auth import Keyring
from tests.conftest import request_line


@pytest.fixture(scope="module")
def api(stack):
    import socket

    import uvicorn

    from switchyard.api.app import create_app
    from workers.tiers import served_models

    settings = stack.settings
    keyring = Keyring(settings.secrets_dir)
    keys = {t: keyring.add_tenant(t) for t in ("acme", "globex", "revoked")}
    keyring.revoke_tenant("revoked")
    app = create_app(settings, settings.kafka, served_models(settings.workers))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", keys
    server.should_exit = True
    thread.join(timeout=10)


def _client(api, tenant: str) -> openai.OpenAI:
    base_url, keys = api
    return openai.OpenAI(base_url=base_url, api_key=keys[tenant], max_retries=0)


def _until_done(client: openai.OpenAI, batch_id: str, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled", "expired") or time.monotonic() > deadline:
            return batch
        time.sleep(0.5)


def _lines(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(ln) for ln in client.files.content(file_id).text.splitlines()]


def test_a_batch_job_through_the_sdk_accounts_for_every_line(api):
    client = _client(api, "acme")
    lines = [request_line(f"q{i}", p) for i, p in enumerate(["Say yes.", "Name a colour.", "Count to three."])]
    lines.append(json.dumps({"custom_id": "parts", "method": "POST", "url": "/v1/chat/completions",
                             "body": {"messages": [{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}],
                                      "max_tokens": 8}}).encode())
    lines.append(b'{"custom_id": "broken", "body": ')
    uploaded = client.files.create(file=("nightly.jsonl", b"\n".join(lines) + b"\n"), purpose="batch")
    assert uploaded.bytes > 0 and uploaded.filename == "nightly.jsonl"
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"team": "nightly"})
    assert batch.status == "in_progress" and batch.errors.data[0].line == 5
    done = _until_done(client, batch.id)
    assert done.status == "completed", done
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (5, 4, 1)
    outputs = _lines(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in outputs) == ["parts", "q0", "q1", "q2"]
    for line in outputs:
        ChatCompletion.model_validate(line["response"]["body"])  # the SDK's own type
        assert line["response"]["status_code"] == 200 and line["error"] is None
    errors = _lines(client, done.error_file_id)
    assert len(errors) == 1 and errors[0]["error"]["code"] == "invalid_request"
    assert "JSON" in errors[0]["error"]["message"]
    assert done.metadata == {"team": "nightly"}
    assert batch.id in [b.id for b in client.batches.list()]


def test_a_cancelled_batch_keeps_what_was_answered(api):
    client = _client(api, "acme")
    lines = [request_line(f"c{i}", f"Write the number {i} in words.") for i in range(30)]
    uploaded = client.files.create(file=("big.jsonl", b"\n".join(lines)), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    cancelled = client.batches.cancel(batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    outputs, errors = _lines(client, cancelled.output_file_id), _lines(client, cancelled.error_file_id)
    assert len(outputs) + len(errors) == 30, "every line is in the output or the error file"
    assert any(e["error"]["code"] == "batch_cancelled" for e in errors)
    assert cancelled.request_counts.completed == len(outputs)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def test_routed_and_pinned_chat_completions_streaming_included(api):
    client = _client(api, "acme")
    raw = client.chat.completions.with_raw_response.create(
        model="switchyard/auto", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8)
    answer = raw.parse()
    assert isinstance(answer, ChatCompletion) and answer.choices[0].message.content
    assert raw.headers["x-switchyard-tier"] in ("small", "medium", "large")
    assert raw.headers["x-switchyard-model"] == answer.model
    pinned = client.chat.completions.with_raw_response.create(
        model="large", messages=[{"role": "user", "content": "Say yes."}], max_tokens=4,
        extra_body={"routing": {"alpha": 0.5}})
    assert pinned.headers["x-switchyard-tier"] == "large"
    stream = client.chat.completions.create(model="switchyard/auto", stream=True, max_tokens=8,
                                            messages=[{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}],
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() and chunks[-1].usage.completion_tokens > 0
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "hi"}])
    assert "switchyard/auto" in [m.id for m in client.models.list()]


def test_tenants_see_only_their_own_files_and_batches(api):
    acme, globex = _client(api, "acme"), _client(api, "globex")
    uploaded = acme.files.create(file=("mine.jsonl", request_line("x", "Say yes.")), purpose="batch")
    batch = acme.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert uploaded.id not in [f.id for f in globex.files.list()]
    assert batch.id not in [b.id for b in globex.batches.list()]
    with pytest.raises(openai.NotFoundError):
        globex.files.content(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        globex.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        globex.batches.cancel(batch.id)
    with pytest.raises(openai.NotFoundError):  # another tenant's file cannot feed a batch
        globex.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    base_url, keys = api
    for key in ("sy-wrong", keys["revoked"]):
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base_url, api_key=key, max_retries=0).files.list()
    assert acme.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        acme.files.retrieve(uploaded.id)


def test_the_stack_serves_the_api_itself(stack, api):
    """`up` (here: the stack fixture) starts the API stage on the address it records."""
    _, keys = api
    assert stack.info.api_url.startswith("http://127.0.0.1:")
    own = openai.OpenAI(base_url=stack.info.api_url, api_key=keys["acme"], max_retries=0)
    assert "switchyard/auto" in [m.id for m in own.models.list()]
    answer = own.chat.completions.create(model="small", messages=[{"role": "user", "content": "Say yes."}],
                                         max_tokens=4)
    assert answer.choices[0].message.content
