"""Cross-replica notifications (agentrun/storage/notifications.py; SQLite's poller,
agentrun/storage/sqlite_poll.py).

PostgreSQL: a replica whose LISTEN connection is down still hears what other replicas did. The
LISTEN backend is ended with pg_terminate_backend on the real server, and kept down by a long
reconnect delay; signals, events and instance history written during the outage reach the
replica through its catch-up passes, with no further notification, while it is still down.
SQLite: two stores on one file hear each other's events, signals and instance history."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage import notifications, sqlite_poll
from agentrun.storage.machines import (
    EntryKind,
    HistoryRecord,
    InstanceRecord,
    InstanceState,
    MachineBatch,
)
from agentrun.storage.records import (
    Batch,
    EventRecord,
    ExecutionRecord,
    ExecutionState,
    SignalRecord,
)
from agentrun.storage.sql import SqlStore

from .conftest import PgServer, _pg_admin
from .factories import execution_record


async def _until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _terminate(store: SqlStore) -> None:
    pid = store.notifications.listener_pid
    assert pid is not None
    _pg_admin(f"SELECT pg_terminate_backend({pid})")


@pytest.fixture
async def pg_url(pg_server: PgServer) -> AsyncIterator[str]:
    url = pg_server.create_database(migrated=True)
    yield url
    pg_server.release(url)


@pytest.fixture
async def stores(pg_url: str) -> AsyncIterator[Callable[[], Any]]:
    opened: list[SqlStore] = []

    async def open_store() -> SqlStore:
        store = SqlStore(pg_url)
        await store.open()
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        await store.close()


async def _collect(stream: AsyncIterator[Any], into: list[Any]) -> None:
    async for item in stream:
        into.append(item)


def _instance(last_sequence: int) -> InstanceRecord:
    return InstanceRecord(
        id="in-1",
        tenant="t",
        workflow="wf",
        version=1,
        state=InstanceState.ACTIVE,
        current="a",
        data={},
        input=None,
        created_at=time.time(),
        updated_at=time.time(),
        last_sequence=last_sequence,
        entry_sequence=1,
    )


def _entry(sequence: int) -> HistoryRecord:
    return HistoryRecord(
        "in-1",
        sequence,
        EntryKind.TRANSITION,
        time.time(),
        event="go",
        event_id=None,
        event_data=None,
        from_state="a",
        to_state="a",
    )


async def _pair(
    writer: SqlStore, reader: SqlStore
) -> tuple[list[tuple[str, str]], ExecutionRecord]:
    """The reader listens (and follows the execution and the instance, as a Watch and a
    WatchInstance would); the writer has a running execution and an active instance."""
    heard: list[tuple[str, str]] = []
    reader.listen(lambda kind, key: heard.append((kind, key)))
    reader.watch(lambda: ("in-1", "ex-1"))
    execution = execution_record("ex-1", tenant="t")
    await writer.create_execution(execution)
    await writer.instances.create_instance(_instance(1), [_entry(1)])
    return heard, execution


async def _changes(writer: SqlStore, execution: ExecutionRecord) -> set[tuple[str, str]]:
    """A signal, an event and an instance entry, written as the engines write them; what a
    listener must hear of them."""
    await writer.add_signal(SignalRecord("ex-1", "go", {"ok": True}, "s1", time.time()))
    await writer.notify("signal", "ex-1")
    # With the execution, whose last_sequence is its newest event's.
    execution.last_sequence = 1
    await writer.commit(
        Batch(execution=execution, events=[EventRecord("ex-1", 1, "node.running", time.time())])
    )
    await writer.instances.commit(MachineBatch(_instance(2), [_entry(2)]))
    return {("signal", "ex-1"), ("events", "ex-1"), ("events", "in-1")}


async def test_what_is_written_during_an_outage_reaches_the_replica_while_it_is_down(
    stores: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Down for good once lost: what arrives can only come from the catch-up passes.
    monkeypatch.setattr(notifications, "RECONNECT_SECONDS", 300.0)
    writer: SqlStore = await stores()
    reader: SqlStore = await stores()
    heard, execution = await _pair(writer, reader)
    await _until(lambda: reader.notifications.listening, "LISTEN")
    # LISTEN works: a notification arrives.
    await writer.notify("signal", "ex-0")
    await _until(lambda: ("signal", "ex-0") in heard, "a notification through LISTEN")

    heard.clear()
    _terminate(reader)
    await _until(lambda: not reader.notifications.listening, "the loss of LISTEN")
    # An outage's first pass announces everything running: what it may have missed so far.
    await _until(
        lambda: {("events", "ex-1"), ("events", "in-1")} <= set(heard), "the first catch-up pass"
    )
    heard.clear()

    wanted = await _changes(writer, execution)  # the signal's NOTIFY is lost to the reader
    await _until(lambda: wanted <= set(heard), "what was written during the outage")
    assert not reader.notifications.listening  # still down: the catch-up told it


async def test_listen_comes_back_and_catches_up_once_more(stores: Callable[[], Any]) -> None:
    writer: SqlStore = await stores()
    reader: SqlStore = await stores()
    heard: list[tuple[str, str]] = []
    reader.listen(lambda kind, key: heard.append((kind, key)))
    await _until(lambda: reader.notifications.listening, "LISTEN")
    first = reader.notifications.listener_pid
    _terminate(reader)
    await _until(
        lambda: reader.notifications.listening and reader.notifications.listener_pid != first,
        "LISTEN on a new connection",
    )
    passes = reader.notifications.catch_up_passes
    # One full pass after it is back (what was sent before it came back), then it stops.
    await _until(
        lambda: reader.notifications.catch_up_passes > passes, "a pass after the reconnect"
    )
    await writer.notify("signal", "ex-9")
    await _until(lambda: ("signal", "ex-9") in heard, "a notification through the new LISTEN")
    settled = reader.notifications.catch_up_passes
    await asyncio.sleep(3 * notifications.OUTAGE_POLL_SECONDS)
    assert reader.notifications.catch_up_passes == settled


async def _replica(name: str, store: SqlStore, engines: list[Engine]) -> Engine:
    """A started engine on `store`, added to `engines` (the test stops them)."""
    engine = Engine(
        store,
        tools=Registry(core_tools()),
        agents=default_agents(),
        config=EngineConfig(replica_id=name, lease_seconds=5.0, seed=1),
    )
    await engine.start()
    engines.append(engine)
    return engine


# Two signals in a row: the second is sent after a pause and a resume.
GATE = """
name: gate
nodes:
  - {id: wait, wait: {signal: go}}
  - {id: hold, needs: [wait], wait: {signal: more}}
  - {id: last, needs: [hold], pass: {value: 1}}
