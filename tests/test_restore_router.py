"""A broker restart forgets `router.models`; ClickHouse does not. The next stack on the same data
dir starts its router stream on the newest published version, not on the shipped default."""
import asyncio
import base64
import time

from router.artifact import DCROUTER_DIR, load_router, to_bytes
from schemas import RouterVersion
from switchyard.experiments import wait_for_swap
from switchyard.retrain import publish_version
from switchyard.stack import Stack, run_dir
from switchyard.warehouse import Warehouse

from tests.conftest import lean_settings


def test_the_published_version_survives_a_new_broker(tmp_path):
    settings = lean_settings(tmp_path / "sy")
    settings.retrain.enabled = False
    published = load_router(DCROUTER_DIR)
    with Stack(settings) as first:
        shipped = (run_dir(first.settings) / "router.ready").read_text()
        assert shipped != published.version
        version = RouterVersion(version=published.version, verdict="published", reason="restore test",
                                artifact_base64=base64.b64encode(to_bytes(published)).decode())
        asyncio.run(publish_version(first.settings.kafka, version))
        wait_for_swap(first, published.version)
        deadline = time.monotonic() + 60
        while not Warehouse.open(first.settings).rows("SELECT version FROM router_versions FINAL"):
            assert time.monotonic() < deadline, "the sink did not store the version"
            time.sleep(0.5)
    with Stack(settings) as second:  # a new broker: router.models starts empty
        assert (run_dir(second.settings) / "router.ready").read_text() == published.version
