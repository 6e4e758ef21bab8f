"""The CLI as a user drives it: `up` in the foreground, submit/status/results, Ctrl-C."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import processes_with_env, request_line


def _cli(*args, env, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "switchyard.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _port_open(address: str) -> bool:
    host, port = address.split(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) == 0


def test_up_submit_status_results_and_ctrl_c(tmp_path):
    data_dir = tmp_path / "sy"
    env = {**os.environ, "SWITCHYARD_DATA_DIR": str(data_dir), "SWITCHYARD_WORKERS__MAX_TOKENS_CAP": "8",
           "SWITCHYARD_MARKER": str(tmp_path)}
    up = subprocess.Popen([sys.executable, "-m", "switchyard.cli", "up", "--all-tiers-small",
                           "--engine", "inprocess"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (data_dir / "run" / "worker-large.ready").exists():
            assert up.poll() is None, up.stdout.read()
            assert time.monotonic() < deadline, "stack did not come up"
            time.sleep(0.2)
        info = json.loads((data_dir / "stack.json").read_text())

        job = tmp_path / "job.jsonl"
        job.write_bytes(b"\n".join([request_line("a", "Name a colour."), request_line("b", "Say hi."),
                                    b"{broken"]) + b"\n")
        out = tmp_path / "out.jsonl"
        sub = _cli("submit", str(job), "--wait", "--out", str(out), "--json", "--job-id", "cli-job", env=env)
        assert sub.returncode == 0, sub.stderr
        summary = json.loads(sub.stdout)
        assert summary["answered"] == 2 and summary["dead_letters"] == 1 and summary["invalid"] == 1
        assert "line 3" in sub.stderr and "not valid JSON" in sub.stderr
        lines = [json.loads(ln) for ln in out.read_text().splitlines()]
        assert sorted(ln["custom_id"] for ln in lines) == ["a", "b"]
        assert all(ln["response"]["status_code"] == 200 for ln in lines)
        # every input line is accounted for: the broken one is in the error file
        errors = [json.loads(ln) for ln in (tmp_path / "out.errors.jsonl").read_text().splitlines()]
        assert len(errors) == 1 and "not valid JSON" in errors[0]["error"]["message"]
        assert summary["errors_file"].endswith("out.errors.jsonl")

        deadline = time.monotonic() + 60
        while True:  # through the sink's query endpoint, while the stack runs
            status = json.loads(_cli("status", "cli-job", "--json", env=env).stdout)
            if status["answered"] == 2 and status["dead_letters"] == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status["requests"] == 2 and status["routed"] == 2 and status["answered"] == 2
        assert status["dead_letters"] == 1
        assert sum(t["requests"] for t in status["tiers"]) == 2

        # users' feedback: the good line lands, the unknown id is dead-lettered by the sink
        fb = tmp_path / "fb.jsonl"
        fb.write_text('{"custom_id": "a", "thumbs": "up"}\n{"custom_id": "ghost", "score": 0.5}\n')
        sent = _cli("feedback", "cli-job", "--file", str(fb), "--json", env=env)
        assert sent.returncode == 0 and json.loads(sent.stdout) == {"job_id": "cli-job", "sent": 2, "invalid": 0}
        deadline = time.monotonic() + 60
        while json.loads(_cli("status", "cli-job", "--json", env=env).stdout)["dead_letters"] < 2:
            assert time.monotonic() < deadline, "feedback for an unknown request was not dead-lettered"
            time.sleep(0.5)
        few = _cli("retrain", "--dry-run", env=env)
        assert few.returncode == 1 and "retraining needs at least" in few.stderr, few.stderr

        missing = _cli("submit", str(tmp_path / "nope.jsonl"), env=env)
        assert missing.returncode == 2 and "no such file" in missing.stderr

        # A stage that crashes is restarted by `up`, and the next job is answered.
        ready = data_dir / "run" / "worker-small.ready"
        victims = [p for p in processes_with_env(str(tmp_path))
                   if b"--tier\x00small" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(victims) == 1
        before = ready.read_text(), ready.stat().st_mtime_ns
        os.kill(victims[0], signal.SIGKILL)

        def restarted() -> bool:  # the new process writes a fresh marker
            try:
                return (ready.read_text(), ready.stat().st_mtime_ns) != before
            except OSError:
                return False

        deadline = time.monotonic() + 120
        while not restarted() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert restarted(), "`up` did not restart the crashed tier worker"
        job2 = tmp_path / "job2.jsonl"
        job2.write_bytes(b"\n".join(request_line(f"c{i}", "Say yes.", routing={"pinned_tier": "small"})
                                    for i in range(2)) + b"\n")
        again = _cli("submit", str(job2), "--wait", "--json", "--job-id", "cli-job-2", env=env)
        assert again.returncode == 0 and json.loads(again.stdout)["answered"] == 2
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
    assert up.returncode == 0
    printed = up.stdout.read()
    assert f"OpenAI-compatible API at {info['api_url']}" in printed.replace("\n", ""), printed
    assert not _port_open(info["bootstrap"]) and not _port_open(info["query_url"].removeprefix("http://"))
    time.sleep(1)
    assert processes_with_env(str(tmp_path)) == [], "Ctrl-C left stage processes behind"

    # The stack is down: results come from the ClickHouse directory itself.
    res = _cli("results", "cli-job", "--json", env=env)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(ln) for ln in res.stdout.splitlines()]
    assert sorted(r["custom_id"] for r in rows) == ["a", "b"] and all(r["answer"] for r in rows)
    assert "dead letter" in res.stderr and "not valid JSON" in res.stderr
    assert _cli("results", "no-such-job", env=env).returncode == 1


@pytest.mark.slow
def test_full_demo_on_ray_serve_uses_all_three_real_models(tmp_path):
    """`switchyard demo` as `make demo` runs it: Ray Serve, SmolLM2, Qwen 0.5B and 1.5B."""
    env = {**os.environ, "SWITCHYARD_DATA_DIR": str(tmp_path / "sy")}
    run = _cli("demo", env=env, timeout=1500)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["answered"] == summary["valid"] == 30 and summary["errors"] == 0
    assert summary["clickhouse"] == {"result_rows": 30, "decision_rows": 30, "request_rows": 30}
    assert set(summary["tiers"]) == {"small", "medium", "large"}


def test_up_flags_left_out_keep_the_environment_settings(monkeypatch):
    """`up` and `demo` flags override the environment only when given."""
    from switchyard import cli

    monkeypatch.setenv("SWITCHYARD_WORKERS__ENGINE", "inprocess")
    monkeypatch.setenv("SWITCHYARD_WORKERS__ALL_TIERS_SMALL", "true")
    kept = cli._settings(None, None)
    assert (kept.workers.engine, kept.workers.all_tiers_small) == ("inprocess", True)
    given = cli._settings(False, "serve")
    assert (given.workers.engine, given.workers.all_tiers_small) == ("serve", False)
