"""The sink while ClickHouse is unavailable: the real embedded broker, the real sink stage
(`streams.sink.run_sink` over `streams.runtime`) and the real chDB engine, whose client is
wrapped by a fault injector that makes inserts fail the way clickhouse-connect fails when the
server cannot be reached (or refuses). Each "life" below is one run of the sink process; a crash
ends it and the next life is the supervisor's restart.

What must hold: no offset is committed for a record ClickHouse does not hold (nothing lost);
once ClickHouse is back every record is stored, exactly once after FINAL; and a dead letter
whose insert fails is not dropped."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

import streams.sink
from infra.broker import create_topics, start_broker
from infra.clickhouse import apply_schema, connect
from schemas import DeadLetter, Result, encode
from streams.config import KafkaSettings
from streams.sink import ClickHouseWriter, run_sink, to_rows
from streams.records import RawRecord

UNREACHABLE = ("Error HTTPConnectionPool(host='clickhouse', port=8123): Max retries exceeded (Caused by "
               "NewConnectionError: [Errno 111] Connection refused) executing HTTP request attempt 1")


@dataclass
class Outage:
    """What fails, shared by every client the sink opens (one per life)."""

    down: bool = False
    tables: set[str] | None = None  # None: every table
    error: type[Exception] = OperationalError
    message: str = UNREACHABLE
    fail_next: int = 0  # fail this many more inserts, then recover (0: as `down` says)
    poison: set[str] = field(default_factory=set)  # request ids the server always refuses
    failed: int = 0

    def check(self, table: str, column_names, data) -> None:
        if "request_id" in column_names and table == "results":
            i = list(column_names).index("request_id")
            bad = self.poison & {row[i] for row in data}
            if bad:
                self.failed += 1
                raise DatabaseError(f"Code: 53. DB::Exception: cannot store {sorted(bad)} (TYPE_MISMATCH)")
        if self.fail_next > 0:
            self.fail_next -= 1
        elif not self.down or (self.tables is not None and table not in self.tables):
            return
        self.failed += 1
        raise self.error(self.message)


class FlakyClickHouse:
    """The real client, behind the same interface; `insert` fails while the outage says so."""

    def __init__(self, client, outage: Outage):
        self._client = client
        self.outage = outage

    def insert(self, table, data, column_names=(), **kwargs):
        self.outage.check(table, column_names, data)
        return self._client.insert(table, data, column_names=column_names, **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


@pytest.fixture(scope="module")
def broker():
    proc, bootstrap = start_broker()
    yield bootstrap
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def dsn(tmp_path_factory):
    return f"chdb://{tmp_path_factory.mktemp('ch')}"


@pytest.fixture
def outage(monkeypatch) -> Outage:
    o = Outage()
    real_connect = streams.sink.connect
    monkeypatch.setattr(streams.sink, "connect", lambda dsn: FlakyClickHouse(real_connect(dsn), o))
    return o


def _result(job: str, custom_id: str, answer: str = "an answer") -> Result:
    return Result(request_id=f"{job}:{custom_id}", job_id=job, tenant="t", custom_id=custom_id,
                  tier="small", model="m", status="ok",
                  response={"choices": [{"message": {"content": answer}}]},
                  usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                  router_version="v1", submitted_at=datetime.now(timezone.utc))


def _query(job: str, custom_id: str) -> bytes:
    return json.dumps({"custom_id": custom_id, "job_id": job, "tenant": "t",
                       "body": {"messages": [{"role": "user", "content": f"question {custom_id}"}]}}).encode()


def _letter(job: str, n: int) -> DeadLetter:
    return DeadLetter.of("router", f"bad line {n}", b"{broken", "queries", 0, 1000 + n, job)


class Log:
    """What was produced, by partition: the offsets a fully caught-up sink has committed."""

    def __init__(self, kafka: KafkaSettings):
        self.kafka = kafka
        self.end: dict[TopicPartition, int] = {}
        self.placed: dict[bytes, TopicPartition] = {}  # where each key went

    def produce(self, messages: list[tuple[str, bytes, bytes]]) -> None:
        async def go():
            producer = AIOKafkaProducer(bootstrap_servers=self.kafka.bootstrap, acks="all")
            await producer.start()
            try:
                for base, key, value in messages:
                    md = await producer.send_and_wait(self.kafka.topics.name(base), value, key=key)
                    tp = TopicPartition(md.topic, md.partition)
                    self.end[tp] = max(self.end.get(tp, 0), md.offset + 1)
                    self.placed[key] = tp
            finally:
                await producer.stop()
        asyncio.run(go())

    async def committed(self) -> dict[TopicPartition, int | None]:
        """The sink group's committed offsets, read without joining the group."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.kafka.bootstrap,
                                    group_id=self.kafka.topics.group("switchyard-sink"), enable_auto_commit=False)
        await consumer.start()
        try:
            return {tp: await consumer.committed(tp) for tp in self.end}
        finally:
            await consumer.stop()

    async def caught_up(self) -> bool:
        return await self.committed() == self.end


