"""Execution turns on PostgreSQL in one round trip: fence, update, node upserts, events, NOTIFY.

Through SQLAlchemy's asyncpg adapter a group of engine turns cost about seven round trips
(BEGIN, the fence's SELECT ... FOR UPDATE, UPDATE, node upsert, events INSERT, `pg_notify`,
COMMIT), each a wait on the network and the server's scheduler. Here the whole group is one
prepared statement on a connection of the writer's own (`PostgresDatabase.writer_fetchrow`),
run outside an explicit transaction: PostgreSQL commits it when it ends (one WAL flush), the
NOTIFY included, so the turn costs one round trip and one flush.

The statement, in the order its parts see each other (data-modifying CTEs see only what the
earlier ones RETURN):
- `locked`: the group's execution rows whose fence holds (owner and epoch as the batch says,
  or no fence), locked `FOR UPDATE` in id order, as `renew_leases` locks them, so the two never
  deadlock; a row another transaction changes meanwhile is re-checked on its newest version;
- `upd`: the execution UPDATEs, of locked rows only;
- `created`: new executions (`create_execution`), in (tenant, request_id, id) order as the
  transaction's way inserts them; a request id the tenant already used inserts nothing;
- the node upserts, event INSERTs, consumed signals and the signals the batches store
  (`Batch.signals`: each the next seq of its execution, in the batches' order) of the
  executions `upd` and `created` wrote, and nothing of the others;
- `pg_notify` for the executions whose events went in, in payloads under NOTIFY's limit
  (not in the quiet variant, run while no other replica listens: notifications.py).

A group of one turn of one existing execution (with rows of that execution only and no signal
consumed or stored: nearly every commit of a chain) takes the statement's `one` variant: its
execution's parameters (the fence, then the columns it changes) one row of scalars (`VALUES`)
where the group's are one-element arrays (`unnest`), built straight from its row
(`_one_params`), and no `b` and `locked` CTEs: the UPDATE's own WHERE holds the fence, which
PostgreSQL re-checks on the row's newest version when another transaction changed it meanwhile
(one row lock: no order to keep against renewals). asyncpg type-checks, sizes and buffers each
array; its nodes and events, often several rows, stay arrays.

So a stale batch (a replica that lost the lease) writes nothing while its neighbours commit.
Its item is answered `UNWRITTEN`, and so are a create whose request id was used (the
transaction's way then answers with the stored execution) and the batches this statement
does not cover (rows of another execution than the batch's, signals consumed without an
execution row, an execution's second batch in the group, and any later batch of an execution
one of those holds, so that each execution's batches still land in order): the group commit
then writes them the SQLAlchemy transaction's way, which refuses a stale batch with the same
error as ever (LeaseLost, or KeyError for an execution that does not exist). A statement PostgreSQL
refuses (a duplicate event, a value JSONB cannot hold) wrote nothing: the whole group goes
that way.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa

from agentrun.storage import schema as db
from agentrun.storage.group_commit import UNWRITTEN
from agentrun.storage.notifications import CHANNEL
from agentrun.storage.records import EventRecord, ExecutionRecord, NodeRecord

if TYPE_CHECKING:
    from agentrun.storage.sqldb_postgres import PostgresDatabase

__all__ = [
    "FENCE",
    "TurnRows",
    "TurnWriter",
    "announce",
    "array_columns",
    "fenced_update",
    "fetch_direct",
    "unnest",
    "unnests",
]

# NOTIFY payloads must stay under 8000 bytes: ids are cut into chunks of about this many.
_PAYLOAD_BYTES = 7000


class TurnRows(Protocol):
    """What the writer reads of a queued batch (`_Rows` in executions.py)."""

    execution: dict[str, Any] | None
    nodes: list[dict[str, Any]]
    events: list[dict[str, Any]]
    consumed: list[dict[str, Any]]
    fence: tuple[str, int] | None
    signals: list[dict[str, Any]]
    create: Any
    create_row: dict[str, Any] | None


class TurnWriter:
    """The group commit's `direct` writer for executions on PostgreSQL (see module doc)."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database

    async def __call__(self, batches: Sequence[TurnRows]) -> list[Any] | None:
        """Writes what the statement covers of the group in one statement; each batch's
        result (None: written, UNWRITTEN: not written), or None when PostgreSQL refused the
        statement (nothing written). StoreError when the database is unreachable."""
        if len(batches) == 1:
            one = _one_params(batches[0])
            if one is not None:
                key, args = one
                row = await fetch_direct(
                    self._database,
                    _statement(*key, one=True),
                    args,
                    "executions",
                    _statement(*key, notify=False, one=True),
                )
                if row is None:
                    return None
                return [None if row[0] else UNWRITTEN]
        covered = covered_batches(batches)
        if not any(covered):
            return [UNWRITTEN] * len(batches)
        params = _params([b for b, yes in zip(batches, covered, strict=True) if yes])
        if params is None:
            return None
        key, args = params
        row = await fetch_direct(
            self._database, _statement(*key), args, "executions", _statement(*key, notify=False)
        )
        if row is None:
            return None  # refused as a whole: the transaction path finds whose batch it was
        written, created, _ = row
        done = set(written or ())
        made = set(created or ())
        return [
            turn_result(batch, yes, done, made) for batch, yes in zip(batches, covered, strict=True)
        ]


