"""The CLI's error exits, as a user meets them: one clear line on stderr, a nonzero exit code and
no traceback. Real processes (`python -m switchyard.cli`), a real embedded broker where one is
needed, nothing running where nothing should be."""
from __future__ import annotations

import asyncio
import json
import re
import os
import subprocess
import sys

import pytest

from infra.broker import create_topics, free_port, start_broker

from tests.conftest import request_line


def _cli(*args, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "switchyard.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_") or k == "SWITCHYARD_MUTATE"}
    # COLUMNS: rich wraps at 80 columns when not on a terminal; a user's terminal is wider
    return {**env, "SWITCHYARD_DATA_DIR": str(tmp_path / "sy"), "HF_HUB_OFFLINE": "1", "COLUMNS": "500", **extra}


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single line a failing command printed (stderr), checked to be an error, not a traceback."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("args", [["status", "job-1"], ["status", "job-1", "--json"], ["results", "job-1"],
                                  ["report"], ["report", "--json"]])
def test_reading_with_no_stack_and_an_empty_data_dir_says_so(tmp_path, args):
    proc = _cli(*args, env=_env(tmp_path))
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "no running stack" in line and str(tmp_path / "sy") in line and "switchyard up" in line
    assert proc.stdout == ""  # nothing a script could mistake for figures
    assert not (tmp_path / "sy" / "clickhouse").exists()  # and no empty engine left behind


@pytest.mark.parametrize("content, says", [
    (None, "No such file or directory"),
    ('{"custom_id": "a", "metric": \n', ":1: not a reference line"),
    ('{"custom_id": "a", "metric": "em_mc", "ground_truth": "A"}\n{"custom_id": "b"}\n', ":2: not a reference line ('metric')"),
    ('["custom_id", "a"]\n', ":1: not a reference line"),
    ('"just a string"\n', ":1: not a reference line"),
])
def test_grade_with_a_missing_or_malformed_references_file(tmp_path, content, says):
    refs = tmp_path / "refs.jsonl"
    if content is not None:
        refs.write_text(content)
    proc = _cli("grade", "job-1", "--references", str(refs), env=_env(tmp_path))
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert str(refs) in line and says in line


def test_init_against_a_bootstrap_where_nothing_listens(tmp_path):
    bootstrap = f"127.0.0.1:{free_port()}"
    proc = _cli("init", env=_env(tmp_path, SWITCHYARD_KAFKA__BOOTSTRAP=bootstrap,
                                 SWITCHYARD_CLICKHOUSE__DSN=f"chdb://{tmp_path / 'ch'}"))
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert f"cannot create the topics on Kafka at {bootstrap}" in line
    assert "tables ready" not in proc.stderr + proc.stdout


@pytest.fixture(scope="module")
def idle_broker():
    """A broker with Switchyard's topics and no stage consuming them: nothing will answer."""
    proc, bootstrap = start_broker()
    asyncio.run(create_topics(bootstrap))
    yield bootstrap
    proc.kill()
    proc.wait()


def test_submit_wait_that_times_out_exits_nonzero_and_says_so(tmp_path, idle_broker):
    job = tmp_path / "job.jsonl"
    job.write_bytes(request_line("a", "Name a colour.") + b"\n" + request_line("b", "Say hi.") + b"\n")
    out = tmp_path / "out.jsonl"
    proc = _cli("submit", str(job), "--wait", "--timeout", "2", "--json", "--job-id", "slow-job",
                "--out", str(out), env=_env(tmp_path, SWITCHYARD_KAFKA__BOOTSTRAP=idle_broker))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    summary = json.loads(proc.stdout)
    assert summary["timed_out"] is True and summary["sent"] == 2 and summary["answered"] == 0
    timed_out = [ln for ln in proc.stderr.splitlines() if "timed out" in ln]
    assert timed_out == ["timed out after 2s waiting for job slow-job: 0 of 2 answered; "
                         "the rest may still come (`switchyard status slow-job`)"]
    assert out.read_text() == ""  # what arrived (nothing), not a made-up answer


def test_up_with_a_stage_that_dies_before_ready_exits_nonzero_and_leaves_nothing_running(tmp_path):
    """The configured router artifact cannot be loaded, so the stages that read it (the sink for
    its training mix, the router) exit during start-up: `up` says which stage died, with its
    log's tail, exits 1 and stops everything it had started."""
    import shutil

    from router.artifact import DEFAULT_DIR
    from tests.conftest import processes_with_env

    broken = tmp_path / "broken-router"
    shutil.copytree(DEFAULT_DIR, broken)
    (broken / "arrays.npz").write_bytes(b"not an npz archive")
    env = {**os.environ, "SWITCHYARD_DATA_DIR": str(tmp_path / "sy"), "SWITCHYARD_ROUTER__ARTIFACT_DIR": str(broken),
           "SWITCHYARD_RETRAIN__ENABLED": "false", "SWITCHYARD_API__ENABLED": "false", "HF_HUB_OFFLINE": "1",
           "SWITCHYARD_MARKER": str(tmp_path), "COLUMNS": "2000"}
    proc = subprocess.run([sys.executable, "-m", "switchyard.cli", "up", "--all-tiers-small", "--engine", "inprocess"],
                          env=env, capture_output=True, text=True, timeout=300)
    said = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1, said
    assert re.search(r"stack failed: stage (router|sink) exited with code 1", said), said
    assert f"configured router artifact {broken} cannot be loaded" in said  # the stage's own log tail
    assert "Switchyard is up" not in said
    assert processes_with_env(str(tmp_path)) == [], "a failed start left processes behind"
