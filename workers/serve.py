"""Ray Serve: one application per tier (``tier-small`` / ``tier-medium`` / ``tier-large``), each a
:class:`TierModelDeployment` wrapping an in-process :class:`XllamacppEngine`.

- ``start_serve(engine_kwargs_by_tier, ...)`` starts a local Ray cluster owned by the calling
  process (keep that process alive: the cluster ends with it), deploys the tiers, waits until
  they are RUNNING and records the cluster address in ``<ray_temp_dir>/switchyard-serve.json``
  (``workers.tiers.serve_tiers`` computes the kwargs from the worker settings).
- ``ServeEngine(tier)`` is an Engine usable from ANY other process: it reads that file (or takes
  ``ray_address``), connects with token auth and calls the tier's handle.
- ``stop_serve()`` shuts it all down.

Why an address file: ``ray.init(address="auto")`` finds *a* running GCS, which is ambiguous as
soon as two Ray clusters share a machine (tests, other stacks). Ray 2.60 enables token auth for
local clusters (token in ~/.ray/auth_token); a client passing an explicit address must run with
``RAY_AUTH_MODE=token`` (verified: without it the connection fails), so the file records the
auth mode too.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Keep Ray on loopback: by default it takes the host's outward-facing address as its node IP
# and every Ray process talks over it. This switch (read when ray is first imported) makes
# Ray use 127.0.0.1 for a single-node cluster; a multi-node production cluster unsets it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from ray import serve  # noqa: E402

from workers.engine import EngineError, XllamacppEngine

log = logging.getLogger(__name__)

ADDRESS_FILE = "switchyard-serve.json"
NAMESPACE = "switchyard"
DEFAULT_NUM_CPUS_PER_REPLICA = 0.3  # 3 tiers (0.9) + controller (0) fit into 2 cores
DEFAULT_MAX_ONGOING_REQUESTS = 64  # Serve's default of 5 is a throughput trap
_PROJECT_ROOT = Path(__file__).resolve().parents[1]


def app_name(tier: str) -> str:
    return f"tier-{tier}"


@serve.deployment(
    max_ongoing_requests=DEFAULT_MAX_ONGOING_REQUESTS,
    ray_actor_options={"num_cpus": DEFAULT_NUM_CPUS_PER_REPLICA},
    logging_config={"enable_access_log": False, "log_level": "WARNING"},
    health_check_period_s=10,
    graceful_shutdown_timeout_s=30,
)
class TierModelDeployment:
    """One tier's model in a Serve replica. ``engine_kw``: XllamacppEngine's kwargs."""

    def __init__(self, engine_kw: dict[str, Any]):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.engine = XllamacppEngine(**engine_kw)

    async def chat(self, body: dict) -> dict:
        return await self.engine.chat(body)

    def check_health(self) -> None:  # Serve calls this every health_check_period_s
        if getattr(self.engine, "_server", None) is None:
            raise RuntimeError("engine closed")

    def info(self) -> dict:
        e = self.engine
        return {"model": e.name, "gguf": str(e.gguf_path), "n_ctx": e.n_ctx,
                "n_parallel": e.n_parallel, "load_seconds": e.load_seconds, "pid": os.getpid()}


@dataclass
class ServeCluster:
    """What ``start_serve`` started; also the JSON content of the address file."""

    gcs_address: str
    auth_mode: str | None
    namespace: str
    apps: dict[str, str]  # tier -> application name
    models: dict[str, str]  # tier -> model name
    temp_dir: str
    pid: int
    start_seconds: float = 0.0
    address_file: str = ""
    extra: dict = field(default_factory=dict)

    def write(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> "ServeCluster":
        return cls(**json.loads(Path(path).read_text()))


def address_file(ray_temp_dir: Path | str) -> Path:
    return Path(ray_temp_dir) / ADDRESS_FILE


def _prepare_env() -> None:
    """Replicas must import ``workers.*``: put the project root on PYTHONPATH for the raylet
    (and so its workers) unless the project is installed. Never download anything."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = str(_PROJECT_ROOT)
    pp = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in pp:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *pp])


