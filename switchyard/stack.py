"""The local stack: broker, topics, Ray Serve, router stream, tier workers and sink, supervised.

Every stage runs as its own process (`switchyard stage ...`), so any one can be killed and
restarted mid-job; the broker is the exception: it keeps everything in memory, so losing it
means restarting the whole stack (see docs/architecture.md), then `switchyard replay JOB`.

Lifetime: every child (broker, Ray Serve, stages) gets a parent-death signal
(infra.lifetime.die_with_parent), so none outlives a stack killed with SIGKILL; `stop()` stops
them in order, each draining: router and workers, then the sink, then Ray Serve and the broker.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from infra.auth import Keyring
from infra.broker import create_topics_sync, free_port, start_broker
from infra.lifetime import STACK_ID_ENV, die_with_parent, reaper_command, sweep
from schemas.common import TIERS
from switchyard.settings import SETTINGS_FILE_ENV, Settings

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
# Stopped first, together: they drain their in-flight batch (the workers need Ray Serve and the
# broker for that). Then the sink, so it stores what they produced while draining.
PRODUCERS_FIRST = ("api", "router", "retrainer", *(f"worker-{t}" for t in TIERS))
SINK_SETTLE_SECONDS = 2.0  # the sink's poll + flush interval, so the drained results get stored


class StackError(RuntimeError):
    pass


@dataclass
class Stage:
    name: str
    args: list[str]
    proc: subprocess.Popen | None = None
    restarts: int = 0


@dataclass
class StackInfo:
    """What other processes (the CLI, tests) need to reach a running stack."""

    bootstrap: str
    query_url: str
    pid: int
    ray_address: str | None = None
    pid_started: int | None = None  # the pid's start time (/proc), so a reused pid is not a stack
    api_url: str | None = None  # the OpenAI-compatible API's base URL
    metrics_urls: dict[str, str] = field(default_factory=dict)  # stage -> its Prometheus endpoint

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__))

    @classmethod
    def load(cls, path: Path) -> StackInfo | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def info_path(settings: Settings) -> Path:
    return settings.data_dir / "stack.json"


def running_stack(settings: Settings) -> StackInfo | None:
    """The stack whose stack.json is in the data dir, if its process still runs."""
    info = StackInfo.load(info_path(settings))
    if info is None or not _pid_alive(info.pid):
        return None
    if info.pid_started is not None and info.pid_started != _start_ticks(info.pid):
        return None  # the pid was reused by another process
    return info


def clear_stale(settings: Settings) -> str | None:
    """Remove a stack.json left by a stack that died without stopping; say so in one line."""
    path = info_path(settings)
    info = StackInfo.load(path)
    if info is None:
        if path.exists():
            path.unlink(missing_ok=True)
            return f"removed an unreadable {path}"
        return None
    if running_stack(settings) is not None:
        return None
    path.unlink(missing_ok=True)
    return f"cleared a stale {path}: its stack (pid {info.pid}, broker {info.bootstrap}) is gone"


def run_dir(settings: Settings) -> Path:
    return settings.data_dir / "run"


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str] = field(default_factory=dict)
    stages: dict[str, Stage] = field(default_factory=dict)
    broker: subprocess.Popen | None = None
    serve: subprocess.Popen | None = None
    info: StackInfo | None = None
    stack_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # in every child's environment
    reaper: subprocess.Popen | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 600) -> StackInfo:
        """Start everything. `self.settings` becomes the stack's runtime settings (broker address,
        query port, Ray address), a copy: the caller's Settings are left as they were."""
        running = running_stack(self.settings)
        if running is not None:
            raise StackError(f"a stack is already running on {self.settings.data_dir} (pid {running.pid}, "
                             f"broker {running.bootstrap}); stop it or use another SWITCHYARD_DATA_DIR")
        stale = clear_stale(self.settings)
        if stale:
            log.warning("%s", stale)
        s = self.settings = self.settings.model_copy(
            deep=True, update={"data_dir": self.settings.data_dir.resolve(), "query_port": free_port()})
        if s.api.enabled and s.api.port == 0:  # chosen once, so a restarted API keeps its address
            s.api = s.api.model_copy(update={"port": free_port()})
        s.metrics_ports = {name: free_port() for name in (
            "router", "sink", *(f"worker-{t}" for t in TIERS),
            *(["retrainer"] if s.retrain.enabled else []), *(["api"] if s.api.enabled else []))}
        s.data_dir.mkdir(parents=True, exist_ok=True)
        Keyring(s.secrets_dir).ensure_operator_token()  # before the stages that check it start
        logs = s.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        rd = run_dir(s)
        rd.mkdir(exist_ok=True)
        for f in rd.glob("*"):
            f.unlink()
        # Sweeps what the parent-death signal cannot reach (Ray's workers) if this process dies.
        self.reaper = subprocess.Popen(reaper_command(self.stack_id), start_new_session=True,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.broker, bootstrap = start_broker(log_path=logs / "broker.log", preexec_fn=die_with_parent())
        create_topics_sync(bootstrap, s.kafka.topic_prefix, s.kafka.partitions)
        s.kafka = s.kafka.model_copy(update={"bootstrap": bootstrap})
        frozen = s.data_dir / "settings.json"
        frozen.write_text(s.model_dump_json(indent=2))
        self.env = {**os.environ, SETTINGS_FILE_ENV: str(frozen), STACK_ID_ENV: self.stack_id,
                    "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.info = StackInfo(bootstrap=bootstrap, query_url=f"http://127.0.0.1:{s.query_port}",
                              pid=os.getpid(), pid_started=_start_ticks(os.getpid()),
                              api_url=f"http://{s.api.host}:{s.api.port}/v1" if s.api.enabled else None,
                              metrics_urls={n: f"http://127.0.0.1:{p}/metrics" for n, p in s.metrics_ports.items()})
        self._restore_router(timeout)
        if s.workers.engine == "serve":
            self.serve = self._spawn(["serve"], "serve")
            self.info.ray_address = self._wait_for_file(rd / "serve.ready", timeout, self.serve, "serve")
            s.workers = s.workers.model_copy(update={"ray_address": self.info.ray_address})
            frozen.write_text(s.model_dump_json(indent=2))
        self.info.save(info_path(s))
        self.stages = {
            "sink": Stage("sink", ["sink"]),
            "router": Stage("router", ["router"]),
            **{f"worker-{t}": Stage(f"worker-{t}", ["worker", "--tier", t]) for t in TIERS},
        }
        if s.retrain.enabled:
            self.stages["retrainer"] = Stage("retrainer", ["retrainer"])
        if s.api.enabled:
            self.stages["api"] = Stage("api", ["api"])
        for stage in self.stages.values():
            self._start_stage(stage)
        for stage in self.stages.values():
            self._wait_for_file(rd / f"{stage.name}.ready", timeout, stage.proc, stage.name)
        return self.info

    def _restore_router(self, timeout: float) -> None:
        """A fresh broker has no `router.models`: put the newest published router version back
        from ClickHouse before the sink owns the engine (one process per chDB directory, so in a
        short process of its own). A fresh data dir has nothing to restore."""
        s = self.settings
        if s.clickhouse.dsn is None and not (s.data_dir / "clickhouse").exists():
            return
        proc = self._spawn(["restore-router"], "restore-router")
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            code = proc.wait()
        if code != 0:
            log.warning("could not restore the published router version; see logs/restore-router.log")

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen:
        log_file = open(self.settings.data_dir / "logs" / f"{name}.log", "ab")
        return subprocess.Popen([sys.executable, "-m", "switchyard.cli", "stage", *args],
                                env=self.env, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=die_with_parent())

    def _start_stage(self, stage: Stage) -> None:
        (run_dir(self.settings) / f"{stage.name}.ready").unlink(missing_ok=True)
        stage.proc = self._spawn(stage.args, stage.name)

    def _wait_for_file(self, path: Path, timeout: float, proc: subprocess.Popen | None, name: str) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                return path.read_text().strip()
            if proc is not None and proc.poll() is not None:
                tail = _tail(self.settings.data_dir / "logs" / f"{name}.log")
                raise StackError(f"stage {name} exited with code {proc.returncode}:\n{tail}")
            time.sleep(0.1)
        raise StackError(f"stage {name} not ready after {timeout:.0f}s; see {self.settings.data_dir}/logs/{name}.log")

    def restart_stage(self, name: str, wait: bool = True, timeout: float = 300) -> None:
        """Kill a stage hard (as a crash would) and start it again; by default wait until the
        new process is ready."""
        stage = self.stages[name]
        if stage.proc and stage.proc.poll() is None:
            _kill_group(stage.proc, signal.SIGKILL)
            stage.proc.wait()
        stage.restarts += 1
        self._start_stage(stage)
        if wait:
            self.wait_ready(name, timeout)

    def wait_ready(self, name: str, timeout: float = 300) -> None:
        stage = self.stages[name]
        self._wait_for_file(run_dir(self.settings) / f"{name}.ready", timeout, stage.proc, name)

    def check(self) -> None:
        """Restart crashed stages; a dead broker or Ray means the stack is gone."""
        if self.broker and self.broker.poll() is not None:
            raise StackError("the broker exited; its topics were in memory, so the stack must restart")
        if self.serve and self.serve.poll() is not None:
            raise StackError(f"Ray Serve exited with code {self.serve.returncode}")
        for stage in self.stages.values():
            if stage.proc and stage.proc.poll() is not None:
                if stage.restarts >= MAX_RESTARTS:
                    raise StackError(f"stage {stage.name} keeps crashing; see logs/{stage.name}.log")
                log.warning("stage %s exited (%s); restarting", stage.name, stage.proc.returncode)
                stage.restarts += 1
                self._start_stage(stage)

    def supervise(self, poll_seconds: float = 1.0) -> None:
        while True:
            self.check()
            time.sleep(poll_seconds)

    def stop(self, grace: float = 20.0) -> None:
        """Stop every process, in order, each given `grace` seconds to drain before SIGKILL:
        router, retrainer and tier workers; the sink; Ray Serve; the broker."""
        first = [st.proc for name, st in self.stages.items() if name in PRODUCERS_FIRST]
        rest = [st.proc for name, st in self.stages.items() if name not in PRODUCERS_FIRST]
        if _stop_all(first, grace) and any(p.poll() is None for p in rest if p):
            time.sleep(SINK_SETTLE_SECONDS)
        _stop_all(rest, grace)
        _stop_all([self.serve], grace)
        _stop_all([self.broker], grace)
        if sweep(self.stack_id):  # e.g. Ray workers of a Serve stage that was killed
            log.warning("killed processes of the stack that outlived their stage")
        if self.reaper is not None and self.reaper.poll() is None:
            self.reaper.kill()
            self.reaper.wait()
        if self.info is not None:  # only the stack that wrote the info file removes it
            info_path(self.settings).unlink(missing_ok=True)

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_all(procs: list[subprocess.Popen | None], grace: float) -> bool:
    """SIGTERM each process (not its group: Ray Serve shuts its own Ray processes down), wait up
    to `grace`, SIGKILL what is left; then SIGKILL whatever remains in their process groups.
    Returns whether any of them was running."""
    procs = [p for p in procs if p is not None]
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for proc in running:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("pid %s did not stop within %.0fs; killing it", proc.pid, grace)
            proc.kill()
            proc.wait()
    for proc in procs:
        _kill_group(proc, signal.SIGKILL)
    return bool(running)


def _start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def mark_ready(settings: Settings, name: str, content: str = "ok") -> None:
    path = run_dir(settings) / f"{name}.ready"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(content)
    tmp.replace(path)
