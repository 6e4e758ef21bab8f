"""The semantic cache: a request answered before routing, from the same tenant's earlier answers.

Two lookups, in order (docs/cache.md):

1. **exact**: a hash of the tenant, every generation parameter of the body (everything but the
   messages: model pin, max_tokens, temperature, stop, tools, ...), the routing policy (minus
   `cache`) and the messages with their whitespace normalised;
2. **similar**: the cosine of the request's MiniLM embedding (the one the router stream computes
   for routing anyway) against earlier answered requests of the same *scope*, at or above
   `similarity_threshold`. A scope is the same tenant, the same parameters and policy, the same
   conversation around the question (every message but the one embedded, exactly) and the same
   numbers in the question, in order: MiniLM puts "sold 48 clips" and "sold 24 clips" at 0.99.

What it learns from: a request that misses is remembered as *pending* (its keys and embedding);
when its answer arrives on `results` (`streams.cache_follower`) it becomes an entry. Only ok
answers of requests that were themselves routed (never a hit) are learned. Entries expire
`ttl_s` after their answer and each tenant keeps at most `max_entries_per_tenant` (oldest go).

The store is in the router process's memory, one index per tenant (a numpy matrix per scope:
brute force cosine is exact, and ~10,000 × 384 floats is well under a millisecond); why not a
faust Table, ClickHouse or a vector library is in docs/cache.md. Nothing here touches Kafka.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import threading
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, Field

from infra.topics import Topics
from schemas import ChatCompletionBody, QueryRequest, Result, RoutingPolicy, Usage, encode
from schemas.common import HEADER_JOB_ID, HEADER_TENANT, utcnow
from streams.metrics import CACHE_ENTRIES, CACHE_LOOKUPS
from streams.records import Output, RawRecord

log = logging.getLogger(__name__)

Match = Literal["exact", "similar"]


class CacheSettings(BaseModel):
    """SWITCHYARD_CACHE__*: the semantic cache of the router stage (off by default)."""

    enabled: bool = Field(default=False, description="answer repeated and paraphrased requests from the cache")
    similarity_threshold: float = Field(default=0.95, ge=0.5, le=1.0,
                                        description="cosine at or above which an earlier answer is reused")
    ttl_s: float = Field(default=86400.0, gt=0, description="an answer is reused for this long after it was given")
    max_entries_per_tenant: int = Field(default=10_000, ge=1)
    max_pending: int = Field(default=20_000, ge=1,
                             description="misses remembered while their answer is on its way (oldest dropped)")
    cache_unset_temperature: bool = Field(default=True, description="an unset temperature is cacheable; any "
                                          "temperature above 0 never is")
    refill_on_start: bool = Field(default=True, description="refill from ClickHouse's answers when the router starts")
    refill_max_entries: int = Field(default=5_000, ge=0, description="at most this many answers, newest first")


# --- keys ------------------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Unicode NFC, whitespace runs to one space, trimmed; case is kept (it can change an answer)."""
    return " ".join(unicodedata.normalize("NFC", text).split())


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def numbers(text: str) -> tuple[str, ...]:
    """The numbers of a text, in order: a similarity hit needs the same ones."""
    return tuple(_NUMBER.findall(text))


def query_index(body: ChatCompletionBody) -> int:
    """Which message the router embeds: the last user message (else the last one), as
    `ChatCompletionBody.last_user_text` picks it."""
    users = [i for i, m in enumerate(body.messages) if m.role == "user"]
    return users[-1] if users else len(body.messages) - 1


def _message(m, with_content: bool = True) -> dict[str, Any]:
    data = m.model_dump(exclude_none=True, exclude={"content"})
    if not with_content:
        return data
    if isinstance(m.content, list) and any(p.type != "text" for p in m.content):
        data["content"] = [{**p.model_dump(exclude_none=True), "text": normalise(p.text)} for p in m.content]
    else:  # a string and a list of text parts with the same text are the same request
        data["content"] = normalise(m.text())
    return data


