"""A two-node Ray cluster on one machine (issue 12): a head plus one extra `ray start` node runs
the tier deployments, and a tier worker reaches every one of them.

- Both nodes are started with the venv's `ray` CLI, one logical CPU each, in a unique short
  temp dir (Ray's unix socket paths must stay under ~107 characters) and with a unique marker
  in their environment, which every Ray process of this cluster inherits.
- Two tiers are deployed on it with the project's own `workers.serve.start_serve` (the lean
  settings: both served by the small model), one whole CPU per replica: the two replicas fit the
  cluster only one per node, and the test checks Ray placed them so (Ray's state API, served by
  the head's dashboard).
- A separate process, like a tier worker, builds each tier's engine with `workers.tiers.build_engine`
  (engine "serve", `ray_address` set) and sends it a chat request.
- Teardown runs even when the test fails. `ray stop` would stop every Ray process on the machine
  (other tests' clusters included), so only this cluster's processes are stopped, in `ray stop`'s
  order (raylets, the rest, gcs_server last), and none may be left.

`make test-scale` runs it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.broker import free_port
from tests.conftest import lean_settings, processes_with_env

pytestmark = [pytest.mark.scale,
              # Ray's own pydantic models emit deprecation warnings on import; not ours to fix.
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")  # the venv's CLI
TIERS = ("small", "medium")  # one replica per node
MARKER_ENV = "SWITCHYARD_TEST_RAY_CLUSTER"
STOP_GRACE_S = 15.0  # per group of processes, then SIGKILL (what `ray stop` does)


@dataclass
class Cluster:
    address: str  # the head's GCS address
    temp_dir: Path
    marker: str


def ray_start(env: dict[str, str], *args: str) -> None:
    p = subprocess.run([str(RAY), "start", *args], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=180)
    assert p.returncode == 0, f"ray start {' '.join(args)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"


def cluster_processes(marker: str, temp_dir: Path) -> dict[int, str]:
    """pid -> command line of every live process of this cluster: the marker in its environment
    (every Ray process inherits it) or the temp dir on its command line (raylet, gcs_server)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(temp_dir) in cmdline:
            found[int(entry.name)] = cmdline
    for pid in processes_with_env(marker):
        try:
            found.setdefault(pid, (Path("/proc") / str(pid) / "cmdline").read_bytes()
                             .replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found  # a zombie has an empty environ and cmdline: it is gone


def stop_cluster(marker: str, temp_dir: Path) -> None:
    """`ray stop` for this cluster only: SIGTERM raylets, then everything else but the GCS, then
    the GCS; SIGKILL whatever is still alive after the grace period."""
    def alive(pids):
        return [p for p in pids if p in cluster_processes(marker, temp_dir)]

    groups = [lambda cmd: "raylet/raylet" in cmd,
              lambda cmd: "gcs_server" not in cmd,
              lambda cmd: True]
    for in_group in groups:
        pids = [p for p, cmd in cluster_processes(marker, temp_dir).items() if in_group(cmd)]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in alive(pids):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + STOP_GRACE_S
            while alive(pids) and time.monotonic() < deadline:
                time.sleep(0.2)


@pytest.fixture
def cluster():
    """A Ray head plus one joined node, 1 CPU each, stopped (and checked gone) afterwards."""
    temp_dir = Path(tempfile.mkdtemp(prefix="syrc-", dir="/tmp"))
    marker = f"ray-cluster-{uuid.uuid4().hex}"
    env = {**os.environ, MARKER_ENV: marker, "HF_HUB_OFFLINE": "1",
           "RAY_AUTH_MODE": "token",  # what a local cluster uses; the joining node must match it
           "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH")] if p)}
    env.pop("RAY_ADDRESS", None)
    common = ["--num-cpus", "1", "--temp-dir", str(temp_dir), "--disable-usage-stats",
              "--object-store-memory", str(200 * 1024**2),
              # Defaults that are fixed ports would collide between two nodes (and other clusters)
              # on one machine: the agent's port is chosen by the OS, worker ports are apart.
              "--dashboard-agent-listen-port", "0"]
    try:
        # The dashboard serves Ray's state API (list_actors: which node runs which replica).
        ray_start(env, "--head", "--port", str(free_port()), "--include-dashboard=true",
                  "--dashboard-port", str(free_port()), "--ray-client-server-port", str(free_port()),
                  "--min-worker-port", "23000", "--max-worker-port", "23999", *common)
        address = (temp_dir / "ray_current_cluster").read_text().strip()  # written by `ray start`
        ray_start(env, "--address", address,
                  "--min-worker-port", "24000", "--max-worker-port", "24999", *common)
        yield Cluster(address, temp_dir, marker)
    finally:
        stop_cluster(marker, temp_dir)
        left = cluster_processes(marker, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes of {temp_dir} left after the teardown: {left}"


# A tier worker's side, in its own process: the engine the worker builds, one request per tier.
_TIER_WORKER = r"""
import asyncio, json, sys
from workers.config import WorkerSettings
from workers.tiers import build_engine
from tests.helpers import chat_body

workers = WorkerSettings.model_validate_json(sys.argv[1])
async def main():
    out = {}
    for tier in sys.argv[2:]:
        engine = build_engine(tier, workers)
        r = await engine.chat(chat_body("Name a colour.", 8))
        out[tier] = {"engine": type(engine).__name__, "address": engine.ray_address,
                     "model": r["model"], "content": r["choices"][0]["message"]["content"],
                     "usage": r["usage"]}
    print(json.dumps(out))
asyncio.run(main())
"""


def test_two_node_cluster_serves_the_tiers(cluster, tmp_path, monkeypatch):
    import ray
    from ray.util.state import list_actors

    from workers.serve import _connect, start_serve, stop_serve
    from workers.tiers import engine_kwargs, served_tier

    t0 = time.perf_counter()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # _connect sets it; restored afterwards
    _connect(cluster.address, "token")
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 2, nodes
        assert ray.cluster_resources()["CPU"] == 2

        settings = lean_settings(tmp_path)
        workers = settings.workers
        workers.engine, workers.ray_address, workers.ray_temp_dir = "serve", cluster.address, cluster.temp_dir
        kwargs = {t: engine_kwargs(served_tier(t, workers), workers) for t in TIERS}
        deployed = start_serve(kwargs, ray_temp_dir=cluster.temp_dir, num_cpus_per_replica=1.0,
                               timeout_s=300)
        assert deployed.gcs_address == cluster.address
        assert deployed.apps == {t: f"tier-{t}" for t in TIERS}
        deployed_s = time.perf_counter() - t0

        replicas = {a.class_name: a.node_id for a in list_actors(filters=[("state", "=", "ALIVE")])
                    if a.class_name.startswith("ServeReplica:")}
        assert sorted(replicas) == sorted(f"ServeReplica:tier-{t}:TierModel-{t}" for t in TIERS), replicas
        assert len(set(replicas.values())) == 2, f"both replicas on one node: {replicas}"
        assert set(replicas.values()) == {n["NodeID"] for n in nodes}  # the joined node runs one

        env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
        p = subprocess.run([sys.executable, "-c", _TIER_WORKER, workers.model_dump_json(), *TIERS],
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=240)
        assert p.returncode == 0, p.stderr[-3000:]
        answers = json.loads(p.stdout.strip().splitlines()[-1])
        assert sorted(answers) == sorted(TIERS)
        for tier, a in answers.items():
            assert a["engine"] == "ServeEngine" and a["address"] == cluster.address, a
            assert a["model"] == "smollm2-135m", a
            assert a["content"].strip(), a
            assert a["usage"]["prompt_tokens"] > 0, a
            assert 0 < a["usage"]["completion_tokens"] <= workers.max_tokens_cap, a
        print(f"\ntwo-node cluster: tiers RUNNING after {deployed_s:.1f}s, both answered after "
              f"{time.perf_counter() - t0:.1f}s; replicas {replicas}")
    finally:
        stop_serve(cluster.temp_dir)  # serve.shutdown(), then disconnect this process
    assert not ray.is_initialized()