"""


async def test_signal_control_and_watch_through_another_replica_during_an_outage(
    stores: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both replicas lose LISTEN; a signal and a pause/resume sent through b reach the run on
    a, and b's Watch stream of a's execution gets every event to the end."""
    monkeypatch.setattr(notifications, "RECONNECT_SECONDS", 300.0)
    engines: list[Engine] = []

    async def replica(name: str) -> Engine:
        return await _replica(name, await stores(), engines)

    try:
        a = await replica("a")
        b = await replica("b")
        await a.create_workflow(load_workflow(GATE))
        ex = await a.start_execution("gate", {})
        seen: list[Any] = []
        watcher = asyncio.create_task(_collect(b.watch(ex.id), seen))
        await _until(
            lambda: a.store.notifications.listening and b.store.notifications.listening, "LISTEN"
        )
        while (await b.get_execution(ex.id)).state is not ExecutionState.WAITING:
            await asyncio.sleep(0.02)
        for engine in (a, b):
            _terminate(engine.store)
        await _until(
            lambda: not (a.store.notifications.listening or b.store.notifications.listening),
            "the losses",
        )

        await b.signal(ex.id, "go", {"ok": True})  # stored by b, applied by a
        await _until(
            lambda: any(e.type == "signal.received" for e in seen),
            "the signal's event on b's watch",
        )
        paused = await b.pause(ex.id)
        assert paused.state is ExecutionState.PAUSED
        resumed = await b.resume(ex.id)
        assert resumed.state is not ExecutionState.PAUSED
        await b.signal(ex.id, "more", None)
        final = await b.wait(ex.id, timeout=30)
        await asyncio.wait_for(watcher, 30)
        assert final.state is ExecutionState.SUCCEEDED
        # Every event once, in order, to the end: the pause, then the run again, both signals.
        types = [e.type for e in seen]
        assert [e.sequence for e in seen] == list(range(1, len(seen) + 1))
        assert types[-1] == "execution.succeeded" and types.count("signal.received") == 2
        assert "execution.running" in types[types.index("execution.paused") :]
        assert not (a.store.notifications.listening or b.store.notifications.listening)
    finally:
        for engine in engines:
            await engine.stop(grace=0)


