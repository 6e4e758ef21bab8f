"""Every consuming stage of a real lean stack serves Prometheus metrics on loopback, behind the
operator's token, and its counters move while a job runs."""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.auth import Keyring
from streams.kafka import producing
from switchyard.stack import StackInfo, info_path
from tests.conftest import request_line, run_job


def _scrape(url: str, token: str | None) -> dict[tuple[str, tuple], float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    want = tuple(sorted(labels.items()))
    return sum(v for (n, lab), v in samples.items() if n == name and set(want) <= set(lab))


def _get(url: str, token: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.read()


async def _publish_raw(settings, value: bytes) -> None:
    async with producing(settings.kafka) as producer:
        await producer.send_and_wait(settings.kafka.topics.queries, value, key=b"metrics-job:bad")


def test_each_stage_serves_metrics_that_move_during_a_job(stack):
    s = stack.settings
    info = StackInfo.load(info_path(s))
    assert set(info.metrics_urls) == {"router", "sink", "worker-small", "worker-medium", "worker-large",
                                      "retrainer", "api"}
    token = Keyring(s.secrets_dir).operator_token()
    for url in info.metrics_urls.values():
        with pytest.raises(urllib.error.HTTPError) as refused:
            _scrape(url, None)
        assert refused.value.code == 401
        with pytest.raises(urllib.error.HTTPError):
            _scrape(url, "sy-not-the-operator")
        assert url.startswith("http://127.0.0.1:")
    before = {name: _scrape(url, token) for name, url in info.metrics_urls.items()}
    lines = [request_line(f"m{i}", f"Say the number {i}.", routing={"pinned_tier": "small"}) for i in range(6)]
    asyncio.run(_publish_raw(s, b'{"request_id": "metrics-job:bad", "body": "not an object"}'))
    run_job(s, lines, "metrics-job")
    for file_id in ("file-nope-1", "file-nope-2"):  # two ids, one route template, 404 each
        with pytest.raises(urllib.error.HTTPError):
            _get(f"{info.api_url}/files/{file_id}", token)
    _get(f"{info.api_url}/models", token)
    after = {name: _scrape(url, token) for name, url in info.metrics_urls.items()}

    def moved(stage: str, name: str, label_stage: str, **labels) -> float:
        return (_value(after[stage], name, stage=label_stage, **labels)
                - _value(before[stage], name, stage=label_stage, **labels))

    assert moved("router", "switchyard_records_total", "router") == 7
    assert moved("router", "switchyard_dead_letters_total", "router") == 1
    assert moved("router", "switchyard_dead_letters_total", "router", reason="invalid request") == 1
    assert moved("worker-small", "switchyard_records_total", "worker.small") == 6
    assert moved("sink", "switchyard_records_total", "sink") >= 6 + 6 + 6  # requests, decisions, results
    assert moved("router", "switchyard_batch_seconds_count", "router") >= 1
    tokens = (_value(after["worker-small"], "switchyard_model_tokens_total", tier="small", kind="completion")
              - _value(before["worker-small"], "switchyard_model_tokens_total", tier="small", kind="completion"))
    assert tokens > 0
    lag = [v for (n, lab), v in after["sink"].items() if n == "switchyard_consumer_lag"]
    assert lag and all(v >= 0 for v in lag)
    assert _value(after["worker-small"], "switchyard_breaker_open", tier="small") == 0
    assert (_value(after["api"], "switchyard_api_requests_total", route="/v1/files/{file_id}", status="404")
            - _value(before["api"], "switchyard_api_requests_total", route="/v1/files/{file_id}", status="404")) == 2
    assert (_value(after["api"], "switchyard_api_requests_total", route="/v1/models", status="200")
            - _value(before["api"], "switchyard_api_requests_total", route="/v1/models", status="200")) == 1
    assert not any("file-nope" in dict(lab).get("route", "") for (_, lab) in after["api"])
    assert ("switchyard_feedback_since_retrain", ()) in after["retrainer"]  # (it polls every 30 s: served, not moved)
    assert json.dumps(info.metrics_urls)  # (StackInfo keeps them for other processes)


def test_the_grafana_dashboard_uses_only_metric_names_the_stages_export():
    import re
    from pathlib import Path

    from streams import metrics

    exported = {m._name for m in vars(metrics).values() if hasattr(m, "_name") and hasattr(m, "collect")}
    dashboard = json.loads((Path(__file__).resolve().parent.parent / "infra/grafana/switchyard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|count|sum|total)$", "", n) for e in exprs for n in re.findall(r"switchyard_[a-z_]+", e)}
    assert used and used <= {re.sub(r"_total$", "", n) for n in exported}, used