def _digest(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Keys:
    exact: str
    scope: str


def request_keys(tenant: str, body: ChatCompletionBody, routing: RoutingPolicy) -> Keys:
    params = body.model_dump(exclude={"messages"}, exclude_none=True)
    policy = routing.model_dump(exclude={"cache"}, exclude_none=True)
    q = query_index(body)
    query = body.messages[q]
    context = [_message(m) for i, m in enumerate(body.messages) if i != q]
    non_text = [p.model_dump(exclude_none=True) for p in query.content if p.type != "text"] \
        if isinstance(query.content, list) else []
    text = normalise(query.text())
    scope = _digest("scope", tenant, params, policy, q, context, _message(query, with_content=False), non_text,
                    numbers(text))
    return Keys(exact=_digest("exact", scope, _message(query)), scope=scope)


def bypass_reason(request: QueryRequest, settings: CacheSettings) -> str | None:
    """Why a request neither reads nor feeds the cache, or None when it may."""
    if request.routing.cache is False:
        return "opted out (routing.cache = false)"
    body = request.body
    t = body.temperature
    if t is None and not settings.cache_unset_temperature:
        return "temperature unset"
    if t is not None and t > 0:
        return f"temperature {t} > 0 (sampled answers are not reused)"
    n = (body.model_extra or {}).get("n")
    if n not in (None, 1):
        return "n > 1"
    return None


# --- the index -------------------------------------------------------------------------------------


@dataclass
class Entry:
    source_request_id: str
    tenant: str
    keys: Keys
    response: dict[str, Any]
    tier: str
    model: str
    router_version: str
    answered_at: float  # Unix seconds
    warnings: list[str] = field(default_factory=list)

    def expires_at(self, ttl_s: float) -> float:
        return self.answered_at + ttl_s


@dataclass(frozen=True)
class Hit:
    entry: Entry
    similarity: float
    match: Match


class _Scope:
    """The embeddings of one scope's entries, one row each; a removed entry's row is zeroed."""

    def __init__(self, dim: int):
        self.vectors = np.zeros((8, dim), dtype=np.float32)
        self.ids: list[str | None] = []
        self.dead = 0

    def add(self, source_id: str, vector: np.ndarray) -> int:
        row = len(self.ids)
        if row == len(self.vectors):
            grown = np.zeros((2 * row, self.vectors.shape[1]), dtype=np.float32)
            grown[:row] = self.vectors
            self.vectors = grown
        self.vectors[row] = vector
        self.ids.append(source_id)
        return row

    def remove(self, row: int) -> None:
        self.vectors[row] = 0.0
        self.ids[row] = None
        self.dead += 1

    def compact(self) -> dict[str, int] | None:
        """Drop removed rows once they are most of the matrix; the new row of each id, or None."""
        if self.dead <= 32 or self.dead * 2 < len(self.ids):
            return None
        alive = [i for i, sid in enumerate(self.ids) if sid is not None]
        self.vectors = np.ascontiguousarray(self.vectors[alive]) if alive else np.zeros_like(self.vectors[:8])
        self.ids = [self.ids[i] for i in alive]
        self.dead = 0
        return {sid: row for row, sid in enumerate(self.ids) if sid is not None}

    def candidates(self, vector: np.ndarray, threshold: float) -> list[tuple[int, float]]:
        """Rows at or above the threshold, most similar first."""
        n = len(self.ids)
        if n == 0:
            return []
        sims = self.vectors[:n] @ vector
        rows = np.flatnonzero(sims >= threshold)
        order = rows[np.argsort(-sims[rows], kind="stable")]
        return [(int(r), float(sims[r])) for r in order]


class TenantIndex:
    """One tenant's entries: by exact key, and by scope for the cosine lookup."""

    def __init__(self, dim: int):
        self.dim = dim
        self.entries: OrderedDict[str, Entry] = OrderedDict()  # source request id -> entry, oldest first
        self.exact: dict[str, str] = {}  # exact key -> source request id
        self.scopes: dict[str, _Scope] = {}
        self.rows: dict[str, int] = {}  # source request id -> its row in its scope

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: Entry, vector: np.ndarray, max_entries: int) -> None:
        sid = entry.source_request_id
        if sid in self.entries:
            self.remove(sid)
        old = self.exact.get(entry.keys.exact)
        if old is not None:  # a newer answer to the very same request replaces the older one
            self.remove(old)
        self.entries[sid] = entry
        self.exact[entry.keys.exact] = sid
        scope = self.scopes.setdefault(entry.keys.scope, _Scope(self.dim))
        self.rows[sid] = scope.add(sid, vector)
        while len(self.entries) > max_entries:
            self.remove(next(iter(self.entries)))

    def remove(self, sid: str) -> None:
        entry = self.entries.pop(sid, None)
        if entry is None:
            return
        if self.exact.get(entry.keys.exact) == sid:
            del self.exact[entry.keys.exact]
        scope = self.scopes[entry.keys.scope]
        scope.remove(self.rows.pop(sid))
        if len(scope.ids) == scope.dead:
            del self.scopes[entry.keys.scope]
        elif (moved := scope.compact()) is not None:
            self.rows.update(moved)

    def expire(self, now: float, ttl_s: float) -> None:
        """Entries are kept in the order they were answered, so the expired ones are at the front."""
        while self.entries:
            sid, entry = next(iter(self.entries.items()))
            if entry.expires_at(ttl_s) > now:
                return
            self.remove(sid)

    def lookup(self, keys: Keys, vector: np.ndarray | None, threshold: float, now: float, ttl_s: float,
               request_id: str) -> Hit | None:
        """The exact entry, else the most similar one of the scope; never the request's own answer
        (a replay of a request is answered again, not from itself) nor an expired one."""
        sid = self.exact.get(keys.exact)
        if sid is not None and sid != request_id:
            entry = self.entries[sid]
            if entry.expires_at(ttl_s) > now:
                return Hit(entry, 1.0, "exact")
        scope = self.scopes.get(keys.scope)
        if scope is None or vector is None:
            return None
        for row, sim in scope.candidates(vector, threshold):
            sid = scope.ids[row]
            if sid is None or sid == request_id:
                continue
            entry = self.entries[sid]
            if entry.expires_at(ttl_s) > now:
                return Hit(entry, min(1.0, sim), "similar")
        return None