def start_serve(engine_kwargs_by_tier: dict[str, dict[str, Any]], *, ray_temp_dir: Path | str,
                ray_num_cpus: float = 2.0,
                num_cpus_per_replica: float = DEFAULT_NUM_CPUS_PER_REPLICA,
                max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS,
                timeout_s: float = 600.0) -> ServeCluster:
    """Start Ray + Serve in this process and deploy one app per tier; block until RUNNING.

    ``engine_kwargs_by_tier``: XllamacppEngine's kwargs per tier, models already on disk. Raises
    RuntimeError when an app fails to deploy or is not RUNNING within ``timeout_s`` (a replica
    that does not fit the CPU budget stays DEPLOYING: the message says so)."""
    import ray

    t0 = time.perf_counter()
    kwargs = engine_kwargs_by_tier
    tiers = list(kwargs)
    temp_dir = Path(ray_temp_dir).resolve()
    temp_dir.mkdir(parents=True, exist_ok=True)
    _prepare_env()
    if not ray.is_initialized():
        ray.init(
            _temp_dir=str(temp_dir),
            num_cpus=ray_num_cpus,
            include_dashboard=False,
            namespace=NAMESPACE,
            log_to_driver=False,
            configure_logging=True,
            logging_level=logging.WARNING,
        )
    gcs_address = ray.get_runtime_context().gcs_address
    need = num_cpus_per_replica * len(tiers)
    total = ray.cluster_resources().get("CPU", 0.0)
    if need > total:
        raise RuntimeError(f"{len(tiers)} tiers × {num_cpus_per_replica} CPU = {need} CPU exceed the "
                           f"cluster's {total} CPU (ray_num_cpus); Serve would hang in "
                           f"DEPLOYING")
    serve.start(
        proxy_location="Disabled",  # handles only; no HTTP port to collide with
        logging_config={"enable_access_log": False, "log_level": "WARNING"},
    )
    targets = []
    for t in tiers:
        dep = TierModelDeployment.options(
            name=f"TierModel-{t}",
            max_ongoing_requests=max_ongoing_requests,
            ray_actor_options={"num_cpus": num_cpus_per_replica},
        )
        targets.append(serve.RunTarget(target=dep.bind(kwargs[t]), name=app_name(t), route_prefix=None))
    # Deploy all tiers at once (models load in parallel), then wait for every one.
    serve.run_many(targets, wait_for_applications_running=False)
    wait_running([app_name(t) for t in tiers], timeout_s=max(1.0, timeout_s - (time.perf_counter() - t0)))

    cluster = ServeCluster(
        gcs_address=gcs_address,
        auth_mode=os.environ.get("RAY_AUTH_MODE"),  # ray.init sets "token" when it enabled auth
        namespace=NAMESPACE,
        apps={t: app_name(t) for t in tiers},
        models={t: kwargs[t]["model_name"] for t in tiers},
        temp_dir=str(temp_dir),
        pid=os.getpid(),
        start_seconds=round(time.perf_counter() - t0, 3),
    )
    path = address_file(temp_dir)
    cluster.address_file = str(path)
    cluster.write(path)
    log.info("Serve up in %.1fs at %s: %s", cluster.start_seconds, gcs_address, cluster.apps)
    return cluster


def wait_running(apps: Sequence[str], timeout_s: float = 600.0, poll_s: float = 0.25) -> None:
    deadline = time.monotonic() + timeout_s
    last: dict[str, str] = {}
    while True:
        status = serve.status().applications
        pending = []
        for name in apps:
            st = status.get(name)
            s = str(st.status.value if st else "NOT_STARTED")
            last[name] = f"{s} {st.message if st and st.message else ''}".strip()
            if s == "DEPLOY_FAILED" or s == "UNHEALTHY":
                raise RuntimeError(f"Serve app {name} {s}: {st.message}")
            if s != "RUNNING":
                pending.append(name)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Serve apps not RUNNING after {timeout_s:.0f}s: "
                               + "; ".join(f"{n}: {last[n]}" for n in pending))
        time.sleep(poll_s)


