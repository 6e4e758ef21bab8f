"""The pipeline benchmark runs on real parts and reports what it measured (no timing asserts)."""
from switchyard.bench_pipeline import run


def test_bench_pipeline_reports_both_stages_at_both_batch_sizes():
    figures = run(requests=8, sink_rows=40)
    assert set(figures["router_stage_queries_per_s"]) == {"batch_1", "batch_32"}
    assert set(figures["sink_rows_per_s"]) == {"batch_10", "batch_500"}
    assert all(v > 0 for v in figures["router_stage_queries_per_s"].values())
    assert figures["sink_batching_speedup"] > 0 and figures["router_batching_speedup"] > 0
