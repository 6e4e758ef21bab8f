"""The chaos run on the embedded lean stack: stages, the broker and one tier's model fail during
a job, and nothing is lost or doubled."""
import pytest

from switchyard.chaos import bad_messages, job_lines, run_chaos
from tests.conftest import lean_settings


def _check(report: dict, requests: int) -> None:
    assert report["submitted"] == requests
    assert report["answered"] == requests and report["lost"] == 0, report
    assert report["duplicated"] == 0 and report["duplicated_final"] == 0, report
    assert report["bad_dead_lettered_with_reason"] == report["injected_bad"] == len(bad_messages()), report
    assert len(report["stage_restarts"]) == 5  # 3 stages, the broker, one more stage
    killed = " ".join(report["stage_restarts"])
    assert all(kind in killed for kind in ("router", "sink", "worker-", "broker")), killed
    assert report["replayed"] >= 0 and report["fallback_answered"] > 0, report
    assert report["breaker_open_s"] is not None and report["breaker_close_s"] is not None, report


@pytest.mark.slow
def test_a_small_chaos_run(tmp_path):
    report = run_chaos(lean_settings(tmp_path / "sy"), requests=24, seed=1, say=lambda _: None)
    _check(report, 24)


@pytest.mark.chaos
def test_the_chaos_run(tmp_path):
    report = run_chaos(lean_settings(tmp_path / "sy"), requests=2000, seed=7, say=lambda _: None,
                       answer_timeout=3600)
    _check(report, 2000)


def test_job_lines_pin_a_third_to_the_failing_tier():
    lines = job_lines(12)
    assert sum(b"pinned_tier" in ln for ln in lines) == 4