async def fetch_direct(
    database: PostgresDatabase, sql: str, args: Sequence[Any], writer: str, quiet_sql: str
) -> Any:
    """The statement's one row from `writer`'s connection (`quiet_sql`, the statement without
    its NOTIFY, while no other replica listens: notifications.py, "Quiet writers"), or None
    when PostgreSQL refused it (nothing written: the group goes the transaction's way, which
    finds whose batch it was); StoreError when the database is unreachable."""
    import asyncpg

    try:
        return await database.writer_fetchrow(sql, args, writer=writer, quiet_sql=quiet_sql)
    except asyncpg.PostgresError:
        return None


def turn_result(batch: TurnRows, covered: bool, done: set[str], made: set[str]) -> Any:
    """A batch's result: None for a commit written, (record, True) for a new execution
    inserted, UNWRITTEN otherwise (a stale fence; a request id already used)."""
    if not covered:
        return UNWRITTEN
    if batch.create is not None:
        return (copy.copy(batch.create), True) if batch.create.id in made else UNWRITTEN
    assert batch.execution is not None
    return None if batch.execution["b_id"] in done else UNWRITTEN


def covered_batches(batches: Sequence[TurnRows]) -> list[bool]:
    """Which batches the statement writes: an execution's update with rows of that execution
    only, its first batch in the group, and none after a batch of it that is not covered."""
    seen: set[str] = set()
    covered: list[bool] = []
    for batch in batches:
        row = batch.execution
        if row is None and batch.create is not None and batch.create_row is not None:
            # A new execution with its first rows: the INSERT decides (a request id already
            # used inserts nothing, and the transaction's way then reads the stored one).
            id_ = batch.create.id
            yes = (
                id_ not in seen
                and not batch.consumed
                and not batch.signals
                and all(r["execution_id"] == id_ for r in batch.nodes)
                and all(r["execution_id"] == id_ for r in batch.events)
            )
            seen.add(id_)
            covered.append(yes)
            continue
        if row is None:
            # Not covered; its rows name the executions whose later batches must wait for it.
            held = {r["execution_id"] for r in batch.nodes + batch.events}
            seen |= held | {c["b_execution"] for c in batch.consumed}
            if batch.create is not None:
                seen.add(batch.create.id)
            covered.append(False)
            continue
        id_ = row["b_id"]
        yes = (
            batch.create is None
            and all(r["b_execution_id"] == id_ for r in batch.signals)
            and id_ not in seen
            and all(r["execution_id"] == id_ for r in batch.nodes)
            and all(r["execution_id"] == id_ for r in batch.events)
            and all(c["b_execution"] == id_ for c in batch.consumed)
        )
        seen.add(id_)
        if not yes:
            seen |= {r["execution_id"] for r in batch.nodes + batch.events}
        covered.append(yes)
    return covered


