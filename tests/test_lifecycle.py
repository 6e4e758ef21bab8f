"""`switchyard up` as systemd, Docker or a crash ends it: SIGTERM stops every process it started
and removes stack.json; `kill -9` of `up` takes every child with it; the next start clears the
stale stack.json in one line."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from switchyard.stack import PRODUCERS_FIRST


def _processes_mentioning(marker: str) -> dict[int, str]:
    """pid -> command line of every process whose environment holds the marker (so: started by
    the `up` under test, directly or not)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
    return found


def _wait_until(predicate, seconds: float, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(what() if callable(what) else what)


def _up(env: dict, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "switchyard.cli", "up", *flags], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_up(up: subprocess.Popen, data_dir: Path, stages: list[str], seconds: float = 300) -> None:
    def ready() -> bool:
        assert up.poll() is None, f"up exited early:\n{up.stdout.read()}"
        try:
            info = json.loads((data_dir / "stack.json").read_text())
        except (OSError, ValueError):
            return False
        # stack.json is written after the run dir is cleared, so these markers are this stack's
        return info["pid"] == up.pid and all((data_dir / "run" / f"{s}.ready").exists() for s in stages)

    _wait_until(ready, seconds, "the stack did not come up")


LEAN_STAGES = ["sink", "router", "worker-small", "worker-medium", "worker-large", "api"]


def test_kill_9_takes_every_child_along_and_sigterm_stops_everything(tmp_path):
    data_dir = tmp_path / "sy"
    marker = f"lifecycle-{tmp_path.name}"
    env = {**os.environ, "SWITCHYARD_DATA_DIR": str(data_dir), "SWITCHYARD_WORKERS__MAX_TOKENS_CAP": "8",
           "SWITCHYARD_RETRAIN__ENABLED": "false", "SWITCHYARD_LIFECYCLE_MARKER": marker}
    flags = ("--all-tiers-small", "--engine", "inprocess")

    try:
        _kill_9_then_sigterm(env, flags, data_dir, marker)
    finally:  # a failed assertion must not leave a stack running for the rest of the suite
        for pid in _processes_mentioning(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _kill_9_then_sigterm(env: dict, flags: tuple, data_dir: Path, marker: str) -> None:
    crashed = _up(env, *flags)
    _wait_up(crashed, data_dir, LEAN_STAGES)
    children = {p: c for p, c in _processes_mentioning(marker).items() if p != crashed.pid}
    assert any("tansu" in c for c in children.values()), children  # the broker
    assert sum("switchyard.cli stage" in c for c in children.values()) == len(LEAN_STAGES), children
    crashed.kill()
    crashed.wait()
    _wait_until(lambda: not _processes_mentioning(marker), 30,
                lambda: f"children outlived a killed `up`: {_processes_mentioning(marker)}")
    assert json.loads((data_dir / "stack.json").read_text())["pid"] == crashed.pid  # left behind

    up = _up(env, *flags)
    _wait_up(up, data_dir, LEAN_STAGES)
    assert len(_processes_mentioning(marker)) == len(children) + 1
    up.send_signal(signal.SIGTERM)
    output, _ = up.communicate(timeout=120)
    assert up.returncode == 0, output
    output = " ".join(output.split())  # the console wraps lines
    assert f"cleared a stale {data_dir / 'stack.json'}" in output and f"pid {crashed.pid}" in output
    assert "stopping" in output
    assert not (data_dir / "stack.json").exists()
    assert _processes_mentioning(marker) == {}, "SIGTERM to `up` left processes behind"


def test_stop_order_puts_the_producers_before_the_sink():
    assert "sink" not in PRODUCERS_FIRST and {"router", "worker-small"} <= set(PRODUCERS_FIRST)


def test_a_stale_stack_json_is_cleared_and_a_live_one_kept(tmp_path):
    from switchyard.settings import Settings
    from switchyard.stack import StackInfo, _start_ticks, clear_stale, info_path, running_stack

    settings = Settings(data_dir=tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    StackInfo(bootstrap="127.0.0.1:1", query_url="http://127.0.0.1:2", pid=dead.pid).save(info_path(settings))
    line = clear_stale(settings)
    assert line is not None and "stale" in line and str(dead.pid) in line
    assert not info_path(settings).exists() and clear_stale(settings) is None

    live = StackInfo(bootstrap="b", query_url="q", pid=os.getpid(), pid_started=_start_ticks(os.getpid()))
    live.save(info_path(settings))
    assert clear_stale(settings) is None and running_stack(settings) == live
    reused = StackInfo(bootstrap="b", query_url="q", pid=os.getpid(), pid_started=1)  # another process
    reused.save(info_path(settings))
    assert running_stack(settings) is None and "stale" in clear_stale(settings)


@pytest.mark.slow
def test_kill_9_of_up_on_ray_serve_takes_ray_along(tmp_path):
    """The Ray Serve stage starts Ray's GCS, raylet and workers: they die with it."""
    data_dir = tmp_path / "sy"
    marker = f"lifecycle-ray-{tmp_path.name}"
    env = {**os.environ, "SWITCHYARD_DATA_DIR": str(data_dir), "SWITCHYARD_WORKERS__MAX_TOKENS_CAP": "8",
           "SWITCHYARD_RETRAIN__ENABLED": "false", "SWITCHYARD_LIFECYCLE_MARKER": marker,
           # Ray's socket paths must stay under 108 bytes: pytest's tmp_path is too deep
           "SWITCHYARD_WORKERS__RAY_TEMP_DIR": tempfile.mkdtemp(prefix="syray-", dir="/tmp")}
    up = _up(env, "--all-tiers-small", "--engine", "serve")
    _wait_up(up, data_dir, ["serve", *LEAN_STAGES], seconds=900)
    before = _processes_mentioning(marker)
    assert any("raylet" in c or "gcs_server" in c for c in before.values())
    up.kill()
    up.wait()
    _wait_until(lambda: not _processes_mentioning(marker), 60,
                lambda: f"processes outlived a killed `up`: {_states(_processes_mentioning(marker))}")


def _states(procs: dict[int, str]) -> str:
    lines = []
    for pid, cmd in procs.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            stat = ["gone", "?"]
        lines.append(f"{pid} state={stat[0]} ppid={stat[1]} {cmd[:70]}")
    return "\n".join(lines)