@contextlib.asynccontextmanager
async def _sqlite_stores(tmp_path: Any) -> AsyncIterator[tuple[SqlStore, SqlStore]]:
    """Two stores on one SQLite file, as two processes sharing it: a writer and a reader."""
    url = f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    writer, reader = SqlStore(url), SqlStore(url)
    await writer.open()
    await reader.open()
    try:
        yield writer, reader
    finally:
        await writer.instances.close()
        await writer.close()
        await reader.close()


async def test_sqlite_stores_on_one_file_hear_each_other(tmp_path: Any) -> None:
    """No NOTIFY on SQLite: new signals, a watched execution's new events and a watched
    instance's new history are found by rowid (a Watch or WatchInstance in `agentrun serve`
    sees what `agentrun run` beside it committed)."""
    async with _sqlite_stores(tmp_path) as (writer, reader):
        heard, execution = await _pair(writer, reader)
        await asyncio.sleep(3 * sqlite_poll.SQLITE_POLL_SECONDS)  # the poller has its marks
        heard.clear()
        wanted = await _changes(writer, execution)
        await _until(lambda: wanted <= set(heard), "the rows found by the poller")


async def test_sqlite_hears_the_history_of_the_instances_watched_here(tmp_path: Any) -> None:
    """The poller announces the instances this process follows (`Store.watch`) whose history
    grew, from the pass after the watch began (a watcher subscribes before it reads the store:
    what was committed before it reads); an instance nobody here follows is not announced."""
    async with _sqlite_stores(tmp_path) as (writer, reader):
        heard: list[tuple[str, str]] = []
        watched: set[str] = set()
        reader.listen(lambda kind, key: heard.append((kind, key)))
        reader.watch(lambda: watched)
        for id in ("in-1", "in-2"):
            await writer.instances.create_instance(replace(_instance(1), id=id))
        channel = reader.notifications
        assert isinstance(channel, sqlite_poll.SqliteNotifications)
        await _until(lambda: channel.receiving, "the poller's marks")

        async def passes(count: int) -> None:
            wanted = channel.passes + count
            await _until(lambda: channel.passes >= wanted, f"{count} passes")

        async def step(id: str, sequence: int) -> None:
            entry = replace(_entry(sequence), instance_id=id)
            record = replace(_instance(sequence), id=id)
            await writer.instances.commit(MachineBatch(record, [entry]))

        await passes(2)
        heard.clear()
        await step("in-1", 2)
        await passes(2)
        assert heard == []
        watched.add("in-2")
        await step("in-1", 3)
        await passes(2)
        assert heard == []
        await step("in-2", 2)
        await _until(lambda: ("events", "in-2") in heard, "the watched instance's entry")
        await step("in-1", 4)
        await passes(2)
        assert ("events", "in-1") not in heard


