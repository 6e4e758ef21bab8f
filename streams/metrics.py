"""Operator metrics (prometheus-client): every stage process serves its own on loopback.

The names are the contract with infra/grafana/switchyard.json:
- switchyard_records_total{stage}: records consumed;
- switchyard_dead_letters_total{stage,reason}: of those, dead-lettered, by the reason's kind
  (`streams.records.reason_kind`: "not valid JSON", "invalid request", "message is N bytes", ...);
- switchyard_batch_errors_total{stage}: batches whose processing or effect raised (the stage
  then restarts and replays them);
- switchyard_batch_seconds{stage}: one batch through process + effect (histogram);
- switchyard_consumer_lag{stage,topic,partition}: the partition's high-water mark minus the
  next offset this stage will consume, after each batch;
- switchyard_model_tokens_total{tier,kind}: prompt / completion tokens the tier's model handled
  (rate() of it is tokens/s);
- switchyard_breaker_open{tier}: 1 while the tier's circuit breaker is open;
- switchyard_cache_lookups_total{outcome}: the router's semantic cache per request: exact,
  similar (hits), miss, bypass (not cacheable: opted out, temperature > 0, n > 1);
- switchyard_cache_entries: answers the router's semantic cache holds (all tenants);
- switchyard_api_requests_total{route,status}, switchyard_api_seconds{route}: the API's requests
  by route template (/v1/batches/{batch_id}, not the id) and HTTP status, and their duration;
- switchyard_retrains_total{outcome}: the retrain schedule's runs: published, refused,
  no_candidate (too few outcomes, a tier never seen), failed (an error, logged);
  switchyard_retrain_seconds: one run; switchyard_feedback_since_retrain: the trigger's count.

The endpoint takes the operator's bearer token (Prometheus: `authorization: credentials_file`),
like every other endpoint of the stack.
"""
from __future__ import annotations

import hmac
import threading
from typing import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app

RECORDS = Counter("switchyard_records_total", "Records consumed by the stage", ["stage"])
DEAD_LETTERS = Counter("switchyard_dead_letters_total", "Records the stage dead-lettered", ["stage", "reason"])
BATCH_ERRORS = Counter("switchyard_batch_errors_total", "Batches whose processing or effect raised", ["stage"])
BATCH_SECONDS = Histogram("switchyard_batch_seconds", "One batch through process and effect", ["stage"],
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
CONSUMER_LAG = Gauge("switchyard_consumer_lag", "High-water mark minus the next offset to consume",
                     ["stage", "topic", "partition"])
MODEL_TOKENS = Counter("switchyard_model_tokens_total", "Tokens the tier's model handled", ["tier", "kind"])
BREAKER_OPEN = Gauge("switchyard_breaker_open", "1 while the tier's circuit breaker is open", ["tier"])
CACHE_LOOKUPS = Counter("switchyard_cache_lookups_total", "Semantic cache lookups by outcome", ["outcome"])
CACHE_ENTRIES = Gauge("switchyard_cache_entries", "Answers the semantic cache holds, all tenants")
API_REQUESTS = Counter("switchyard_api_requests_total", "API requests by route template and status",
                       ["route", "status"])
API_SECONDS = Histogram("switchyard_api_seconds", "API request handling time", ["route"],
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
RETRAINS = Counter("switchyard_retrains_total", "Scheduled retrains by outcome", ["outcome"])
RETRAIN_SECONDS = Histogram("switchyard_retrain_seconds", "One scheduled retrain, read to verdict",
                            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800))
FEEDBACK_SINCE_RETRAIN = Gauge("switchyard_feedback_since_retrain",
                               "Feedback rows since the last retrain verdict (the schedule's trigger)")


def observe_lag(stage: str, highwater: Callable[[object], int | None], next_offsets: dict) -> None:
    """next_offsets: {TopicPartition-like (topic, partition): next offset to consume}."""
    for tp, nxt in next_offsets.items():
        hw = highwater(tp)
        if hw is not None:
            CONSUMER_LAG.labels(stage, tp.topic, str(tp.partition)).set(max(0, hw - nxt))


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def serve_metrics(port: int, token: str, host: str = "127.0.0.1") -> WSGIServer:
    """Serve /metrics on host:port in a daemon thread; 401 without `Authorization: Bearer token`."""
    metrics = make_wsgi_app()
    expected = f"Bearer {token}".encode()

    def app(environ, start_response):
        given = environ.get("HTTP_AUTHORIZATION", "").encode()
        if not hmac.compare_digest(given, expected):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
            return [b"unauthorized: send the operator's bearer token\n"]
        return metrics(environ, start_response)

    server = make_server(host, port, app, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
