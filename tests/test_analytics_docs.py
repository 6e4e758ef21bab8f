"""Every SQL example in docs/analytics.md runs, as written, on chDB over synthetic traffic, and
through the operator's read-only door (the guard lets each one pass)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from infra.clickhouse import apply_analytics, apply_schema, connect
from infra.clickhouse.sql_guard import guard
from switchyard.bench_analytics import fill_synthetic

DOC = Path(__file__).resolve().parent.parent / "docs" / "analytics.md"
EXAMPLES = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    c = connect(f"chdb://{tmp_path_factory.mktemp('ch')}")
    apply_schema(c)
    fill_synthetic(c, 20000)
    apply_analytics(c, 3600, {"large": ("m", 3.0, 15.0)},
                    {"v1": [1 / 20] * 20, "v2": [0.5, 0.5]})  # the synthetic decisions' router versions
    yield c
    c.close()


def test_the_doc_has_examples():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("sql", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_each_example_runs_and_returns_rows(client, sql):
    table_functions = {r[0] for r in client.query("SELECT name FROM system.table_functions").result_rows}
    assert client.query(sql).result_rows, sql
    assert client.query(guard(sql, table_functions)).result_rows
