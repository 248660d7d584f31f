"""Engine turns on SQLite straight through sqlite3: the group commit's `direct` writer.

Through the transaction's way (`SqlExecutions._apply`) a group of turns went through
SQLAlchemy's connection and transaction objects, a statement lookup and a cursor per
statement, and the merge of every batch's rows, on the loop's thread for each small group:
more CPU than the statements themselves. Here the group is one transaction on the write
connection's sqlite3 handle (`SqliteDatabase.turn_transaction`: on the loop's thread or in
the writer thread, as any group commit), with plain SQL built once per column shape (sqlite3's
statement cache keeps each compiled, sqlite_turn_sql.py):
- a batch that only appends events to an unfinished execution (its last event's sequence is
  the record's `last_sequence`) first reads the row (`moved_sql`, under the transaction's write
  lock, BEGIN IMMEDIATE: nothing moves it before the commit; a turn written at once, as the
  condition of its events' INSERT, `_events_if_moved`) with the fence and every other
  column the batch carries as stored: when it is found, the row is left as it is, and readers
  take the newest event's sequence as the execution's (migration 0026,
  `schema.FOLDED_LAST_SEQUENCE`): a chain step writes 5 WAL pages, not 6 (step_floor.py's
  chain, 7 Dec 2026: 5.96 -> 4.98 frames a step, ~4 µs less CPU a step);
- otherwise each batch's execution UPDATE, the fence folded in (`... AND owner = ? AND lease_epoch = ?`),
  its indexed columns (state, ended_at) not assigned but required to be what the batch says
  (`AND "state" IS ? AND "ended_at" IS ?`): a step that keeps them is this one UPDATE, and only
  when it changes no row (they changed, or a stale fence, or an unknown execution) a second one
  assigns them too (`INDEXED`: an index entry is rewritten for every column assigned, so a
  step that kept them wrote two index pages more to the WAL); a batch whose second UPDATE
  changes no row either writes nothing else;
- the node upserts and event INSERTs of the batches whose read or UPDATE held, each as few
  multi-row statements for the group (`ManyRows`, sqlite_rows.py: sqlite3 releases the GIL
  around each statement's step, which `executemany` takes once per row), and their consumed
  signals, one `executemany`.
SQLite does not check these rows' references to their execution (`checked`: the connection's
`PRAGMA foreign_keys` is off for them): a batch writes rows of its own execution only (`_own_rows`,
`covered_batches`), and only after its UPDATE changed that execution's row (or its INSERT made
it) in the same transaction, so each check would find the row just found.

A turn written at once (`write_now`, most turns of an engine on an idle loop) is written from
its records (`write_turn`): each row's parameters are one generated tuple expression over the
record's fields (`maker`), with no row dict in between, which the group commit's way needs
(its batches are snapshots taken when queued: `_Rows`).

A new execution with its first turn (a start: `create_execution`) is its row's INSERT in place
of the UPDATE (`ON CONFLICT (tenant, request_id) DO NOTHING` when it has a request id, its row
count read: a used request id writes nothing of its batch), then the same rows. On SQLite a
start is queued as its records, not rows (executions.py `_Rows.of_records`: nothing later
changes them before its commit is done), and written from them as `write_turn` writes a turn's
(`_CREATE_PARAMS`, `_NODE_PARAMS`, `_EVENT_PARAMS`); its rows are made only if the transaction's
way takes it. The group's starts are one multi-row INSERT without ON CONFLICT (`_insert_creates`):
a used request id makes SQLite refuse its row, the rows before it stay (OR FAIL), and the rest
go one by one as above (the group's other statements are of other executions: covered_batches
takes one batch per execution).

The values are encoded by the columns' own bind processors (`RowEncoder`, as SQLAlchemy binds
them) and the statements name the same columns as the transaction's way: the rows written are
the same. Which batches it covers is PostgreSQL's rule (pg_turns.py `covered_batches`): a batch
whose row did not change (or a start whose request id is used), and what the rule leaves out
are answered UNWRITTEN, and the group commit writes them the transaction's way, which refuses a
stale batch with LeaseLost and an unknown execution with KeyError, and answers a repeated start
with the stored execution, as ever.
A statement SQLite refuses (a duplicate event) is rolled back with everything before it: the
whole group then goes the transaction's way, which finds whose batch it was.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from agentrun.storage import schema as db
from agentrun.storage.group_commit import UNWRITTEN
from agentrun.storage.pg_turns import TurnRows, covered_batches, turn_result
from agentrun.storage.records import (
    RUN_FIELDS,
    Batch,
    EventRecord,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
)
from agentrun.storage.sqldb_sqlite import SqliteDatabase
from agentrun.storage.sqlite_rows import ManyRows, RowEncoder
from agentrun.storage.sqlite_turn_sql import (
    CONSUME,
    INSERT_SIGNAL,
    SIGNAL_COLUMNS,
    SIGNAL_ENCODER,
    Slim,
    fields,
    insert_events,
    insert_execution,
    maker,
    marks,
    quoted,
    update_plan,
    upsert_nodes,
)

__all__ = ["SqliteTurnWriter"]

_TERMINAL = frozenset(state.value for state in ExecutionState if state.terminal)


class SqliteTurnWriter:
    """The group commit's `direct` writer for executions on SQLite (see module doc)."""

    def __init__(self, database: SqliteDatabase) -> None:
        self._database = database
        # Whether the database's writes at once wait for the loop to go round (`write_now`).
        self.streak_spent = database.streak_spent

    def write_now(self, batch: Batch) -> bool:
        """Writes one execution's turn (not a start) now, without a coroutine, when the group
        commit would write it alone on the loop's thread anyway (`SqliteDatabase.write_now`;
        the caller checks its writer's queue), straight from its records (`write_turn`).
        Whether it was written; False: nothing written (not now, rows of another execution,
        stale, refused, unavailable), and the group commit takes it and gives its caller the
        usual outcome (LeaseLost, KeyError, ...)."""
        execution = batch.execution
        if execution is None or not _own_rows(batch, execution.id):
            return False
        done = self._database.write_now(functools.partial(write_turn, batch), checked=True)
        return done is not None and done[0]

    async def __call__(self, batches: Sequence[TurnRows]) -> list[Any] | None:
        """Writes the covered batches in one transaction; each batch's result (None: written,
        UNWRITTEN: not written), or None when SQLite refused a statement (nothing written).
        StoreError when the database is unavailable."""
        covered = covered_batches(batches)
        mine = [batch for batch, yes in zip(batches, covered, strict=True) if yes]
        if not mine:
            return [UNWRITTEN] * len(batches)
        try:
            written = await self._database.turn_transaction(
                functools.partial(write_turns, mine), items=len(mine), checked=True
            )
        except sqlite3.Error:
            return None  # rolled back: the transaction's way finds whose batch it was
        if written is None:
            return None
        done, made = written
        return [turn_result(b, yes, done, made) for b, yes in zip(batches, covered, strict=True)]


