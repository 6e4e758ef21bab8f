"""ClickHouse access: one client factory for chDB (embedded) and a server (production)."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver.client import Client


def schema_statements(name: str = "schema.sql") -> list[str]:
    sql = files("infra.clickhouse").joinpath(name).read_text()
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


ANALYTICS_VIEWS = ("analytics.outcomes_hourly", "analytics.dead_letters_hourly", "analytics.cluster_labels")


def apply_analytics(client: Client, refresh_seconds: int, tier_prices: dict[str, tuple[str, float, float]],
                    training_mixes: dict[str, list[float]] | None = None) -> None:
    """The analytics database and its refreshable views (analytics.sql), the served tiers'
    prices {tier: (model, $/Mtok in, $/Mtok out)} the views price "cost at large" with, and the
    training mixes {router version: share per cluster} of routers that are not on `router.models`
    (the shipped or configured one), which analytics.mix_drift compares live traffic with."""
    if refresh_seconds < 1:
        raise ValueError("analytics_refresh_seconds must be at least 1")
    for statement in schema_statements("analytics.sql"):
        client.command(statement.replace("{refresh_seconds}", str(int(refresh_seconds))))
    if tier_prices:
        client.insert("analytics.tier_prices", [[t, m, p_in, p_out] for t, (m, p_in, p_out) in tier_prices.items()],
                      column_names=["tier", "model", "price_per_mtok_in", "price_per_mtok_out"])
    mixes = [[v, [float(x) for x in shares]] for v, shares in (training_mixes or {}).items() if v and shares]
    if mixes:
        client.insert("analytics.router_training_mix", mixes, column_names=["router_version", "shares"])
    refresh_analytics(client)


def refresh_analytics(client: Client) -> None:
    """Recompute every analytics view now and wait for it (the schedule does it every period)."""
    for view in ANALYTICS_VIEWS:
        client.command(f"SYSTEM REFRESH VIEW {view}")
    for view in ANALYTICS_VIEWS:
        client.command(f"SYSTEM WAIT VIEW {view}")


def analytics_as_of(client: Client):
    """When the analytics views last finished a refresh (the oldest of them; None: never)."""
    rows = client.query("SELECT min(last_success_time) FROM system.view_refreshes WHERE database = 'analytics'").result_rows
    return rows[0][0] if rows else None
