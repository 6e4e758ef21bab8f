"""Broker loss is recoverable: `submit --wait` says so in one line and keeps what it has, the
stack comes back, `switchyard replay JOB` re-publishes exactly the unanswered requests, and every
table stays one row per request."""
import json
import os
import signal
import subprocess
import sys

from infra.clickhouse import connect
from switchyard.replay import ReplayReport
from switchyard.stack import Stack
from switchyard.warehouse import Warehouse
from tests.conftest import lean_settings, request_line
from tests.test_lifecycle import _wait_until

JOB = "replay-job"


def _cli(*args, env, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "switchyard.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _counts(settings) -> dict:
    wh = Warehouse.open(settings)
    try:
        return wh.ask("job_status", job=JOB)[0]
    finally:
        wh.close()


def _write(path, ids):
    path.write_bytes(b"\n".join(request_line(i, f"Say {i}.") for i in ids) + b"\n")
    return path


def test_broker_loss_then_replay_answers_the_rest_once(tmp_path):
    settings = lean_settings(tmp_path / "sy")
    settings.retrain.enabled = False
    env = {**os.environ, "SWITCHYARD_DATA_DIR": str(settings.data_dir)}
    first = Stack(settings)
    first.start(timeout=300)
    try:
        # three answered, and stored before submit returns
        done = _cli("submit", str(_write(tmp_path / "a.jsonl", ["a1", "a2", "a3"])), "--job-id", JOB,
                    "--wait", "--json", env=env)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert (summary["answered"], summary["stored"]) == (3, 3)

        # no tier worker answers any more: b1 and b2 are accepted and stored, never answered
        for name in [n for n in first.stages if n.startswith("worker-")]:
            os.killpg(first.stages[name].proc.pid, signal.SIGKILL)
            first.stages[name].proc.wait()
        out = tmp_path / "out.jsonl"
        waiting = subprocess.Popen([sys.executable, "-m", "switchyard.cli", "submit",
                                    str(_write(tmp_path / "b.jsonl", ["a1", "b1", "b2"])), "--job-id", JOB,
                                    "--wait", "--out", str(out)], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        _wait_until(lambda: _counts(first.settings)["routed"] == 5, 120, "b1 and b2 were not routed")
        first.broker.kill()  # the embedded broker's topics were in memory: gone
        stdout, stderr = waiting.communicate(timeout=120)
    finally:
        first.stop(grace=5)  # the router waits for the dead broker: no drain to wait for

    assert waiting.returncode == 1, stderr
    assert not any(noise in stderr for noise in ("Traceback", "NodeNotReady", "CancelledError")), stderr
    line = " ".join(stderr.split())
    assert f"lost the broker while waiting for job {JOB}; 1 of 3 answered; wrote what it has to {out}" in line
    assert f"run `switchyard replay {JOB}`" in line
    assert [json.loads(x)["custom_id"] for x in out.read_text().splitlines()] == ["a1"]

    second = Stack(settings)
    second.start(timeout=300)
    try:
        dry = _cli("replay", JOB, "--dry-run", "--json", env=env)
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout) == {"job_id": JOB, "replayed": 2, "skipped_answered": 3, "dry_run": True}
        again = _cli("replay", JOB, "--json", env=env)
        assert json.loads(again.stdout)["replayed"] == 2, again.stderr
        _wait_until(lambda: _counts(second.settings)["answered"] == 5, 180, "replayed requests not answered")
        assert "replayed 0, skipped 5 answered" in " ".join(_cli("replay", JOB, env=env).stderr.split())
        assert _cli("replay", "no-such-job", env=env).returncode == 1
    finally:
        second.stop()

    client = connect(settings.clickhouse_dsn)  # the stack is down: the directory itself
    try:
        for table in ("requests", "decisions", "results"):
            client.command(f"OPTIMIZE TABLE {table} FINAL")
            rows, distinct = client.query(f"SELECT count(), uniqExact(request_id) FROM {table} "
                                          f"WHERE job_id = '{JOB}'").result_rows[0]
            assert rows == distinct == 5, (table, rows, distinct)
    finally:
        client.close()


def test_replay_report_line():
    assert ReplayReport("j", 2, 3).line() == "job j: replayed 2, skipped 3 answered"