def _params(batches: Sequence[TurnRows]) -> tuple[tuple[Any, ...], list[Any]] | None:
    """The statement's shape (column names) and arguments for covered batches (`covered_batches`),
    or None if their rows differ in shape (then the transaction's way writes them)."""
    executions: list[dict[str, Any]] = []
    fences: list[tuple[str, int] | None] = []
    nodes: dict[tuple[str, str], dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    consumed: list[dict[str, Any]] = []
    signals: list[dict[str, Any]] = []
    creates: list[dict[str, Any]] = []
    for batch in batches:
        if batch.create_row is not None and batch.create is not None:
            creates.append(batch.create_row)
        else:
            assert batch.execution is not None
            executions.append(batch.execution)
            fences.append(batch.fence)
        for node in batch.nodes:
            nodes[(node["execution_id"], node["node_id"])] = node
        events += batch.events
        consumed += batch.consumed
        signals += batch.signals
    # The columns a batch changes; b_ keys are its parameters (the id, the fence).
    exec_cols = tuple(c for c in executions[0] if not c.startswith("b_")) if executions else ()
    # () when the group creates nothing: the statement then has no INSERT of executions.
    create_cols = tuple(creates[0]) if creates else ()
    if any(tuple(r) != create_cols for r in creates):
        return None
    # In key order, as the transaction's way inserts them: two replicas' groups never wait
    # on each other's unique keys in a cycle.
    creates.sort(key=lambda r: (r["tenant"], r["request_id"] or "", r["id"]))
    if any(tuple(c for c in row if not c.startswith("b_")) != exec_cols for row in executions):
        return None
    node_rows = list(nodes.values())
    node_cols = tuple(node_rows[0]) if node_rows else _NODE_COLUMNS
    event_cols = tuple(events[0]) if events else _EVENT_COLUMNS
    if any(tuple(r) != node_cols for r in node_rows) or any(tuple(r) != event_cols for r in events):
        return None
    args: list[Any] = [
        [row["b_id"] for row in executions],
        [fence is not None for fence in fences],
        [fence[0] if fence is not None else None for fence in fences],
        [fence[1] if fence is not None else None for fence in fences],
    ]
    args += array_columns(db.executions, exec_cols, executions)
    args += array_columns(db.nodes, node_cols, node_rows)
    args += array_columns(db.events, event_cols, events)
    args += array_columns(db.executions, create_cols, creates)
    if consumed:
        args += [
            [c["b_execution"] for c in consumed],
            [c["b_seq"] for c in consumed],
            [c["b_node"] for c in consumed],
        ]
    if signals:
        args += array_columns(db.signals, _SIGNAL_COLUMNS, [_unprefixed(r) for r in signals])
    return (exec_cols, node_cols, event_cols, create_cols, bool(consumed), bool(signals)), args


def _one_params(batch: TurnRows) -> tuple[tuple[Any, ...], list[Any]] | None:
    """`_params` of a group of `batch` alone, for the statement's `one` variant, when it is a
    turn of one existing execution with rows of that execution only, no signal consumed or
    stored (else None: the group's way): the execution's parameters (the fence, then its
    changes) the scalars the group's one-element arrays would hold, built without them; its
    nodes and events arrays as `_params` builds them."""
    row = batch.execution
    if row is None or batch.create is not None or batch.consumed or batch.signals:
        return None
    id_ = row["b_id"]
    nodes, events = batch.nodes, batch.events
    for r in nodes:
        if r["execution_id"] != id_:
            return None
    for r in events:
        if r["execution_id"] != id_:
            return None
    if len(nodes) > 1:
        # A node written twice in the turn: its last row, as `_params` keeps it.
        nodes = list({(r["execution_id"], r["node_id"]): r for r in nodes}.values())
    exec_cols = tuple(c for c in row if not c.startswith("b_"))
    node_cols = tuple(nodes[0]) if nodes else _NODE_COLUMNS
    event_cols = tuple(events[0]) if events else _EVENT_COLUMNS
    if any(tuple(r) != node_cols for r in nodes) or any(tuple(r) != event_cols for r in events):
        return None
    fence = batch.fence
    args: list[Any] = (
        [id_, True, fence[0], fence[1]] if fence is not None else [id_, False, None, None]
    )
    for name, convert in _converters(db.executions, exec_cols):
        value = row[name]
        args.append(value if convert is None or value is None else convert(value))
    args += array_columns(db.nodes, node_cols, nodes)
    args += array_columns(db.events, event_cols, events)
    return (exec_cols, node_cols, event_cols, (), False, False), args


def _unprefixed(row: dict[str, Any]) -> dict[str, Any]:
    """A signal's parameters (`b_NAME`, executions.py) by column name."""
    return {name[2:]: value for name, value in row.items()}


# The columns of a signal a turn stores (its seq is the statement's).
_SIGNAL_COLUMNS = ("execution_id", "name", "data", "signal_id", "created_at", "consumed_by")


# The columns of a group without nodes (or events), in the order their rows list them: the
# same statement then serves groups with and without.
_NODE_COLUMNS = tuple(f.name for f in dataclasses.fields(NodeRecord))
_EVENT_COLUMNS = tuple(f.name for f in dataclasses.fields(EventRecord))
_EXECUTION_COLUMNS = tuple(f.name for f in dataclasses.fields(ExecutionRecord))


def array_columns(
    table: sa.Table, names: Sequence[str], rows: Sequence[dict[str, Any]]
) -> list[Any]:
    """One array per column, JSON payloads as their text (cast to jsonb in the statement)."""
    out: list[Any] = []
    for name, convert in _converters(table, tuple(names)):
        values = [row[name] for row in rows]
        out.append(
            values if convert is None else [None if v is None else convert(v) for v in values]
        )
    return out


@functools.cache
def _converters(
    table: sa.Table, names: tuple[str, ...]
) -> tuple[tuple[str, Callable[[Any], Any] | None], ...]:
    """Each column's name and the conversion of its values (None: as they are), found once
    per table and column shape: looked up per column and turn, SQLAlchemy's column lookup and
    the type checks cost about as much as the arrays themselves."""
    return tuple((name, _CONVERT[_kind(table.c[name])]) for name in names)


def _kind(column: sa.Column[Any]) -> str:
    """The element type of the array a column's values travel in."""
    kind = column.type
    if isinstance(kind, sa.JSON):
        return "jsonb"
    if isinstance(kind, sa.Float):
        return "float8"
    if isinstance(kind, sa.Integer):
        return "int8"
    if isinstance(kind, sa.String):
        return "text"
    if isinstance(kind, sa.Boolean):
        return "bool"
    raise TypeError(f"no array type for column {column.table.name}.{column.name} ({kind})")


_CONVERT: dict[str, Callable[[Any], Any] | None] = {
    "jsonb": db.jsonb_dumps,
    "float8": float,
    "int8": None,
    "text": None,
    "bool": None,
}


# The parameters in front of a group's row changes: the row's id and its lease fence.
FENCE = (("b_id", "text"), ("b_fenced", "bool"), ("b_owner", "text"), ("b_epoch", "int8"))


def unnest(
    table: sa.Table,
    names: Sequence[str],
    first: int,
    alias: str,
    lead: Sequence[tuple[str, str]] = (),
    *,
    ordinality: str | None = None,
    scalar: bool = False,
) -> tuple[str, list[str]]:
    """`unnest($first::t[], ...) AS alias(col, ...)` over the `lead` parameters (name, element
    type: a fence) then the columns `names` of `table`, and each column's value cast to its
    type (jsonb from text); `ordinality`: the name of a last column, each row's place (from 1).
    `scalar`: one row of scalar parameters instead, `(VALUES ($first::t, ...)) AS alias(...)`."""
    kinds = [kind for _, kind in lead] + [
        "text" if _kind(table.c[n]) == "jsonb" else _kind(table.c[n]) for n in names
    ]
    columns = [name for name, _ in lead] + [f'"{n}"' for n in names]
    values = [
        f'{alias}."{n}"::jsonb' if _kind(table.c[n]) == "jsonb" else f'{alias}."{n}"' for n in names
    ]
    if scalar:
        params = ", ".join(f"${first + i}::{kind}" for i, kind in enumerate(kinds))
        return f"(VALUES ({params})) AS {alias}({', '.join(columns)})", values
    arrays = [f"${first + i}::{kind}[]" for i, kind in enumerate(kinds)]
    if ordinality is None:
        return f"unnest({', '.join(arrays)}) AS {alias}({', '.join(columns)})", values
    columns.append(ordinality)
    return f"unnest({', '.join(arrays)}) WITH ORDINALITY AS {alias}({', '.join(columns)})", values


def unnests(
    *parts: tuple[sa.Table, Sequence[str], str, Sequence[tuple[str, str]]],
) -> tuple[list[tuple[str, list[str]]], int]:
    """`unnest` of each (table, column names, alias, lead) over a statement's parameters in
    order from $1, and the number of the parameter after them."""
    out: list[tuple[str, list[str]]] = []
    first = 1
    for table, names, alias, lead in parts:
        out.append(unnest(table, names, first, alias, lead))
        first += len(lead) + len(names)
    return out, first


def fenced_update(table: str, rows: str, changes: str, condition: str = "TRUE") -> str:
    """The CTEs `b` (the batches' rows: `rows`, an `unnest` with the `FENCE` in front),
    `locked` (the rows of `table` whose fence holds and `condition`, on `r`, too: locked in id
    order, as renewals lock them, so the two never deadlock) and `upd` (`changes` SET on
    those, RETURNING their ids)."""
    return f"""b AS MATERIALIZED (
    SELECT * FROM {rows}
), locked AS MATERIALIZED (
    SELECT r.id FROM {table} r JOIN b ON b.b_id = r.id
    WHERE (NOT b.b_fenced OR (r.owner = b.b_owner AND r.lease_epoch = b.b_epoch))
        AND ({condition})
    ORDER BY r.id
    FOR UPDATE OF r
), upd AS (
    UPDATE {table} SET {changes}
    FROM b JOIN locked l ON l.id = b.b_id
    WHERE {table}.id = b.b_id
    RETURNING {table}.id
)"""


def announce(ids: str) -> str:
    """A query that sends `events:ID,...` for the ids `ids` selects (a column `id`), in
    payloads under NOTIFY's limit; a statement's CTE, which its final SELECT must read (a CTE
    nobody reads is not run), sent when the statement commits."""
    return f"""SELECT pg_notify('{CHANNEL}', 'events:' || string_agg(id, ',' ORDER BY id))
    FROM (
        SELECT id, (sum(length(id) + 1) OVER (ORDER BY id) - 1) / {_PAYLOAD_BYTES} AS chunk
        FROM ({ids}) ids
    ) chunked
    GROUP BY chunk"""


@functools.cache
def _statement(
    exec_cols: tuple[str, ...],
    node_cols: tuple[str, ...],
    event_cols: tuple[str, ...],
    create_cols: tuple[str, ...],
    consumed: bool,
    signals: bool,
    *,
    notify: bool = True,
    one: bool = False,
) -> str:
    """The one statement of a group of this shape (see the module doc); its result is the ids
    of the executions written. Only the parts the group needs: without new executions
    (`create_cols` empty), signals consumed or signals stored, the statement has no such CTE
    nor their parameters (a turn of a running execution, nearly every one, then sends 39
    arrays, not 68, and its plan has no INSERT or UPDATE it would run on no rows). Without
    `notify`, the quiet writer's variant: no NOTIFY of the events written. `one`: the variant
    of one turn of one execution (`_one_params`), its execution's parameters scalars, fenced
    in the UPDATE's own WHERE (module doc)."""
    parts, first = unnests(
        (db.executions, exec_cols, "b", FENCE),
        (db.nodes, node_cols, "n", ()),
        (db.events, event_cols, "v", ()),
        *([(db.executions, create_cols, "c", ())] if create_cols else []),
    )
    (exec_from, exec_values), (node_from, node_values), (event_from, event_values) = parts[:3]
    node_keys = {c.name for c in db.nodes.primary_key.columns}
    node_set = ", ".join(f'"{n}" = EXCLUDED."{n}"' for n in node_cols if n not in node_keys)
    exec_set = ", ".join(f'"{n}" = {v}' for n, v in zip(exec_cols, exec_values, strict=True))
    # A batch that changes no column of its execution still takes the lock and the fence.
    exec_set = exec_set or "id = executions.id"
    if one:
        exec_from = unnest(db.executions, exec_cols, 1, "b", FENCE, scalar=True)[0]
        # One row, one row lock: no order to keep against renewals, and PostgreSQL re-checks
        # this WHERE on the row's newest version when another transaction changed it
        # meanwhile, as `locked` re-checks its own.
        ctes = [
            f"""upd AS (
    UPDATE executions SET {exec_set}
    FROM {exec_from}
    WHERE executions.id = b.b_id
        AND (NOT b.b_fenced OR (executions.owner = b.b_owner AND executions.lease_epoch = b.b_epoch))
    RETURNING executions.id
)"""
        ]
    else:
        ctes = [fenced_update("executions", exec_from, exec_set)]
    written = "SELECT id FROM upd"
    if create_cols:
        create_from, create_values = parts[3]
        ctes.append(f"""created AS (
    INSERT INTO executions ({", ".join(f'"{n}"' for n in create_cols)})
    SELECT {", ".join(create_values)} FROM {create_from}
    ON CONFLICT (tenant, request_id) DO NOTHING
    RETURNING executions.id
)""")
        written += " UNION ALL SELECT id FROM created"
    ctes.append(f"""written AS (
    {written}
), nodes_written AS (
    INSERT INTO nodes ({", ".join(f'"{n}"' for n in node_cols)})
    SELECT {", ".join(node_values)} FROM {node_from}
    WHERE n.execution_id IN (SELECT id FROM written)
    ON CONFLICT (execution_id, node_id) {f"DO UPDATE SET {node_set}" if node_set else "DO NOTHING"}
), events_written AS (
    INSERT INTO events ({", ".join(f'"{n}"' for n in event_cols)})
    SELECT {", ".join(event_values)} FROM {event_from}
    WHERE v.execution_id IN (SELECT id FROM written)
    RETURNING execution_id
)""")
    if consumed:
        ctes.append(f"""consumed AS (
    UPDATE signals SET consumed_by = c.node
    FROM unnest(${first}::text[], ${first + 1}::int8[], ${first + 2}::text[])
        AS c(execution_id, seq, node)
    WHERE signals.execution_id = c.execution_id AND signals.seq = c.seq
        AND c.execution_id IN (SELECT id FROM upd)
)""")
        first += 3
    if signals:
        # The signals the batches store: their order in the arrays is the order of their seqs.
        signal_from, signal_values = unnest(
            db.signals, _SIGNAL_COLUMNS, first, "s", ordinality="ord"
        )
        ctes.append(f"""signals_written AS (
    INSERT INTO signals (seq, {", ".join(f'"{n}"' for n in _SIGNAL_COLUMNS)})
    SELECT coalesce((SELECT max(x.seq) FROM signals x WHERE x.execution_id = s.execution_id), 0)
            + row_number() OVER (PARTITION BY s.execution_id ORDER BY s.ord),
        {", ".join(signal_values)}
    FROM {signal_from}
    WHERE s.execution_id IN (SELECT id FROM upd)
)""")
    if notify:
        ctes.append(f"""announced AS (
    {announce("SELECT DISTINCT execution_id AS id FROM events_written")}
)""")
    created = "(SELECT array_agg(id) FROM created)" if create_cols else "NULL::text[]"
    # A data-modifying CTE runs whether the SELECT reads it or not; `announced` must be read.
    announced = "(SELECT count(*) FROM announced)" if notify else "0"
    return f"""
WITH {", ".join(ctes)}
SELECT (SELECT array_agg(id) FROM upd), {created}, {announced}
"""
