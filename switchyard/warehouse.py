"""Reading routing outcomes back out of ClickHouse, as the operator or as one tenant.

The embedded engine (chDB) lets one process own its directory; while the stack runs, that is
the sink, which serves authenticated reads on a loopback port (streams.query_server).
`Warehouse.open` picks the sink's endpoint when the stack is up and the engine directly
otherwise; a ClickHouse server DSN is always queried directly. Everyone asks named questions
(`ask`, scoped to the caller's tenant); only the operator runs SQL (`rows`), through the
read-only door when it goes through the sink.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from infra.auth import AuthError, Keyring
from infra.clickhouse import analytics_as_of, connect, refresh_analytics
from infra.clickhouse.questions import QuestionError, bind
from switchyard.settings import Settings


class WarehouseError(RuntimeError):
    pass


@dataclass
class Warehouse:
    client: Any = None  # the engine itself
    url: str | None = None  # or the sink's endpoint
    token: str | None = None  # the bearer token sent to the endpoint
    tenant: str | None = None  # with a client: the tenant the caller's key names (None: operator)

    @classmethod
    def open(cls, settings: Settings) -> Warehouse:
        from switchyard.stack import StackInfo, info_path

        keyring = Keyring(settings.secrets_dir)
        info = StackInfo.load(info_path(settings))
        if settings.clickhouse.dsn is None and info is not None and _alive(info.query_url):
            token = settings.api_key or keyring.operator_token()
            if token is None:
                raise WarehouseError("no credentials: set SWITCHYARD_API_KEY to a tenant's key, or run as "
                                     f"the stack's operator (who can read {keyring.operator_path})")
            return cls(url=info.query_url, token=token)
        tenant = None
        if settings.api_key:
            try:
                tenant = keyring.caller(settings.api_key).tenant
            except AuthError as exc:
                raise WarehouseError(f"SWITCHYARD_API_KEY: {exc}") from None
        return cls(client=connect(settings.clickhouse_dsn), tenant=tenant)

    def ask(self, question: str, **params: str) -> list[dict[str, Any]]:
        """A named question (infra.clickhouse.questions), answered for the caller's tenant only."""
        if self.client is None:
            return self._post(f"/v1/questions/{question}", {"parameters": params})
        try:
            sql, bound = bind(question, params, self.tenant)
        except QuestionError as exc:
            raise WarehouseError(str(exc)) from None
        return self._query(sql, bound)

    def rows(self, sql: str, parameters: dict | None = None) -> list[dict[str, Any]]:
        """The operator's SQL (read-only through the sink's door)."""
        if self.client is None:
            return self._post("/v1/sql", {"sql": sql, "parameters": parameters or {}})
        if self.tenant is not None:
            raise WarehouseError("SQL is the operator's; a tenant's key asks named questions")
        return self._query(sql, parameters or {})

    def refresh_analytics(self):
        """Recompute the analytics views now (they also refresh on a schedule); returns as of when."""
        if self.client is None:
            return self._request("/v1/analytics/refresh", {})["as_of"]
        refresh_analytics(self.client)
        return analytics_as_of(self.client)

    def whoami(self) -> str | None:
        """The tenant this caller reads as (None: the operator)."""
        if self.client is not None:
            return self.tenant
        return self._request("/v1/whoami", None)["tenant"]

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def _query(self, sql: str, parameters: dict) -> list[dict[str, Any]]:
        result = self.client.query(sql, parameters=parameters)
        return [dict(zip(result.column_names, r)) for r in result.result_rows]

    def _post(self, path: str, payload: dict) -> list[dict[str, Any]]:
        return self._request(path, payload)["rows"]

    def _request(self, path: str, payload: dict | None) -> dict:
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if payload is not None:
            data, headers["Content-Type"] = json.dumps(payload).encode(), "application/json"
        req = urllib.request.Request(f"{self.url}{path}", data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            try:
                body = json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                pass
            raise WarehouseError(body) from None


def _alive(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2):
            return True
    except OSError:
        return False
