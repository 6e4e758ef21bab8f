"""ClickHouse access: one client factory for chDB (embedded) and a server (production)."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver.client import Client


def schema_statements() -> list[str]:
    sql = files("infra.clickhouse").joinpath("schema.sql").read_text()
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def connect(dsn: str) -> Client:
    """`chdb:///DIR` opens the in-process engine (one process owns DIR); anything else is a
    ClickHouse server DSN understood by clickhouse-connect."""
    if dsn.startswith("chdb://"):
        path = Path(dsn.removeprefix("chdb://"))
        path.mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(interface="chdb", path=str(path))
    return clickhouse_connect.get_client(dsn=dsn)


def apply_schema(client: Client) -> None:
    for statement in schema_statements():
        client.command(statement)
