"""The sink's read endpoint as a hostile caller tries it, against the real chDB engine: every
statement that once broke it is refused and changes nothing; no token, no answer; one tenant
never reads another's rows."""
import asyncio
import os
import stat

import aiohttp
import pytest

from infra.auth import Keyring
from infra.broker import free_port
from infra.clickhouse import apply_analytics, apply_schema, connect
from infra.clickhouse.sql_guard import UnsafeQuery, guard
from schemas import Result, encode
from streams.query_server import start_query_server
from streams.records import RawRecord
from streams.sink import ClickHouseWriter, to_rows

ATTACKS = {
    "multi-statement DDL": "SELECT 1; DROP TABLE results",
    "DDL": "DROP TABLE results",
    "create": "CREATE TABLE pwned (x Int8) ENGINE = Memory",
    "insert": "INSERT INTO results (request_id) VALUES ('x')",
    "file()": "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "url()": "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')",
    "executable()": "SELECT * FROM executable('id', 'LineAsString', 'x String')",
    "python()": "SELECT * FROM python(keyring)",
    "INTO OUTFILE": "SELECT 1 INTO OUTFILE '{outfile}'",
    "INSERT INTO FUNCTION": "INSERT INTO FUNCTION file('{outfile}', 'CSV', 'x Int8') SELECT 1",
    "own settings": "SELECT 1 SETTINGS readonly = 0",
    "hidden statement": "SELECT ';' AS s; DROP TABLE results",
    "unclosed comment": "SELECT 1 /* ; DROP TABLE results",
    "file() in a subquery": "SELECT count() FROM (SELECT * FROM file('/etc/passwd', 'LineAsString'))",
}


def _result(job: str, tenant: str, custom_id: str) -> Result:
    return Result(request_id=f"{job}:{custom_id}", job_id=job, tenant=tenant, custom_id=custom_id,
                  tier="small", model="m", status="ok",
                  response={"choices": [{"message": {"content": f"secret of {tenant}"}}]},
                  router_version="v1", submitted_at="2026-01-01T00:00:00Z")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    client = connect(f"chdb://{tmp_path_factory.mktemp('ch')}")
    apply_schema(client)
    rows = [to_rows(RawRecord(encode(_result(job, tenant, c)), "results", 0, i))
            for i, (job, tenant, c) in enumerate([("job-a", "acme", "1"), ("job-a", "acme", "2"),
                                                   ("job-b", "globex", "1")])]
    ClickHouseWriter(client).write(rows)
    apply_analytics(client, 60, {})  # the report's views, refreshed once now
    yield client
    client.close()


async def _serve(engine, keyring: Keyring, calls):
    port = free_port()
    runner = await start_query_server(engine, port, asyncio.Lock(), keyring)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            return await calls(http)
    finally:
        await runner.cleanup()


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_the_guard_refuses_each_attack_and_passes_plain_reads():
    for name, sql in ATTACKS.items():
        with pytest.raises(UnsafeQuery):
            guard(sql.format(outfile="/tmp/x.csv"), {"file", "url", "executable", "python"})
    ok = guard("SELECT 'a;b' AS s, count() FROM results FINAL WHERE job_id = {job:String};", {"file"})
    assert ok.endswith("readonly = 1") and "'a;b'" in ok


def test_every_attack_is_refused_over_http_and_changes_nothing(engine, tmp_path):
    keyring = Keyring(tmp_path / "secrets")
    operator = keyring.ensure_operator_token()
    outfile = tmp_path / "written.csv"

    async def calls(http):
        statuses = {}
        for name, sql in ATTACKS.items():
            async with http.post("/v1/sql", json={"sql": sql.format(outfile=outfile)},
                                 headers=_bearer(operator)) as r:
                statuses[name] = (r.status, (await r.json())["error"])
        async with http.post("/v1/sql", json={"sql": "SELECT count() AS n FROM results FINAL"},
                             headers=_bearer(operator)) as r:
            count = (await r.json())["rows"][0]["n"]
        return statuses, count

    statuses, count = asyncio.run(_serve(engine, keyring, calls))
    assert {name: s for name, (s, _) in statuses.items() if s != 400} == {}, statuses
    assert all(reason.startswith("refused") for _, reason in statuses.values())
    assert count == 3, "the results table must be untouched"
    assert not outfile.exists(), "nothing may be written to disk"
    tables = {r[0] for r in engine.query("SHOW TABLES").result_rows}
    assert "pwned" not in tables and "results" in tables
    # The door's readonly applies to its own queries only: the sink can still write.
    ClickHouseWriter(engine).write([to_rows(RawRecord(encode(_result("job-c", "acme", "1")), "results", 0, 9))])
    assert engine.query("SELECT count() FROM results FINAL WHERE job_id = 'job-c'").result_rows == [(1,)]


