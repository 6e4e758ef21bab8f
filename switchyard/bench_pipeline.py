"""`switchyard bench pipeline`: what batching buys in the router and sink stages.

Both stages' processors run in-process on real parts (MiniLM + the default router; chDB), at
two batch sizes side by side in one run, and the ratios are written as JSON. No Kafka in the
loop: this measures the stages' own ceilings, not the broker.
"""
from __future__ import annotations

import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from schemas import Result, encode
from streams.records import RawRecord


def _query_records(n: int) -> list[RawRecord]:
    from importlib.resources import files

    lines = files("switchyard").joinpath("data/sample_job.jsonl").read_text().splitlines()
    records = []
    for i in range(n):
        data = json.loads(lines[i % len(lines)])
        data["custom_id"] = f"bench-{i}"
        data["body"]["messages"][0]["content"] += f" (variant {i})"  # defeat any caching
        records.append(RawRecord(json.dumps(data).encode(), "queries", 0, i,
                                 headers={"switchyard-job-id": b"bench"}))
    return records


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


def run(requests: int = 256, sink_rows: int = 2000) -> dict:
    from infra.clickhouse import apply_schema, connect
    from router.artifact import load_default
    from router.embeddings import embed, load_encoder
    from streams.routing import RouterProcessor
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
        client.close()
    return {
        "router_stage_queries_per_s": {f"batch_{b}": round(v, 1) for b, v in router_rates.items()},
        "router_batching_speedup": round(router_rates[32] / router_rates[1], 2),
        "sink_rows_per_s": {f"batch_{b}": round(v, 1) for b, v in sink_rates.items()},
        "sink_batching_speedup": round(sink_rates[500] / sink_rates[10], 2),
        "requests": requests, "sink_rows": sink_rows,
    }