def _life(log: Log, dsn: str, *, until_caught_up: bool, timeout: float = 90) -> BaseException | None:
    """One run of the sink process: until it has committed everything produced (then it is
    stopped cleanly) or it crashes, or the deadline passes. Returns the crash, if any."""
    async def life():
        stop = asyncio.Event()
        task = asyncio.create_task(run_sink(log.kafka, dsn, batch_size=500, flush_seconds=0.2,
                                            analytics_refresh_seconds=3600, stop=stop))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not task.done() and loop.time() < deadline:
            await asyncio.wait({task}, timeout=0.5)
            if until_caught_up and not task.done() and await log.caught_up():
                break
        stop.set()
        try:
            await task
        except Exception as exc:  # the crash the supervisor would restart after
            return exc
        return None

    return asyncio.run(life())


def _stored(dsn: str, sql: str, **params) -> list[tuple]:
    """Read chDB while no sink runs (one owner at a time)."""
    client = connect(dsn)
    try:
        return client.query(sql, parameters=params).result_rows
    finally:
        client.close()


def _offsets_stored(log: Log, dsn: str, committed: dict[TopicPartition, int | None], job: str) -> None:
    """Nothing lost: every record below a committed offset is in ClickHouse."""
    stored_results = {r[0] for r in _stored(dsn, "SELECT custom_id FROM results FINAL WHERE job_id = {j:String}", j=job)}
    stored_letters = {r[0] for r in _stored(dsn, "SELECT reason FROM dead_letters FINAL WHERE job_id = {j:String}", j=job)}

    async def read_below():
        bounds = {tp: offset for tp, offset in committed.items() if offset}
        if not bounds:
            return []
        consumer = AIOKafkaConsumer(bootstrap_servers=log.kafka.bootstrap, group_id=None)
        await consumer.start()
        try:
            consumer.assign(list(bounds))
            await consumer.seek_to_beginning(*bounds)
            found, done = [], set()
            while len(done) < len(bounds):
                for tp, msgs in (await consumer.getmany(timeout_ms=1000)).items():
                    found += [(tp.topic, m.value) for m in msgs if m.offset < bounds[tp]]
                    if msgs and msgs[-1].offset + 1 >= bounds[tp]:
                        done.add(tp)
            return found
        finally:
            await consumer.stop()

    for topic, value in asyncio.run(read_below()):
        base = log.kafka.topics.base(topic)
        if base == "results":
            assert json.loads(value)["custom_id"] in stored_results, f"committed but not stored: {value[:80]}"
        elif base == "dlq":
            assert json.loads(value)["reason"] in stored_letters, f"committed but not stored: {value[:80]}"


def _kafka(broker: str, prefix: str) -> KafkaSettings:
    asyncio.run(create_topics(broker, prefix))
    return KafkaSettings(bootstrap=broker, topic_prefix=prefix)


def test_clickhouse_down_commits_nothing_and_every_row_lands_once_when_it_is_back(broker, dsn, outage):
    job = "outage-job"
    log = Log(_kafka(broker, "sfa."))
    first = [f"a{i}" for i in range(6)]
    log.produce([("queries", c.encode(), _query(job, c)) for c in first] +
                [("results", f"{job}:{c}".encode(), encode(_result(job, c))) for c in first] +
                [("dlq", b"l0", encode(_letter(job, 0)))])
    assert _life(log, dsn, until_caught_up=True) is None  # ClickHouse up: stored and committed
    before = asyncio.run(log.committed())
    assert before == log.end

    outage.down = True  # ClickHouse unreachable from here on
    second = [f"b{i}" for i in range(6)]
    log.produce([("queries", c.encode(), _query(job, c)) for c in second] +
                [("results", f"{job}:{c}".encode(), encode(_result(job, c))) for c in second] +
                [("results", f"{job}:a0".encode(), encode(_result(job, "a0", "a replayed answer"))),
                 ("dlq", b"l1", encode(_letter(job, 1)))])
    for _ in range(2):  # the sink crashes, is restarted into the same outage, crashes again
        crash = _life(log, dsn, until_caught_up=True, timeout=60)
        assert isinstance(crash, OperationalError), f"the sink did not stop on an unreachable ClickHouse: {crash!r}"
        assert asyncio.run(log.committed()) == before  # nothing of the failed batches committed
    assert outage.failed >= 2
    _offsets_stored(log, dsn, before, job)

    outage.down = False  # ClickHouse is back; the next restart replays the uncommitted batches
    assert _life(log, dsn, until_caught_up=True) is None
    assert asyncio.run(log.committed()) == log.end
    rows = _stored(dsn, "SELECT custom_id, answer FROM results FINAL WHERE job_id = {j:String} ORDER BY custom_id", j=job)
    assert [c for c, _ in rows] == sorted(first + second)  # every one, once
    assert dict(rows)["a0"] == "a replayed answer"  # the later result of a request wins
    assert _stored(dsn, "SELECT count() FROM requests FINAL WHERE job_id = {j:String}", j=job) == [(12,)]
    letters = _stored(dsn, "SELECT reason FROM dead_letters FINAL WHERE job_id = {j:String} ORDER BY reason", j=job)
    assert letters == [("bad line 0",), ("bad line 1",)]  # no valid row was turned into a dead letter


