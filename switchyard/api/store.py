"""Files and batches of the OpenAI-compatible API, durable in the data dir (never only in the
broker): one JSON document per object plus the file's bytes, each written atomically, each
carrying its tenant. A lookup by another tenant finds nothing, exactly like a missing id."""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Store:
    """Objects of one kind (files or batches) under `root`."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _meta(self, object_id: str) -> Path:
        if not object_id or "/" in object_id or object_id.startswith("."):
            raise KeyError(object_id)
        return self.root / f"{object_id}.json"

    def save(self, obj: dict[str, Any], tenant: str) -> dict[str, Any]:
        _write_atomic(self._meta(obj["id"]), json.dumps({"tenant": tenant, "object": obj}).encode())
        return obj

    def get(self, object_id: str, tenant: str) -> dict[str, Any] | None:
        try:
            doc = json.loads(self._meta(object_id).read_text())
        except (KeyError, OSError, ValueError):
            return None
        return doc["object"] if doc.get("tenant") == tenant else None

    def list(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's objects, newest first."""
        found = []
        for path in self.root.glob("*.json"):
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if doc.get("tenant") == tenant:
                found.append(doc["object"])
        return sorted(found, key=lambda o: (o.get("created_at", 0), o["id"]), reverse=True)

    def delete(self, object_id: str, tenant: str) -> bool:
        if self.get(object_id, tenant) is None:
            return False
        self._meta(object_id).unlink(missing_ok=True)
        self.content_path(object_id).unlink(missing_ok=True)
        return True

    def content_path(self, object_id: str) -> Path:
        self._meta(object_id)  # validates the id
        return self.root / f"{object_id}.bin"


class FileStore(Store):
    def create(self, tenant: str, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        file_id = new_id("file")
        _write_atomic(self.content_path(file_id), content)
        return self.save({"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                          "filename": filename, "purpose": purpose, "status": "processed"}, tenant)

    def content(self, file_id: str, tenant: str) -> bytes | None:
        if self.get(file_id, tenant) is None:
            return None
        return self.content_path(file_id).read_bytes()
