"""`switchyard bench pipeline`: the router and sink stages against their own limits.

Both stages' processors run in-process on real parts (MiniLM + the default router; chDB), at
two batch sizes side by side in one run, beside their limits measured in the same run: the raw
encoder over the same texts sorted by length at its best batch size, and one direct bulk insert
of the same rows with clickhouse-connect. Ratios are written as JSON (`ratios`). No Kafka in that
loop: it measures the stages' own ceilings, not the broker.

Then, unless `kafka=False`, the whole path through the broker on a lean stack with the echo
engine (`switchyard.bench_kafka`): figures under `kafka_path`, with `overhead_ms` and
`offered_load_rps` copied to the top level.
"""
from __future__ import annotations

import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from schemas import Result, encode
from streams.records import RawRecord
from switchyard.bench_kafka import PROBE_RPS, sample_lines, run as run_kafka_path


def _query_records(n: int) -> list[RawRecord]:
    return [RawRecord(line, "queries", 0, i, headers={"switchyard-job-id": b"bench"})
            for i, line in enumerate(sample_lines(n))]


def _result_records(n: int) -> list[RawRecord]:
    now = datetime.now(timezone.utc)
    out = []
    for i in range(n):
        r = Result(request_id=f"bench:{i}", job_id="bench", tenant="t", custom_id=str(i), tier="small",
                   model="m", status="ok", response={"choices": [{"message": {"content": "x" * 200}}]},
                   router_version="v", submitted_at=now)
        out.append(RawRecord(encode(r), "results", 0, i))
    return out


def _rate(fn, records: list[RawRecord], batch: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(records), batch):
        fn(records[i : i + batch])
    return len(records) / (time.perf_counter() - started)


ENCODER_BATCHES = (16, 32, 64)


def _encoder_rate(encoder, texts: list[str], batch: int) -> float:
    """The raw encoder's ceiling: every text at once, sorted by length, at one batch size."""
    ordered = sorted(texts, key=len)
    started = time.perf_counter()
    encoder.encode(ordered, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True,
                   show_progress_bar=False)
    return len(texts) / (time.perf_counter() - started)


def _padded_tokens(encoder, texts: list[str], micro_batch: int) -> dict[str, int]:
    """Word pieces the encoder processes for the stage's micro-batches: the real ones, with every
    micro-batch padded to its longest text, and with the token-budgeted sub-batches of `embed`."""
    import numpy as np

    from router.embeddings import TOKEN_BUDGET, token_batches, token_counts

    tokens = token_counts(encoder, texts)
    chunks = [np.arange(i, min(i + micro_batch, len(texts))) for i in range(0, len(texts), micro_batch)]
    budgeted = sum(len(b) * int(tokens[c][b].max()) for c in chunks
                   for b in token_batches(tokens[c], micro_batch, TOKEN_BUDGET))
    return {"real": int(tokens.sum()), "padded_per_micro_batch": sum(len(c) * int(tokens[c].max()) for c in chunks),
            "budgeted": budgeted}


def run(requests: int = 256, sink_rows: int = 2000, *, kafka: bool = True, offered_rps: float = 200.0,
        seconds: float = 10.0, probes: Iterable[float] = PROBE_RPS) -> dict:
    from infra.clickhouse import apply_schema, connect
    from router.artifact import load_default
    from router.embeddings import embed, embedding_text, load_encoder
    from streams.routing import RouterProcessor, parse_query
    from streams.sink import ClickHouseWriter, to_rows

    encoder = load_encoder()
    router = RouterProcessor(load_default(), lambda t: embed(t, encoder=encoder, use_cache=False),
                             {"small": "s", "medium": "m", "large": "l"})
    queries = _query_records(requests)
    router.process(queries[:8])  # warm-up
    router_rates = {b: _rate(router.process, queries, b) for b in (1, 32)}

    with tempfile.TemporaryDirectory() as tmp:
        client = connect(f"chdb://{Path(tmp) / 'ch'}")
        apply_schema(client)
        writer = ClickHouseWriter(client)
        results = _result_records(sink_rows)
        sink_rates = {b: _rate(lambda rs: writer.write([to_rows(r) for r in rs]), results, b)
                      for b in (10, 500)}
        texts = [embedding_text(parse_query(q.value, q.headers).body.last_user_text()) for q in queries]
        encoder_rates = {b: _encoder_rate(encoder, texts, b) for b in ENCODER_BATCHES}
        rows = [to_rows(r) for r in results]  # the same rows, built beforehand: the insert alone
        columns = list(rows[0].values)
        started = time.perf_counter()
        client.insert("results", [[r.values[c] for c in columns] for r in rows], column_names=columns)
        bulk_rate = sink_rows / (time.perf_counter() - started)
        client.close()
    best_encoder = max(encoder_rates.values())
    figures = {
        "router_stage_queries_per_s": {f"batch_{b}": round(v, 1) for b, v in router_rates.items()},
        "router_batching_speedup": round(router_rates[32] / router_rates[1], 2),
        "sink_rows_per_s": {f"batch_{b}": round(v, 1) for b, v in sink_rates.items()},
        "sink_batching_speedup": round(sink_rates[500] / sink_rates[10], 2),
        "encoder_sentences_per_s": {f"sorted_batch_{b}": round(v, 1) for b, v in encoder_rates.items()},
        "bulk_insert_rows_per_s": round(bulk_rate, 1),
        "ratios": {"router_vs_encoder": round(router_rates[32] / best_encoder, 3),
                   "sink_vs_bulk_insert": round(sink_rates[500] / bulk_rate, 3)},
        "encoder_tokens": _padded_tokens(encoder, texts, 32),
        "requests": requests, "sink_rows": sink_rows,
    }
    if kafka:
        path = figures["kafka_path"] = run_kafka_path(offered_rps, seconds, probes)
        figures["overhead_ms"], figures["offered_load_rps"] = path["overhead_ms"], path["offered_load_rps"]
    return figures