def stop_serve(ray_temp_dir: Path | str | None = None) -> None:
    """Shut Serve and this process's Ray cluster down; remove the address file."""
    import ray

    if ray.is_initialized():
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    if ray_temp_dir is not None:
        address_file(ray_temp_dir).unlink(missing_ok=True)


# --------------------------------------------------------------------------- client side


def _connect(ray_address: str, auth_mode: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    mode = auth_mode
    if mode is None and ray_address != "auto" and "RAY_AUTH_MODE" not in os.environ \
            and (Path.home() / ".ray" / "auth_token").exists():
        mode = "token"  # Ray 2.60 local clusters use token auth; an explicit address needs it
    if mode and os.environ.get("RAY_AUTH_MODE") != mode:
        os.environ["RAY_AUTH_MODE"] = mode
        # Ray read its config when first imported: refresh it (what ray.init itself does when it
        # enables token auth) so this process really uses the new mode.
        from ray._raylet import Config

        Config.initialize("")
    ray.init(address=ray_address, namespace=NAMESPACE, log_to_driver=False,
             logging_level=logging.WARNING)


class ServeEngine:
    """Engine backed by the ``tier-<tier>`` Serve app of a running cluster.

    Address: ``ray_address`` if given, else ``$RAY_ADDRESS``, else the cluster recorded in
    ``address_file`` (written by ``start_serve``), else "auto". The model name is the one the
    cluster recorded, else ``name``. Connects this process to Ray on construction (once)."""

    def __init__(self, tier: str, *, name: str | None = None, ray_address: str | None = None,
                 address_file: Path | None = None, timeout_s: float | None = 600.0):
        self.tier = tier
        self.timeout_s = timeout_s
        info: ServeCluster | None = None
        if address_file is not None and Path(address_file).exists():
            info = ServeCluster.read(address_file)
            if ray_address and info.gcs_address != ray_address:
                info = None  # the file describes another cluster
        address = ray_address or os.environ.get("RAY_ADDRESS") or (info.gcs_address if info else "auto")
        self.ray_address = address
        self.name = (info.models.get(tier) if info else None) or name or app_name(tier)
        try:
            _connect(address, info.auth_mode if info else None)
        except ConnectionError as e:
            raise EngineError(f"no Ray cluster at {address} (is `switchyard up` running?): {e}",
                              status=503, type="unavailable") from e
        self._handle = serve.get_app_handle(app_name(tier))

    async def chat(self, body: dict) -> dict:
        import asyncio

        from ray.exceptions import RayError, RayTaskError

        async def call() -> dict:
            return await self._handle.chat.remote(body)

        try:
            return await asyncio.wait_for(call(), self.timeout_s)  # cancels the request on timeout
        except EngineError as e:  # Ray re-raises the replica's EngineError as a subclass of it
            raise _clean(e) from None
        except RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, EngineError):
                raise _clean(cause) from None
            raise EngineError(f"tier {self.tier} failed: {e}", status=500) from e
        except (RayError, TimeoutError) as e:
            raise EngineError(f"tier {self.tier} unavailable: {type(e).__name__}: {e}", status=503,
                              type="unavailable") from e

    def __repr__(self) -> str:
        return f"ServeEngine({self.tier!r}, {self.name!r}, {self.ray_address})"



def _clean(e: EngineError) -> EngineError:
    """A plain EngineError (Ray's wrapper class carries the remote traceback in str())."""
    msg = e.args[0] if e.args else str(e)
    return EngineError(str(msg), status=e.status, type=e.type, details=e.details)