def _dead_letters_down(outage: Outage) -> None:
    """dead_letters refuses inserts (a server-side error, not a network one); other tables are fine."""
    outage.down, outage.tables = True, {"dead_letters"}
    outage.error, outage.message = DatabaseError, "Code: 252. DB::Exception: Too many parts (TOO_MANY_PARTS)"


def _letters(dsn: str, job: str) -> list[str]:
    return [r[0] for r in _stored(dsn, "SELECT reason FROM dead_letters FINAL WHERE job_id = {j:String} "
                                       "ORDER BY reason", j=job)]


def test_a_stored_dead_letter_whose_insert_fails_is_not_lost(broker, dsn, outage):
    """Letters on the dlq topic, while dead_letters refuses inserts: not committed, stored later."""
    job = "dl-job"
    log = Log(_kafka(broker, "sfb."))
    _dead_letters_down(outage)
    log.produce([("dlq", f"l{n}".encode(), encode(_letter(job, n))) for n in range(3)])
    crash = _life(log, dsn, until_caught_up=True, timeout=60)
    assert isinstance(crash, DatabaseError) and "TOO_MANY_PARTS" in str(crash)
    assert asyncio.run(log.committed()) == {TopicPartition("sfb.dlq", 0): None}  # still to be stored
    assert _letters(dsn, job) == []

    outage.down = False
    assert _life(log, dsn, until_caught_up=True) is None
    assert _letters(dsn, job) == ["bad line 0", "bad line 1", "bad line 2"]  # each once


def test_the_letter_for_a_refused_row_is_not_lost_when_dead_letters_fails_too(broker, dsn, outage):
    """ClickHouse refuses one results row (a poison row) and, for a while, the dead letter that
    would replace it: the row's offset is not committed until its letter is stored."""
    job = "poison-job"
    log = Log(_kafka(broker, "sfc."))
    _dead_letters_down(outage)
    outage.poison = {f"{job}:poison"}
    good = [f"g{i}" for i in range(4)]
    log.produce([("results", f"{job}:{c}".encode(), encode(_result(job, c))) for c in good] +
                [("results", f"{job}:poison".encode(), encode(_result(job, "poison")))])
    poison_tp = log.placed[f"{job}:poison".encode()]
    crash = _life(log, dsn, until_caught_up=True, timeout=60)
    assert isinstance(crash, DatabaseError) and "TOO_MANY_PARTS" in str(crash)
    committed = asyncio.run(log.committed())
    assert (committed[poison_tp] or 0) < log.end[poison_tp]  # the refused row waits for its letter
    _offsets_stored(log, dsn, committed, job)

    outage.down = False  # dead_letters takes inserts again; the poison row is still refused
    assert _life(log, dsn, until_caught_up=True) is None
    letters = _letters(dsn, job)
    assert len(letters) == 1 and letters[0].startswith("ClickHouse refused the results row")
    assert "TYPE_MISMATCH" in letters[0]
    rows = _stored(dsn, "SELECT custom_id FROM results FINAL WHERE job_id = {j:String} ORDER BY custom_id", j=job)
    assert [r[0] for r in rows] == good


# --- the writer alone: an outage that ends while it retries row by row --------------------------


def test_an_outage_that_ends_mid_retry_is_raised_not_dead_lettered(tmp_path):
    """ClickHouse unreachable for the batch insert and the first row-by-row retries, back by the
    time the writer would store dead letters: the valid rows must not become dead letters
    ("ClickHouse refused ...") but be raised, so the batch is replayed."""
    client = connect(f"chdb://{tmp_path / 'ch'}")
    try:
        apply_schema(client)
        rows = [to_rows(RawRecord(encode(_result("w", c)), "results", 0, i)) for i, c in enumerate("abc")]
        outage = Outage(fail_next=1 + len(rows))  # the batch and each row, then it is back
        writer = ClickHouseWriter(FlakyClickHouse(client, outage))
        with pytest.raises(OperationalError):
            writer.write(rows)
        assert client.query("SELECT count() FROM dead_letters FINAL WHERE job_id = 'w'").result_rows == [(0,)]
        outage.fail_next = 0  # back for good
        writer.write(rows)  # the replay
        assert client.query("SELECT custom_id FROM results FINAL WHERE job_id = 'w' ORDER BY custom_id"
                            ).result_rows == [("a",), ("b",), ("c",)]
        assert client.query("SELECT count() FROM dead_letters FINAL WHERE job_id = 'w'").result_rows == [(0,)]
    finally:
        client.close()
