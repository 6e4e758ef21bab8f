"""The pipeline benchmark runs on real parts and reports what it measured (no timing asserts):
every input went through each stage at each batch size, each rate is the count over the bench's
own clock readings, each speedup is the ratio of the two rates it reports, and the sink's rows
are in ClickHouse."""
import json
import types

import pytest

import infra.clickhouse
import switchyard.bench_pipeline as bench
from streams.routing import RouterProcessor
from streams.sink import ClickHouseWriter

REQUESTS, SINK_ROWS = 40, 1100  # neither a multiple of its larger batch: the last batch is short


def _batches(n: int, batch: int) -> list[int]:
    return [min(batch, n - i) for i in range(0, n, batch)]


def test_bench_pipeline_measures_every_input_at_both_batch_sizes(monkeypatch):
    # The bench's clock, read through: each rate must be n over the interval it measured.
    readings: list[float] = []
    real_clock = bench.time.perf_counter

    def clock() -> float:
        readings.append(real_clock())
        return readings[-1]

    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=clock))

    # Spies on the real stage code (which still runs), tagged by how many clock readings came before.
    routed: list[tuple[int, list, list]] = []
    real_process = RouterProcessor.process

    def process(self, records):
        outputs = real_process(self, records)
        routed.append((len(readings), list(records), outputs))
        return outputs

    written: list[tuple[int, list, list]] = []
    real_write = ClickHouseWriter.write

    def write(self, rows):
        refused = real_write(self, rows)
        written.append((len(readings), list(rows), refused))
        return refused

    stored: dict[str, tuple] = {}
    real_connect = infra.clickhouse.connect

    def connect(dsn):
        client = real_connect(dsn)
        real_close = client.close

        def close():  # what the sink stage left in ClickHouse, read before the bench drops it
            stored["results"] = client.query("SELECT count(), uniqExact(request_id) FROM results FINAL").result_rows[0]
            stored["dead_letters"] = client.query("SELECT count() FROM dead_letters").result_rows[0]
            real_close()

        client.close = close
        return client

    monkeypatch.setattr(RouterProcessor, "process", process)
    monkeypatch.setattr(ClickHouseWriter, "write", write)
    monkeypatch.setattr(infra.clickhouse, "connect", connect)

    figures = bench.run(requests=REQUESTS, sink_rows=SINK_ROWS)

    assert figures["requests"] == REQUESTS and figures["sink_rows"] == SINK_ROWS
    # start and end of each timed run, nothing else: router ×2, sink ×2, the encoder at each batch
    # size, the bulk insert
    assert len(readings) == 2 * (4 + len(bench.ENCODER_BATCHES) + 1)
    starts, ends = readings[0::2], readings[1::2]
    counts = (REQUESTS, REQUESTS, SINK_ROWS, SINK_ROWS, *[REQUESTS] * len(bench.ENCODER_BATCHES), SINK_ROWS)
    rates = [n / (end - start) for n, start, end in zip(counts, starts, ends)]

    # Router stage: after the warm-up, every query once per batch size, in order, in batches of that size.
    ids = [f"bench-{i}" for i in range(REQUESTS)]
    warm_up = [r for r in routed if r[0] == 0]
    assert [len(recs) for _, recs, _ in warm_up] == [8]
    for phase, batch in ((1, 1), (3, 32)):
        runs = [(recs, outs) for p, recs, outs in routed if p == phase]
        assert [len(recs) for recs, _ in runs] == _batches(REQUESTS, batch), batch
        records = [r for recs, _ in runs for r in recs]
        outputs = [o for _, outs in runs for o in outs]
        assert [json.loads(r.value)["custom_id"] for r in records] == ids
        # each query routed: one work item and one decision, none dead-lettered
        assert sorted(o.topic.split(".")[0] for o in outputs) == sorted(["work", "decisions"] * REQUESTS)
        assert {id(o.origin) for o in outputs} == {id(r) for r in records}
    assert len(routed) == len(warm_up) + len(_batches(REQUESTS, 1)) + len(_batches(REQUESTS, 32))

    # Sink: every row given was written once per batch size, nothing refused, and is in ClickHouse.
    for phase, batch in ((5, 10), (7, 500)):
        runs = [(rows, refused) for p, rows, refused in written if p == phase]
        assert [len(rows) for rows, _ in runs] == _batches(SINK_ROWS, batch), batch
        assert all(refused == [] for _, refused in runs)
        rows = [row for rs, _ in runs for row in rs]
        assert {row.table for row in rows} == {"results"}
        assert sorted(row.values["request_id"] for row in rows) == sorted(f"bench:{i}" for i in range(SINK_ROWS))
    assert len(written) == len(_batches(SINK_ROWS, 10)) + len(_batches(SINK_ROWS, 500))
    assert stored == {"results": (SINK_ROWS, SINK_ROWS), "dead_letters": (0,)}  # the bulk insert: the same ids

    # Limits: the encoder over the same texts at each batch size, the bulk insert; the ratios to them.
    encoder = dict(zip(bench.ENCODER_BATCHES, rates[4:-1]))
    assert figures["encoder_sentences_per_s"] == {f"sorted_batch_{b}": round(r, 1) for b, r in encoder.items()}
    assert figures["bulk_insert_rows_per_s"] == round(rates[-1], 1)
    assert figures["ratios"] == {"router_vs_encoder": round(rates[1] / max(encoder.values()), 3),
                                 "sink_vs_bulk_insert": round(rates[3] / rates[-1], 3)}
    tokens = figures["encoder_tokens"]  # word pieces: budgeted sub-batches pad less than whole micro-batches
    assert tokens["real"] <= tokens["budgeted"] < tokens["padded_per_micro_batch"], tokens

    # The figures are those counts over those intervals, and the speedups their ratios.
    assert figures["router_stage_queries_per_s"] == {"batch_1": round(rates[0], 1), "batch_32": round(rates[1], 1)}
    assert figures["sink_rows_per_s"] == {"batch_10": round(rates[2], 1), "batch_500": round(rates[3], 1)}
    assert figures["router_batching_speedup"] == round(rates[1] / rates[0], 2)
    assert figures["sink_batching_speedup"] == round(rates[3] / rates[2], 2)
    # ... and, within the reported rounding, the ratio of the two rates it reports
    for stage, (small, large) in (("router", ("batch_1", "batch_32")), ("sink", ("batch_10", "batch_500"))):
        reported = figures["router_stage_queries_per_s" if stage == "router" else "sink_rows_per_s"]
        ratio = reported[large] / reported[small]
        slack = ratio * (0.05 / reported[large] + 0.05 / reported[small]) * 1.01 + 0.005
        assert figures[f"{stage}_batching_speedup"] == pytest.approx(ratio, abs=slack), stage