async def test_sqlite_passes_read_new_rows_by_rowid_and_nothing_while_nothing_changed(
    tmp_path: Any,
) -> None:
    """A pass costs one `PRAGMA data_version` while no other connection committed, and the
    read of new events, history and signals seeks by rowid, each table's end too: no scan of
    a table or of an index."""
    async with _sqlite_stores(tmp_path) as (writer, reader):
        heard, execution = await _pair(writer, reader)
        channel = reader.notifications
        assert isinstance(channel, sqlite_poll.SqliteNotifications)
        await _until(lambda: channel.receiving, "the poller's marks")
        conn = reader.database.poll_connection()  # type: ignore[attr-defined]
        plan = conn.execute(f"EXPLAIN QUERY PLAN {sqlite_poll._NEW_ROWS}", (0,) * 6).fetchall()
        assert not [row for row in plan if "SCAN" in row[-1]], plan
        ranges = sum("USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)" in row[-1] for row in plan)
        assert ranges == 3, plan

        async def passes(count: int) -> None:
            wanted = channel.passes + count
            await _until(lambda: channel.passes >= wanted, f"{count} passes")

        await passes(2)  # past what _pair wrote
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        try:
            await passes(3)
            assert statements and set(statements) == {"PRAGMA data_version"}
            heard.clear()
            wanted = await _changes(writer, execution)
            await _until(lambda: wanted <= set(heard), "the new rows")
            assert any(s != "PRAGMA data_version" for s in statements)  # the read
        finally:
            conn.set_trace_callback(None)


async def test_sqlite_signals_stored_here_are_announced_here_only_through_notify(
    tmp_path: Any,
) -> None:
    """A signal stored through a store is its caller's to hand over (Engine.add_signal gives
    it to the run, or calls `notify` for one that runs elsewhere): the store's own poller
    does not announce its row again (an idle execution was reloaded for it), `notify`'s
    signal is heard here as PostgreSQL's LISTEN hears its own NOTIFY, and what another
    process stores, and this store's own events, are announced as before."""
    async with _sqlite_stores(tmp_path) as (other, here):
        heard, execution = await _pair(other, here)
        channel = here.notifications
        assert isinstance(channel, sqlite_poll.SqliteNotifications)
        await _until(lambda: channel.receiving, "the poller's marks")
        for execution_id in ("ex-2", "ex-3"):
            await here.create_execution(replace(execution, id=execution_id))

        async def passes(count: int) -> None:
            wanted = channel.passes + count
            await _until(lambda: channel.passes >= wanted, f"{count} passes")

        await passes(2)
        heard.clear()
        await here.add_signal(SignalRecord("ex-1", "go", None, "here-1", time.time()))
        await here.add_signal(SignalRecord("ex-2", "go", None, "here-2", time.time()))
        await here.notify("signal", "ex-2")
        await other.add_signal(SignalRecord("ex-3", "go", None, "other-1", time.time()))
        execution.last_sequence = 1
        await here.commit(
            Batch(execution=execution, events=[EventRecord("ex-1", 1, "x", time.time())])
        )
        await passes(2)
        assert sorted(set(heard)) == [("events", "ex-1"), ("signal", "ex-2"), ("signal", "ex-3")]
        assert heard.count(("signal", "ex-2")) == 1


async def test_sqlite_hears_the_events_of_the_executions_watched_here(tmp_path: Any) -> None:
    """The poller announces the executions this process follows (`Store.watch`: the hub's
    subscriptions, the only ones an `events` notification wakes) whose events grew; one
    nobody here follows is not announced. Event retention keeps the table's newest row, here
    one of an execution that ended long ago (SQLite would hand its rowid out again, below the
    poller's mark), and what comes next is heard."""
    async with _sqlite_stores(tmp_path) as (writer, reader):
        heard, execution = await _pair(writer, reader)
        channel = reader.notifications
        assert isinstance(channel, sqlite_poll.SqliteNotifications)
        await _until(lambda: channel.receiving, "the poller's marks")
        long_ago = time.time() - 10 * 86_400
        ended = ExecutionRecord(
            "ex-old", "t", "wf", 1, ExecutionState.RUNNING, input=None, created_at=long_ago
        )
        await writer.create_execution(ended)
        execution.last_sequence = 1
        await writer.commit(
            Batch(execution=execution, events=[EventRecord("ex-1", 1, "x", time.time())])
        )
        ended.state, ended.ended_at, ended.last_sequence = ExecutionState.SUCCEEDED, long_ago, 3
        events = [EventRecord("ex-old", n, "x", long_ago) for n in (1, 2, 3)]
        await writer.commit(Batch(execution=ended, events=events))
        await _until(lambda: ("events", "ex-1") in heard, "the watched execution's event")
        passes = channel.passes
        await _until(lambda: channel.passes >= passes + 2, "two passes")
        assert ("events", "ex-old") not in heard  # nobody here follows it

        assert await writer.maintain_events(now=time.time(), retention_seconds=86_400) == 2
        assert [e.sequence for e in await writer.list_events("ex-old")] == [3]
        heard.clear()
        execution.last_sequence = 2
        await writer.commit(
            Batch(execution=execution, events=[EventRecord("ex-1", 2, "x", time.time())])
        )
        await _until(lambda: ("events", "ex-1") in heard, "the next event")


