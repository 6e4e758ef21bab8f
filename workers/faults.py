"""Making one tier's model fail for a while, for tests and chaos runs.

`FaultyEngine` wraps a real engine: while its fault file exists, every call fails as a model
that is down would (EngineError 503, retryable); once the file is gone, calls reach the real
engine again. A file, not a flag in memory, so another process (`switchyard chaos`, a test)
can start and stop the fault of a running worker.
"""
from __future__ import annotations

from pathlib import Path

from workers.engine import Engine, EngineError


def fault_file(run_dir: Path, tier: str) -> Path:
    return Path(run_dir) / f"fault.{tier}"


def inject_fault(run_dir: Path, tier: str, why: str = "injected") -> Path:
    path = fault_file(run_dir, tier)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(why + "\n")
    return path


def clear_fault(run_dir: Path, tier: str) -> None:
    fault_file(run_dir, tier).unlink(missing_ok=True)


class FaultyEngine:
    """An engine that fails every call while `path` exists, and is `engine` otherwise."""

    def __init__(self, engine: Engine, path: Path):
        self.engine = engine
        self.path = Path(path)
        self.name = engine.name
        self.calls = 0
        self.faults = 0  # calls failed on purpose

    async def chat(self, body: dict) -> dict:
        self.calls += 1
        if self.path.exists():
            self.faults += 1
            raise EngineError(f"injected fault: {self.path} exists", status=503, type="injected_fault")
        return await self.engine.chat(body)

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()

    def __repr__(self) -> str:
        return f"FaultyEngine({self.engine!r}, {self.path})"