def write_turns(
    batches: Sequence[TurnRows], conn: sqlite3.Connection
) -> tuple[set[str], set[str]] | None:
    """Writes `batches` (each a new execution's INSERT or an UPDATE of its own execution, with
    rows of that execution only) inside the caller's transaction; the ids of the executions
    updated and of those created, or None when the rows differ in shape (checked first:
    nothing written then, the transaction's way takes them)."""
    if not (_same_shape(b.nodes for b in batches) and _same_shape(b.events for b in batches)):
        return None
    done: set[str] = set()
    made: set[str] = set()
    nodes: dict[tuple[str, str], dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    consumed: list[dict[str, Any]] = []
    signals: list[dict[str, Any]] = []
    # Creates queued as their records (executions.py `_Rows.of_records`): their rows' values
    # straight from the records, as `write_turn` takes a turn's.
    new_nodes: list[NodeRecord] = []
    new_events: list[EventRecord] = []
    starts: list[Any] = []  # creates queued as records, not inserted yet (`_insert_creates`)
    for batch in batches:
        create, row = batch.create, batch.create_row
        if getattr(batch, "records", None) is not None:
            starts.append(batch)
            continue
        if create is not None and row is not None:
            if starts:  # the creates before it first: whose request id is used stays the same
                _insert_creates(conn, starts, made, new_nodes, new_events)
                starts = []
            sql, encoder = insert_execution(tuple(row), create.request_id is not None)
            if conn.execute(sql, encoder.params((row,))[0]).rowcount != 1:
                continue  # its request id is used: the transaction's way reads the stored one
            made.add(create.id)
        else:
            row = batch.execution
            assert row is not None
            fence = batch.fence
            plan = update_plan(tuple(row), fence is not None)
            tail = fence or ()
            kept = (*plan.kept.params((row,))[0], *tail)
            appended, moved = batch.events, plan.moved_sql
            if (
                moved is not None
                and appended
                and appended[-1]["sequence"] == row["last_sequence"]
                and row["state"] not in _TERMINAL
                and conn.execute(moved, kept).fetchone() is not None
            ):
                pass  # only its last sequence moved: the row stays, readers fold it in
            elif conn.execute(plan.kept_sql, kept).rowcount != 1:
                # The indexed columns change (or the row is stale or unknown): assign them too.
                if plan.full_sql is None or plan.full is None:
                    continue  # stale or unknown: nothing of this batch
                full = (*plan.full.params((row,))[0], *tail)
                if conn.execute(plan.full_sql, full).rowcount != 1:
                    continue  # stale or unknown: nothing of this batch
            done.add(row["b_id"])
        for node in batch.nodes:
            nodes[(node["execution_id"], node["node_id"])] = node
        events += batch.events
        consumed += batch.consumed
        signals += batch.signals
    if starts:
        _insert_creates(conn, starts, made, new_nodes, new_events)
    if nodes:
        _many(conn, upsert_nodes, list(nodes.values()))
    if events:
        _many(conn, insert_events, events)
    if new_nodes:
        _NODE_ROWS.run(conn, list(map(_NODE_PARAMS, new_nodes)))
    if new_events:
        _EVENT_ROWS.run(conn, list(map(_EVENT_PARAMS, new_events)))
    if consumed:
        conn.executemany(CONSUME, [(c["b_node"], c["b_execution"], c["b_seq"]) for c in consumed])
    if signals:  # each takes the seq after the one before: one by one (executemany is)
        conn.executemany(INSERT_SIGNAL, SIGNAL_ENCODER.params(signals))
    return done, made


def write_turn(batch: Batch, conn: sqlite3.Connection) -> bool:
    """Writes one execution's turn (`write_now`: its execution record set, every row of that
    execution) from its records, inside the caller's transaction: the statements and values of
    `write_turns` for a group of this one batch. Whether it was written (False: the fenced
    read found no row and the UPDATE changed none, stale or unknown, and nothing else was
    written)."""
    execution = batch.execution
    assert execution is not None
    # One cursor for the turn's statements: `conn.execute` makes one per call (~0.4 µs).
    cursor = conn.cursor()
    fence = batch.fence
    tail = fence or ()
    if _EXECUTION_NULL.none(execution):
        if execution.vars == _EMPTY and execution.labels == _EMPTY:  # nearly always
            plan = _EMPTY_PLANS[fence is not None]
            kept = _EMPTY_PARAMS(execution)
        else:
            plan = _SLIM_PLANS[fence is not None]
            kept = _EXECUTION_NULL.params(execution)
    else:
        plan = _PLANS[fence is not None]
        kept = _KEPT_PARAMS(execution)
    events, moved = batch.events, plan.moved_sql
    if (
        events
        and moved is not None
        and len(events) <= _MOVED_EVENTS
        and events[-1].sequence == execution.last_sequence
        and not execution.state.terminal
        and cursor.execute(
            _events_if_moved(moved, len(events)),
            (*[value for event in events for value in _EVENT_PARAMS(event)], *kept, *tail),
        ).rowcount
    ):
        events = []  # in, with the row: it stays (only its last sequence moved)
    elif cursor.execute(plan.kept_sql, (*kept, *tail)).rowcount != 1:
        # The indexed columns change (or the row is stale or unknown): assign them too.
        assert plan.full_sql is not None  # the row has indexed columns: state, ended_at
        if cursor.execute(plan.full_sql, (*_FULL_PARAMS(execution), *tail)).rowcount != 1:
            return False
    # One statement per row here, not `ManyRows`: for a turn's few rows (2 nodes, 2 events)
    # that cost ~0.5 µs more CPU (17.0 vs 16.5 µs a turn), and this is mostly the loop's thread.
    nodes = batch.nodes
    if nodes:
        none = _NODE_NULL.none
        if all(map(none, nodes)):
            cursor.executemany(_NODE_NULL.sql, map(_NODE_NULL.params, nodes))
        else:
            cursor.executemany(_NODES_SQL, map(_NODE_PARAMS, nodes))
    if events:
        cursor.executemany(_EVENTS_SQL, map(_EVENT_PARAMS, events))
    if batch.consumed_signals:
        cursor.executemany(CONSUME, [(n, e, s) for e, s, n in batch.consumed_signals])
    if batch.signals:  # each takes the seq after the one before: one by one (executemany is)
        cursor.executemany(INSERT_SIGNAL, map(_SIGNAL_PARAMS, batch.signals))
    return True


# At most this many events go in with their execution's read (`_events_if_moved`): one
# statement for each count in sqlite3's statement cache, and SQLite's parameter limit.
_MOVED_EVENTS = 8


@functools.cache
def _events_if_moved(moved: str, count: int) -> str:
    """The INSERT of `count` events (`_EVENT_PARAMS` each), then `moved`'s parameters: they go
    in only if `moved` finds the row. One statement and one SQLite step where the read and the
    events' `executemany` were 1 + `count` (callgrind, a chain step's statements replayed on
    /dev/shm: 171,029 -> 164,087 instructions a step)."""
    rows = ", ".join([f"({marks(fields(EventRecord))})"] * count)
    columns = quoted(fields(EventRecord))
    return f"INSERT INTO events ({columns}) SELECT * FROM (VALUES {rows}) WHERE EXISTS ({moved})"


def _insert_creates(
    conn: sqlite3.Connection,
    starts: list[Any],
    made: set[str],
    nodes: list[NodeRecord],
    events: list[EventRecord],
) -> None:
    """Inserts the executions of `starts` (creates queued as their records), in their order;
    adds the ids of those inserted to `made` and their rows to `nodes` and `events`. A start
    whose request id is used inserts nothing (the transaction's way reads the stored one).
    Two or more: multi-row INSERTs without ON CONFLICT (`ManyRows`: OR FAIL); only when SQLite
    refuses a row (a used request id) are it and the statement's rows after it inserted one by
    one, each ON CONFLICT DO NOTHING with its row count read (those before it went in: the
    connection's change count tells how many)."""
    params = [_CREATE_PARAMS(batch.create) for batch in starts]
    start = 0
    for sql, values, count in _CREATE_ROWS.chunks(params):
        chunk, stop = starts[start : start + count], start + count
        went = _inserted(conn, sql, values) if count > 1 else 0
        written = chunk[:went]
        # One by one from the refused row; a start whose request id is used writes nothing.
        written += [
            batch
            for batch, row in zip(chunk[went:], params[start + went : stop], strict=True)
            if conn.execute(_CREATE_SQL[batch.create.request_id is not None], row).rowcount == 1
        ]
        start = stop
        for batch in written:
            made.add(batch.create.id)
            nodes += batch.records[0]
            events += batch.records[1]


def _inserted(conn: sqlite3.Connection, sql: str, values: Sequence[Any]) -> int:
    """How many rows of the multi-row INSERT (OR FAIL) went in: all, or those before the one
    SQLite refused (a used request id, or another unique key)."""
    before = conn.total_changes
    try:
        conn.execute(sql, values)
    except sqlite3.IntegrityError:
        pass
    return conn.total_changes - before


def _own_rows(batch: Batch, execution_id: str) -> bool:
    """Whether every row of `batch` is of its own execution (`covered_batches`' rule for a
    group of one)."""
    for node in batch.nodes:  # loops, not all() of generators: a step's turn checks five rows
        if node.execution_id != execution_id:
            return False
    for event in batch.events:
        if event.execution_id != execution_id:
            return False
    # Most turns consume and store no signal: no generator made for empty lists.
    consumed, signals = batch.consumed_signals, batch.signals
    return (not consumed or all(c[0] == execution_id for c in consumed)) and (
        not signals or all(s.execution_id == execution_id for s in signals)
    )


def _same_shape(groups: Any) -> bool:
    """Whether the rows of all `groups` have the same keys (one statement takes them all:
    its encoder picks each row's values by name, so their order does not matter)."""
    names: Any = None
    for rows in groups:
        for row in rows:
            if names is None:
                names = row.keys()
            elif row.keys() != names:
                return False
    return True


def _many(
    conn: sqlite3.Connection,
    statement: Callable[[tuple[str, ...]], tuple[str, RowEncoder]],
    rows: list[dict[str, Any]],
) -> None:
    """The INSERTs of `statement` for rows of one shape (`_same_shape`), multi-row."""
    sql, encoder = statement(tuple(rows[0]))
    _many_rows(sql).run(conn, encoder.params(rows))


_many_rows = functools.cache(ManyRows)


# The record path (`write_turn`): the keys of executions.py's execution rows (the fields a
# run changes, then `b_id`), and the statements `write_turns` runs for rows of these keys.
_EXECUTION_KEYS = (*RUN_FIELDS, "b_id")
_KEPT_PARAMS = maker(db.executions, update_plan(_EXECUTION_KEYS, False).kept.names)
_FULL_PARAMS = maker(db.executions, update_plan(_EXECUTION_KEYS, False).full.names)  # type: ignore[union-attr]
_NODES_SQL = upsert_nodes(fields(NodeRecord))[0]
_NODE_PARAMS = maker(db.nodes, fields(NodeRecord))
_EVENTS_SQL = insert_events(fields(EventRecord))[0]
_EVENT_PARAMS = maker(db.events, fields(EventRecord))
_SIGNAL_PARAMS = maker(db.signals, SIGNAL_COLUMNS)
# A create queued as its records: its execution's INSERT (by whether it has a request id).
_CREATE_SQL = (
    insert_execution(fields(ExecutionRecord), False)[0],
    insert_execution(fields(ExecutionRecord), True)[0],
)
_CREATE_PARAMS = maker(db.executions, fields(ExecutionRecord))
_NODE_ROWS, _EVENT_ROWS, _CREATE_ROWS = map(ManyRows, (_NODES_SQL, _EVENTS_SQL, _CREATE_SQL[0]))


_EXECUTION_NULLS = ("output", "error", "deadline", "usage", "ended_at")
_EXECUTION_NULL = Slim(
    _EXECUTION_NULLS,
    update_plan(_EXECUTION_KEYS, False, _EXECUTION_NULLS).kept_sql,
    db.executions,
    update_plan(_EXECUTION_KEYS, False, _EXECUTION_NULLS).kept.names,
)
# `write_turn`'s UPDATEs, unfenced and fenced, found without `update_plan`'s cache lookup (which
# hashed its key, tuples of 16 names, at every turn).
_PLANS = (update_plan(_EXECUTION_KEYS, False), update_plan(_EXECUTION_KEYS, True))
_SLIM_PLANS = (
    update_plan(_EXECUTION_KEYS, False, _EXECUTION_NULLS),
    update_plan(_EXECUTION_KEYS, True, _EXECUTION_NULLS),
)
# And with an execution's vars and labels empty objects (nearly always), '{}' (the text
# `maker` writes for them) as literals: two text parameters fewer, each a copy by
# sqlite3_bind_text and a trip through sqlite3's binding.
_EMPTY: dict[str, Any] = {}
_EMPTIES = ("vars", "labels")
_EMPTY_PLANS = (
    update_plan(_EXECUTION_KEYS, False, _EXECUTION_NULLS, _EMPTIES),
    update_plan(_EXECUTION_KEYS, True, _EXECUTION_NULLS, _EMPTIES),
)
_EMPTY_PARAMS = maker(db.executions, _EMPTY_PLANS[0].kept.names)
_NODE_NULLS = ("input", "error", "skip_reason", "wake_at", "usage", "wait", "exhausted")
# Left out of the INSERT, they take their default: NULL only if they have none.
assert all(db.nodes.c[name].server_default is None for name in _NODE_NULLS)
_NODE_NULL = Slim(
    _NODE_NULLS,
    upsert_nodes(fields(NodeRecord), _NODE_NULLS)[0],
    db.nodes,
    upsert_nodes(fields(NodeRecord), _NODE_NULLS)[1].names,
)