async def test_a_group_commit_announces_the_events_it_wrote_and_only_those(
    stores: Callable[[], Any],
) -> None:
    """Many executions committed in one group, their ids together longer than one NOTIFY
    payload: each is announced once, in payloads under the limit; a stale batch of the same
    group (its lease moved) writes nothing and is not announced."""
    writer: SqlStore = await stores()
    reader: SqlStore = await stores()
    payloads: list[str] = []
    reader.listen(lambda kind, key: payloads.append(f"{kind}:{key}"))
    await _until(lambda: reader.notifications.listening, "LISTEN")
    # The catch-up pass after LISTEN came up announces what is running; let it finish.
    await _until(lambda: reader.notifications.catch_up_passes > 0, "the first pass")
    now = time.time()
    # Ids of 100 characters: 120 of them need two payloads at least.
    ids = [f"ex-{i:03d}-" + "x" * 93 for i in range(120)]
    for execution_id in ids:
        record = execution_record(execution_id, tenant="t", created_at=now)
        await writer.create_execution(record)
    claimed = {
        x.id: x for x in await writer.claim_executions("r1", lease_seconds=60, now=now, limit=200)
    }
    await writer.release_leases("r1", [ids[0]])
    (moved,) = await writer.claim_executions("r2", lease_seconds=60, now=now, limit=1)
    assert moved.id == ids[0]
    passes = -1
    while passes != reader.notifications.catch_up_passes:
        passes = reader.notifications.catch_up_passes
        await asyncio.sleep(2 * notifications.OUTAGE_POLL_SECONDS)
    payloads.clear()

    def batch(execution_id: str) -> Batch:
        record = claimed[execution_id]
        record.last_sequence = 1
        event = EventRecord(execution_id, 1, "node.running", time.time())
        return Batch(execution=record, events=[event], fence=("r1", record.lease_epoch))

    results = await asyncio.gather(*(writer.commit(batch(i)) for i in ids), return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["LeaseLost"] + ["NoneType"] * 119
    await _until(lambda: {f"events:{i}" for i in ids[1:]} <= set(payloads), "every announcement")
    await asyncio.sleep(0.2)
    assert sorted(p for p in payloads if p.startswith("events:")) == [
        f"events:{i}" for i in ids[1:]
    ]


def _quiet(store: SqlStore) -> dict[str, bool]:
    """Which of the store's direct writers run their statements without NOTIFY."""
    writers = store.database._writers  # type: ignore[attr-defined]
    return {name: state.quiet for name, state in writers.items()}


async def _probe(url: str, payloads: list[str]) -> Any:
    """A plain LISTEN connection (not an agentrun store's: writers do not count it)."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    await conn.add_listener(notifications.CHANNEL, lambda *args: payloads.append(args[-1]))
    return conn


async def test_writers_notify_no_events_while_no_other_replica_listens(
    stores: Callable[[], Any], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store whose LISTEN is the only one on the database writes turns and instance entries
    without their NOTIFY (every commit took the server's notification queue lock, and woke
    its own LISTEN for what it published itself); once another replica listens, they are
    announced again, and once it is gone, not."""
    monkeypatch.setattr(notifications, "PRESENCE_SECONDS", 0.2)
    payloads: list[str] = []
    probe = await _probe(pg_url, payloads)
    try:
        writer: SqlStore = await stores()
        writer.listen(lambda kind, key: None)
        await _until(lambda: writer.notifications.listening, "LISTEN")
        execution = execution_record("ex-1", tenant="t")
        await writer.create_execution(execution)
        await writer.instances.create_instance(_instance(1), [_entry(1)])
        sequence = 0

        async def commit() -> None:
            nonlocal sequence
            sequence += 1
            execution.last_sequence = sequence
            event = EventRecord("ex-1", sequence, "node.running", time.time())
            await writer.commit(Batch(execution=execution, events=[event]))
            await writer.instances.commit(
                MachineBatch(_instance(sequence + 1), [_entry(sequence + 1)])
            )

        await commit()  # connects both writers
        await _until(lambda: all(_quiet(writer).values()), "quiet writers")
        # What was sent before reaches the probe first (in commit order): then forget it.
        await probe.execute(f"NOTIFY {notifications.CHANNEL}, 'mark:'")
        await _until(lambda: "mark:" in payloads, "the probe's own mark")
        payloads.clear()
        await commit()
        await asyncio.sleep(0.3)
        assert [p for p in payloads if p.startswith("events:")] == []

        reader: SqlStore = await stores()
        heard: list[tuple[str, str]] = []
        reader.listen(lambda kind, key: heard.append((kind, key)))
        await _until(lambda: reader.notifications.listening, "the other replica's LISTEN")
        assert not any(_quiet(writer).values())
        await _until(lambda: reader.notifications.catch_up_passes > 0, "its catch-up pass")
        heard.clear()
        await commit()
        await _until(
            lambda: {("events", "ex-1"), ("events", "in-1")} <= set(heard), "the announcements"
        )
        # The reader may have heard them from its last catch-up pass first: the probe's
        # NOTIFY can come a moment later.
        await _until(lambda: {"events:ex-1", "events:in-1"} <= set(payloads), "the NOTIFYs")

        await reader.close()
        await _until(lambda: all(_quiet(writer).values()), "quiet writers once it is gone")
    finally:
        await probe.close()


# One step per signal: each turn between two signals commits on the execution writer.
STEPS = """
name: steps
nodes:
  - {id: w1, wait: {signal: s1}}
  - {id: w2, needs: [w1], wait: {signal: s2}}
  - {id: w3, needs: [w2], wait: {signal: s3}}
  - {id: w4, needs: [w3], wait: {signal: s4}}
  - {id: w5, needs: [w4], wait: {signal: s5}}
  - {id: w6, needs: [w5], wait: {signal: s6}}
  - {id: last, needs: [w6], pass: {value: 1}}
"""


@pytest.mark.parametrize("hears_hello", [True, False])
async def test_a_replica_that_begins_listening_mid_run_sees_every_event_live(
    stores: Callable[[], Any], monkeypatch: pytest.MonkeyPatch, hears_hello: bool
) -> None:
    """Replica a runs an execution with quiet writers (nobody else listens); replica b starts
    and watches it. Every step a commits from then on reaches b's Watch stream while the
    execution runs, each within seconds, all in order. Without `hears_hello`, a misses b's
    `listen:` and stays quiet until its next presence check: b, waiting for the quiet
    writers' lock, keeps catching up from the tables meanwhile."""
    monkeypatch.setattr(notifications, "PRESENCE_SECONDS", 0.2 if hears_hello else 3.0)
    engines: list[Engine] = []

    async def replica(name: str, store: SqlStore) -> Engine:
        return await _replica(name, store, engines)

    try:
        store_a: SqlStore = await stores()
        channel = store_a.notifications
        assert isinstance(channel, notifications.PostgresNotifications)
        if not hears_hello:
            receive = channel._on_payload

            def deaf(conn: Any, pid: int, name: str, payload: str) -> None:
                if not payload.startswith("listen:"):
                    receive(conn, pid, name, payload)

            monkeypatch.setattr(channel, "_on_payload", deaf)
        a = await replica("a", store_a)
        await a.create_workflow(load_workflow(STEPS))
        ex = await a.start_execution("steps", {})
        await a.signal(ex.id, "s1")
        await _until(lambda: _quiet(a.store)["executions"], "a's quiet execution writer")
        await a.signal(ex.id, "s2")

        b = await replica("b", await stores())
        seen: list[Any] = []
        watcher = asyncio.create_task(_collect(b.watch(ex.id), seen))
        for step in range(3, 7):
            await a.signal(ex.id, f"s{step}")
            await _until(
                lambda step=step: sum(e.type == "signal.received" for e in seen) == step,
                f"step {step} on b's watch",
                timeout=10.0,
            )
        assert b.store.notifications.listening and not any(_quiet(a.store).values())
        await asyncio.wait_for(watcher, 30)
        assert [e.sequence for e in seen] == list(range(1, len(seen) + 1))
        assert seen[-1].type == "execution.succeeded"
    finally:
        for engine in engines:
            await engine.stop(grace=0)


async def test_a_quiet_replica_whose_listen_drops_goes_loud_and_listens_again(
    stores: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its LISTEN lost, a quiet store's writers notify again (it would not hear a replica
    begin listening) and hand their lock back, so its own new LISTEN connection gets the
    lock it waits for: it listens again, and its writers go quiet again."""
    monkeypatch.setattr(notifications, "PRESENCE_SECONDS", 0.2)
    store: SqlStore = await stores()
    store.listen(lambda kind, key: None)
    await _until(lambda: store.notifications.listening, "LISTEN")
    execution = execution_record("ex-1", tenant="t")
    await store.create_execution(execution)
    execution.last_sequence = 1
    event = EventRecord("ex-1", 1, "node.running", time.time())
    await store.commit(Batch(execution=execution, events=[event]))
    await _until(lambda: _quiet(store)["executions"], "a quiet execution writer")
    first = store.notifications.listener_pid
    _terminate(store)
    await _until(lambda: not store.notifications.listening, "the loss of LISTEN")
    assert not any(_quiet(store).values())
    await _until(
        lambda: store.notifications.listening and store.notifications.listener_pid != first,
        "LISTEN on a new connection",
        timeout=10.0,
    )
    await _until(lambda: _quiet(store)["executions"], "a quiet execution writer again")


async def test_a_writer_whose_connection_the_server_ended_is_quiet_only_holding_the_lock(
    stores: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quiet writer's connection ended by the server (pg_terminate_backend, a proxy's idle
    limit), not by the store: the session's shared QUIET_LOCK went with it, and the new
    connection starts loud; it goes quiet again only taking the lock (the quiet flag kept
    across the reconnect let a replica that began listening take the lock at once and miss
    what the writer committed before it heard `listen:`)."""
    monkeypatch.setattr(notifications, "PRESENCE_SECONDS", 0.2)
    store: SqlStore = await stores()
    store.listen(lambda kind, key: None)
    await _until(lambda: store.notifications.listening, "LISTEN")
    execution = execution_record("ex-1", tenant="t")
    await store.create_execution(execution)

    async def commit(sequence: int) -> None:
        execution.last_sequence = sequence
        event = EventRecord("ex-1", sequence, "node.running", time.time())
        await store.commit(Batch(execution=execution, events=[event]))

    await commit(1)
    await _until(lambda: _quiet(store)["executions"], "a quiet execution writer")
    state = store.database._writers["executions"]  # type: ignore[attr-defined]
    _pg_admin(f"SELECT pg_terminate_backend({state.connection.get_server_pid()})")
    await _until(lambda: state.connection.is_closed(), "the writer's connection ended")
    await commit(2)  # on a new connection
    pid = state.connection.get_server_pid()
    listener = store.notifications.listener_pid
    await asyncio.sleep(4 * notifications.PRESENCE_SECONDS)  # presence checks run
    # LISTEN stayed up: the same backend (the catch-up loop's last pass after LISTEN came up
    # may still run meanwhile on a loaded machine, so its count says nothing here).
    assert store.notifications.listening and store.notifications.listener_pid == listener
    held = await store.database.transaction(  # type: ignore[attr-defined]
        lambda conn: conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = :pid"
                " AND objid = :key AND mode = 'ShareLock' AND granted"
            ),
            {"pid": pid, "key": notifications.QUIET_LOCK},
        ).scalar_one()
    )
    assert not _quiet(store)["executions"] or held == 1, (_quiet(store), held)