@dataclass
class _Pending:
    tenant: str
    keys: Keys
    vector: np.ndarray
    at: float


@dataclass
class CacheStats:
    exact: int = 0
    similar: int = 0
    misses: int = 0
    bypassed: int = 0
    learned: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(exact=self.exact, similar=self.similar, misses=self.misses, bypassed=self.bypassed,
                    learned=self.learned)


def _without_usage(response: dict[str, Any]) -> dict[str, Any]:
    """The source's answer as this request's: no tokens were spent on it."""
    out = copy.deepcopy(response)
    if isinstance(out.get("usage"), dict):
        out["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return out


class SemanticCache:
    """The router stage's cache step (`answer`) and what it learns from (`learn`). Thread-safe:
    the router's processor runs in a thread, the results follower on the event loop."""

    def __init__(self, settings: CacheSettings, topics: Topics = Topics(), dim: int = 384,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.topics = topics
        self.dim = dim
        self.clock = clock
        self.tenants: dict[str, TenantIndex] = {}
        self.pending: OrderedDict[str, _Pending] = OrderedDict()
        self.stats = CacheStats()
        self._lock = threading.Lock()

    # -- the step before routing --

    def answer(self, valid: Sequence[tuple[RawRecord, QueryRequest]],
               embeddings: np.ndarray) -> tuple[list[Output], list[int]]:
        """Results for the requests the cache answers, and the indexes (into `valid`) of those
        left to route. A cacheable miss is remembered, so its answer is learned when it comes."""
        s, now = self.settings, self.clock()
        outputs: list[Output] = []
        route: list[int] = []
        with self._lock:
            for i, (record, request) in enumerate(valid):
                if bypass_reason(request, s) is not None:
                    self.stats.bypassed += 1
                    CACHE_LOOKUPS.labels("bypass").inc()
                    route.append(i)
                    continue
                keys = request_keys(request.tenant, request.body, request.routing)
                vector = np.asarray(embeddings[i], dtype=np.float32)
                index = self.tenants.get(request.tenant)
                hit = None
                if index is not None:
                    index.expire(now, s.ttl_s)
                    hit = index.lookup(keys, vector, s.similarity_threshold, now, s.ttl_s, request.request_id)
                if hit is None:
                    self.stats.misses += 1
                    CACHE_LOOKUPS.labels("miss").inc()
                    self._remember(request.request_id, _Pending(request.tenant, keys, vector, now))
                    route.append(i)
                    continue
                setattr(self.stats, hit.match, getattr(self.stats, hit.match) + 1)
                CACHE_LOOKUPS.labels(hit.match).inc()
                outputs.append(self._hit_output(record, request, hit))
            CACHE_ENTRIES.set(self._size())
        return outputs, route

    def _remember(self, request_id: str, pending: _Pending) -> None:
        self.pending.pop(request_id, None)
        self.pending[request_id] = pending
        while len(self.pending) > self.settings.max_pending:
            self.pending.popitem(last=False)

    def _hit_output(self, record: RawRecord, request: QueryRequest, hit: Hit) -> Output:
        e = hit.entry
        finished = utcnow()
        result = Result(
            request_id=request.request_id, job_id=request.job_id, tenant=request.tenant,
            custom_id=request.custom_id, tier=e.tier, model=e.model, status="ok",
            response=_without_usage(e.response), usage=Usage(), cost_usd=0.0, model_latency_ms=0.0,
            end_to_end_ms=max(0.0, (finished - request.submitted_at).total_seconds() * 1000),
            router_version=e.router_version, submitted_at=request.submitted_at, finished_at=finished,
            warnings=list(e.warnings), cache_hit=True, cache_source_request_id=e.source_request_id,
            cache_similarity=round(hit.similarity, 6), cache_match=hit.match,
        )
        headers = ((HEADER_JOB_ID, request.job_id.encode()), (HEADER_TENANT, request.tenant.encode()))
        return Output(self.topics.results, request.request_id.encode(), encode(result), headers=headers,
                      origin=record, job_id=request.job_id)

    # -- learning --

    def wants(self, key: bytes | None) -> bool:
        """Whether a results message with this Kafka key (the request id) answers a pending miss."""
        if not key:
            return False
        with self._lock:
            return key.decode(errors="replace") in self.pending

    def learn(self, result: Result) -> bool:
        """Index an answer to a pending miss; True when it became an entry."""
        if result.cache_hit:
            return False
        with self._lock:
            pending = self.pending.pop(result.request_id, None)
            if pending is None or result.status != "ok" or not result.response:
                return False
            if pending.tenant != result.tenant:  # never: the request id names one tenant's request
                log.warning("result %s is tenant %r's, its request was %r's: not cached",
                            result.request_id, result.tenant, pending.tenant)
                return False
            entry = Entry(result.request_id, result.tenant, pending.keys, result.response, result.tier,
                          result.model, result.router_version, result.finished_at.timestamp(),
                          list(result.warnings))
            self._add(entry, pending.vector)
            return True

    def seed(self, requests: Sequence[QueryRequest], results: Sequence[Result], embeddings: np.ndarray) -> int:
        """Entries from stored answers (a refill at start): request i answered by result i,
        oldest first. Returns how many were indexed (expired, uncacheable or failed ones are not)."""
        added = 0
        now = self.clock()
        with self._lock:
            order = sorted(range(len(results)), key=lambda i: results[i].finished_at)
            for i in order:
                request, result = requests[i], results[i]
                if (result.cache_hit or result.status != "ok" or not result.response
                        or result.request_id != request.request_id or result.tenant != request.tenant
                        or bypass_reason(request, self.settings) is not None
                        or result.finished_at.timestamp() + self.settings.ttl_s <= now):
                    continue
                keys = request_keys(request.tenant, request.body, request.routing)
                self._add(Entry(result.request_id, result.tenant, keys, result.response, result.tier,
                                result.model, result.router_version, result.finished_at.timestamp(),
                                list(result.warnings)), np.asarray(embeddings[i], dtype=np.float32))
                added += 1
        return added

    def _add(self, entry: Entry, vector: np.ndarray) -> None:
        index = self.tenants.setdefault(entry.tenant, TenantIndex(self.dim))
        index.add(entry, vector, self.settings.max_entries_per_tenant)
        self.stats.learned += 1
        CACHE_ENTRIES.set(self._size())

    def _size(self) -> int:
        return sum(len(t) for t in self.tenants.values())

    def size(self, tenant: str | None = None) -> int:
        with self._lock:
            if tenant is not None:
                return len(self.tenants.get(tenant, ()))
            return self._size()
