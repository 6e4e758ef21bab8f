"""The pipeline benchmark runs on real parts and reports what it measured (no timing asserts):
every input went through each stage at each batch size, each rate is the count over the bench's
own clock readings, each speedup is the ratio of the two rates it reports, and the sink's rows
are in ClickHouse. Its Kafka path, on a lean stack with the echo engine, answers every request
it offers and reports figures that agree with each other."""
import asyncio
import json
import types

import pytest

import infra.clickhouse
import switchyard.bench_kafka as bench_kafka
import switchyard.bench_pipeline as bench
from streams.routing import RouterProcessor
from streams.sink import ClickHouseWriter
from workers.config import WorkerSettings
from workers.engine import EchoEngine, EngineError
from workers.tiers import build_engine, ensure_all, served_models, served_tier

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

    figures = bench.run(requests=REQUESTS, sink_rows=SINK_ROWS, kafka=False)

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


def test_echo_engine_needs_no_model_and_echoes_the_last_user_message(tmp_path):
    workers = WorkerSettings(engine="echo", model_dir=tmp_path / "no-models-here")
    for tier in ("small", "medium", "large"):
        served = served_tier(tier, workers)
        assert (served.engine, served.spec, served.name) == ("echo", None, "echo")
    assert ensure_all(workers) == {}  # nothing to fetch: no model file is looked for
    assert served_models(workers) == {"small": "echo", "medium": "echo", "large": "echo"}
    engine = build_engine("large", workers)
    assert isinstance(engine, EchoEngine)
    assert not (tmp_path / "no-models-here").exists()

    prompt = "please repeat " * 20
    body = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
                         {"role": "assistant", "content": "ok"}, {"role": "user", "content": prompt}]}
    answer = asyncio.run(engine.chat(body))
    assert answer["object"] == "chat.completion" and answer["model"] == "echo"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": prompt[:engine.max_chars]}
    assert len(prompt) > engine.max_chars  # truncated
    words = len(" ".join(m["content"] for m in body["messages"]).split())
    assert answer["usage"] == {"prompt_tokens": words, "completion_tokens": 1, "total_tokens": words + 1}
    with pytest.raises(EngineError) as refused:
        asyncio.run(engine.chat({"messages": []}))
    assert refused.value.status == 400


def test_kafka_figures_are_counted_over_the_requests_and_the_steady_window():
    submitted = {"a": 10.0, "b": 10.5, "c": 11.0, "d": 12.0}
    arrived = {"a": (10.02, "ok"), "b": (10.6, "ok"), "c": (12.5, "error"), "other": (10.1, "ok")}
    fig = bench_kafka.figures(4.0, submitted, arrived)
    assert (fig["submitted"], fig["answered"], fig["lost"], fig["errors"]) == (4, 3, 1, 1)
    assert fig["overhead_ms"] == {"p50": 100.0, "p90": 1500.0, "p99": 1500.0, "max": 1500.0}
    assert fig["achieved_rps"] == 1.0  # a and b arrived within the 2 s from the first submit to the last
    assert fig["published_rps"] == 1.5
    assert bench_kafka.figures(4.0, submitted, {})["overhead_ms"] is None


def test_bench_pipeline_kafka_path_answers_every_request_it_offers():
    rps, seconds, probe = 20.0, 2.0, 10.0
    figures = bench.run(requests=8, sink_rows=20, offered_rps=rps, seconds=seconds, probes=(probe, 40.0))

    assert set(figures["ratios"]) == {"router_vs_encoder", "sink_vs_bulk_insert"}  # the in-process part, kept
    path = figures["kafka_path"]
    assert figures["overhead_ms"] == path["overhead_ms"] and figures["offered_load_rps"] == path["offered_load_rps"] == rps
    assert [p["offered_load_rps"] for p in path["probes"]] == [probe]  # only the loads below the offered one
    for run, load in ((path, rps), *((p, p["offered_load_rps"]) for p in path["probes"])):
        assert run["submitted"] == round(load * seconds)
        assert run["answered"] == run["submitted"] and run["lost"] == 0 and run["errors"] == 0, run
        o = run["overhead_ms"]
        assert 0 < o["p50"] <= o["p90"] <= o["p99"] <= o["max"], o
        assert 0 < run["achieved_rps"] <= load * 1.5, run
        assert 0 < run["published_rps"] <= load * 1.5, run
    met = [r["offered_load_rps"] for r in (*path["probes"], path) if r["overhead_ms"]["p99"] <= path["p99_goal_ms"]]
    assert path["sustainable_rps"] == (max(met) if met else None)
