"""A circuit breaker per tier worker, and the record of its state that a chaos run reads.

The state machine is pybreaker's: closed → open after `failures_to_open` consecutive failed
engine calls → half-open once `reset_timeout_seconds` have passed and a request comes → closed
when that probe succeeds, open again when it fails. Why pybreaker rather than tenacity plus our
own state: tenacity only retries one call and remembers nothing between requests; pybreaker is
the well-kept implementation of exactly this machine, with listeners on every transition,
exclusions for errors that are the request's fault, and a storage we can seed when a restarted
worker finds its tier was open. Its `calling()` context manager runs the guarded block as a
generator, so the block may `await`: pybreaker's lock is held only while it changes state, never
across the engine call (the worker's event loop is one thread).

Every transition is logged ("breaker medium: closed -> open ...") and rewritten, atomically, to
`<run_dir>/breaker.<tier>.json`:

    {"tier": "medium", "state": "open", "failures_to_open": 5, "reset_timeout_seconds": 30.0,
     "opened_at": 1764.., "closed_at": null, "open_since": 1764.., "updated_at": 1764..,
     "transitions": [{"at": 1764.., "from": "closed", "to": "open"}, ...]}

Times are Unix seconds. `opened_at` is the latest closed → open, `closed_at` the latest return
to closed, `open_since` the latest entry into open (a failed probe included).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pybreaker

from streams.metrics import BREAKER_OPEN

from workers.config import BreakerSettings
from workers.engine import EngineError

log = logging.getLogger(__name__)

BreakerOpen = pybreaker.CircuitBreakerError
MAX_TRANSITIONS_KEPT = 200


def breaker_file(run_dir: Path, tier: str) -> Path:
    return Path(run_dir) / f"breaker.{tier}.json"


def read_breaker_state(path: Path) -> dict[str, Any] | None:
    """The state a worker last wrote, or None if there is none (yet) or it cannot be read."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _not_the_models_fault(exc: BaseException) -> bool:
    # A request the engine refused (4xx) says nothing about the model's health, and a cancelled
    # call (the worker is stopping) neither.
    return isinstance(exc, asyncio.CancelledError) or (isinstance(exc, EngineError) and not exc.retryable)


class TierBreaker(pybreaker.CircuitBreakerListener):
    def __init__(self, tier: str, settings: BreakerSettings, state_path: Path | None = None):
        self.tier = tier
        self.settings = settings
        self.state_path = Path(state_path) if state_path else None
        previous = read_breaker_state(self.state_path) if self.state_path else None
        self.record: dict[str, Any] = dict(
            tier=tier, state=pybreaker.STATE_CLOSED, failures_to_open=settings.failures_to_open,
            reset_timeout_seconds=settings.reset_timeout_seconds, opened_at=None, closed_at=None,
            open_since=None, updated_at=time.time(), transitions=[])
        if previous and previous.get("tier") == tier:
            for key in ("opened_at", "closed_at", "open_since", "transitions"):
                self.record[key] = previous.get(key, self.record[key])
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=settings.failures_to_open, reset_timeout=settings.reset_timeout_seconds,
            exclude=[_not_the_models_fault], listeners=[self], name=tier,
            state_storage=self._storage(previous), throw_new_error_on_trip=False)
        self.record["state"] = self._breaker.current_state
        self._write()

    def _storage(self, previous: dict[str, Any] | None) -> pybreaker.CircuitMemoryStorage:
        """A worker restarted while its tier was open starts open (probing after the rest of
        the reset timeout) rather than sending its first requests to a model that is down."""
        if previous and previous.get("tier") == self.tier and previous.get("state") != pybreaker.STATE_CLOSED \
                and previous.get("open_since"):
            storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_OPEN)
            storage.opened_at = datetime.fromtimestamp(previous["open_since"], timezone.utc)
            log.info("breaker %s: starts open, as the previous worker left it", self.tier)
            return storage
        return pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)

    @property
    def state(self) -> str:
        return self._breaker.current_state

    @property
    def is_open(self) -> bool:
        return self.settings.enabled and self.state == pybreaker.STATE_OPEN

    @property
    def failures(self) -> int:
        return self._breaker.fail_counter

    @contextlib.contextmanager
    def calling(self) -> Iterator[None]:
        """Guard one engine call; raises BreakerOpen (before the call) while the breaker is open."""
        if not self.settings.enabled:
            yield
            return
        with self._breaker.calling():
            yield

    # pybreaker.CircuitBreakerListener
    def state_change(self, cb, old_state, new_state) -> None:
        old = old_state.name if old_state is not None else None
        new = new_state.name
        now = time.time()
        if new == pybreaker.STATE_OPEN:
            self.record["open_since"] = now
            if old == pybreaker.STATE_CLOSED:
                self.record["opened_at"] = now
        elif new == pybreaker.STATE_CLOSED:
            self.record["closed_at"] = now
        self.record["state"] = new
        self.record["transitions"] = [*self.record["transitions"], {"at": now, "from": old, "to": new}][
            -MAX_TRANSITIONS_KEPT:]
        detail = {pybreaker.STATE_OPEN: f"after {cb.fail_counter} failures, for {cb.reset_timeout}s"
                  if old == pybreaker.STATE_CLOSED else "the probe failed",
                  pybreaker.STATE_HALF_OPEN: "probing", pybreaker.STATE_CLOSED: "the probe succeeded"}[new]
        log.warning("breaker %s: %s -> %s (%s)", self.tier, old, new, detail)
        self._write()

    def _write(self) -> None:
        BREAKER_OPEN.labels(self.tier).set(1 if self.record["state"] == pybreaker.STATE_OPEN else 0)
        if self.state_path is None:
            return
        self.record["updated_at"] = time.time()
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.record))
            os.replace(tmp, self.state_path)
        except OSError as exc:  # the record is for observers; it must never fail a request
            log.warning("breaker %s: cannot write %s: %s", self.tier, self.state_path, exc)
