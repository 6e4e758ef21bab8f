"""Who is calling an endpoint: the operator or one tenant.

The operator's token lives in the data dir (`secrets/operator.token`, owner-only), so whoever
can read the stack's files is its operator. Tenants get API keys (`switchyard keys create`);
only their SHA-256 is stored (`secrets/tenants.json`, owner-only), mapped to the tenant name.
A tenant's key can only ever read that tenant's data.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

TENANT_KEY_PREFIX = "sy-"


class AuthError(PermissionError):
    pass


@dataclass(frozen=True)
class Caller:
    """An authenticated caller. `tenant` is None for the operator, who may read every tenant."""

    tenant: str | None

    @property
    def is_operator(self) -> bool:
        return self.tenant is None


OPERATOR = Caller(tenant=None)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, never readable by others even for a moment."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Keyring:
    """The operator token and the tenants' key digests under one secrets directory."""

    def __init__(self, secrets_dir: Path):
        self.dir = secrets_dir
        self.operator_path = secrets_dir / "operator.token"
        self.tenants_path = secrets_dir / "tenants.json"
        self._tenants: dict[str, str] = {}
        self._tenants_mtime: float | None = None

    def operator_token(self) -> str | None:
        try:
            return self.operator_path.read_text().strip() or None
        except OSError:
            return None

    def ensure_operator_token(self) -> str:
        token = self.operator_token()
        if token is None:
            token = secrets.token_urlsafe(32)
            _write_private(self.operator_path, token)
        return token

    def add_tenant(self, tenant: str) -> str:
        """A new API key for `tenant` (printed once; only its digest is kept)."""
        if not tenant or not tenant.strip():
            raise ValueError("a tenant needs a name")
        key = TENANT_KEY_PREFIX + secrets.token_urlsafe(32)
        tenants = self._read_tenants()
        tenants[_digest(key)] = tenant
        _write_private(self.tenants_path, json.dumps(tenants, indent=2))
        return key

    def revoke_tenant(self, tenant: str) -> int:
        tenants = self._read_tenants()
        kept = {d: t for d, t in tenants.items() if t != tenant}
        _write_private(self.tenants_path, json.dumps(kept, indent=2))
        return len(tenants) - len(kept)

    def tenants(self) -> dict[str, int]:
        """tenant -> number of live keys."""
        counts: dict[str, int] = {}
        for t in self._read_tenants().values():
            counts[t] = counts.get(t, 0) + 1
        return counts

    def caller(self, token: str | None) -> Caller:
        """The caller a bearer token names; AuthError when it names no one."""
        if not token:
            raise AuthError("missing bearer token")
        operator = self.operator_token()
        if operator is not None and hmac.compare_digest(token.encode(), operator.encode()):
            return OPERATOR
        tenant = self._current_tenants().get(_digest(token))
        if tenant is None:
            raise AuthError("unknown token")
        return Caller(tenant=tenant)

    def _current_tenants(self) -> dict[str, str]:
        """The tenants file, re-read when it changes (keys added while the stack runs work at once)."""
        try:
            mtime = self.tenants_path.stat().st_mtime
        except OSError:
            return {}
        if mtime != self._tenants_mtime:
            self._tenants, self._tenants_mtime = self._read_tenants(), mtime
        return self._tenants

    def _read_tenants(self) -> dict[str, str]:
        try:
            data = json.loads(self.tenants_path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