def test_no_token_wrong_token_or_a_form_post_gets_no_answer(engine, tmp_path):
    keyring = Keyring(tmp_path / "secrets")
    operator = keyring.ensure_operator_token()
    ask = {"parameters": {"job": "job-a"}}

    async def calls(http):
        got = {}
        async with http.post("/v1/questions/job_results", json=ask) as r:
            got["none"] = r.status
        async with http.post("/v1/questions/job_results", json=ask, headers=_bearer("guess")) as r:
            got["wrong"] = r.status
        async with http.post("/v1/questions/job_results", data='{"parameters": {"job": "job-a"}}',
                             headers={**_bearer(operator), "Content-Type": "text/plain"}) as r:
            got["text/plain"] = r.status
        async with http.post("/v1/sql", json={"sql": "SELECT 1"}) as r:
            got["sql, no token"] = r.status
        async with http.post("/v1/questions/job_results", json=ask, headers=_bearer(operator)) as r:
            got["operator"] = r.status
        return got

    got = asyncio.run(_serve(engine, keyring, calls))
    assert got == {"none": 401, "wrong": 401, "text/plain": 415, "sql, no token": 401, "operator": 200}
    mode = stat.S_IMODE(os.stat(keyring.operator_path).st_mode)
    assert mode == 0o600 and stat.S_IMODE(os.stat(keyring.dir).st_mode) == 0o700


def test_a_tenant_reads_its_own_jobs_and_nothing_of_another(engine, tmp_path):
    keyring = Keyring(tmp_path / "secrets")
    operator = keyring.ensure_operator_token()
    acme, globex = keyring.add_tenant("acme"), keyring.add_tenant("globex")

    async def ask(http, key, question, **params):
        async with http.post(f"/v1/questions/{question}", json={"parameters": params}, headers=_bearer(key)) as r:
            body = await r.json()
            return body.get("rows", body)

    async def calls(http):
        got = {
            "acme own": await ask(http, acme, "job_results", job="job-a"),
            "acme other's": await ask(http, acme, "job_results", job="job-b"),
            "acme claims globex": await ask(http, acme, "job_results", job="job-b", tenant="globex"),
            "globex status of acme's": await ask(http, globex, "job_status", job="job-a"),
            "globex report": await ask(http, globex, "outcomes", by="tenant"),
            "operator report": await ask(http, operator, "outcomes", by="tenant"),
        }
        async with http.post("/v1/sql", json={"sql": "SELECT * FROM results"}, headers=_bearer(acme)) as r:
            got["acme sql"] = r.status
        async with http.get("/v1/whoami", headers=_bearer(globex)) as r:
            got["whoami"] = await r.json()
        return got

    got = asyncio.run(_serve(engine, keyring, calls))
    assert sorted(r["custom_id"] for r in got["acme own"]) == ["1", "2"]
    assert got["acme other's"] == [] and got["acme claims globex"] == []
    assert got["globex status of acme's"][0]["requests"] == 0 and got["globex status of acme's"][0]["answered"] == 0
    assert [r["tenant"] for r in got["globex report"]] == ["globex"]
    assert {r["tenant"] for r in got["operator report"]} == {"acme", "globex"}
    assert got["acme sql"] == 403
    assert got["whoami"] == {"tenant": "globex", "operator": False}
    # a revoked key stops working at once
    keyring.revoke_tenant("globex")
    assert asyncio.run(_serve(engine, keyring, lambda http: ask(http, globex, "job_status", job="job-b"))) \
        == {"error": "unauthorized: unknown token"}
