"""The SQL schema of the store, as SQLAlchemy Core tables.

This is the target the Alembic migrations must reach: a test migrates an empty database and
compares it with this metadata, so the two cannot drift apart silently. Times are epoch seconds
in double precision (a float4 would lose seconds); payloads are JSON: JSONB on PostgreSQL, JSON
text in a TEXT column on SQLite (see `JsonText`).
Strings carry no length: ids and names are bounded by the API layer, not by the schema.
The mapping between records and rows lives here too, next to the columns it must match.

The tables are in modules named for what they hold, all on one `metadata`: the JSON column type,
its encoders and the metadata in schema_base.py, the state machine tables in machine_tables.py,
the others here. This module re-exports them all: the store names every table `schema.NAME`.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa

from agentrun.storage.machine_tables import sm_history, sm_inputs, sm_instances, sm_timers
from agentrun.storage.records import (
    EventRecord,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
    NodeState,
    SignalRecord,
    WorkflowRecord,
)
from agentrun.storage.schema_base import Json, JsonText, json_text, jsonb_dumps, metadata

__all__ = [
    "Json",
    "JsonText",
    "MappedRow",
    "json_text",
    "jsonb_dumps",
    "metadata",
    "sm_history",
    "sm_inputs",
    "sm_instances",
    "sm_timers",
]

workflows = sa.Table(
    "workflows",
    metadata,
    sa.Column("tenant", sa.String(), primary_key=True),
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("spec", Json, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    # Deleted workflows stay for the executions that run them; lookups skip them.
    sa.Column("deleted_at", sa.Double),
)

executions = sa.Table(
    "executions",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("workflow", sa.String(), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("input", Json),
    sa.Column("output", Json),
    sa.Column("error", Json),
    sa.Column("vars", Json),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("request_id", sa.String()),
    sa.Column("request_hash", sa.String()),
    sa.Column("parent_id", sa.String()),
    sa.Column("parent_node", sa.String()),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("started_at", sa.Double),
    sa.Column("ended_at", sa.Double),
    sa.Column("deadline", sa.Double),
    # The newest event's sequence; on SQLite it may be behind it (`FOLDED_LAST_SEQUENCE`).
    sa.Column("last_sequence", sa.Integer, nullable=False, server_default="0"),
    sa.Column("labels", Json),
    sa.Column("usage", Json),
    # The replica that runs the execution, until when, and the fencing epoch its commits carry.
    sa.Column("owner", sa.String()),
    sa.Column("lease_epoch", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lease_expires_at", sa.Double),
    # NULL request ids never collide, so only idempotent starts are constrained.
    sa.UniqueConstraint("tenant", "request_id"),
    sa.Index(None, "tenant", "id"),
    sa.Index(None, "tenant", "workflow", "id"),
    # Executions by state, and the unfinished ones by owner: a replica's own (renewals) or
    # every other's (`next_lease_expiry`, every lease/3) without reading the rest (0019).
    sa.Index(None, "state", "owner"),
    # What ended lately: a replica catching up after a LISTEN outage reads it (0013).
    sa.Index(None, "ended_at"),
)

# Each replica's lease on the executions it owns (0017), renewed as this one row every lease/3
# however many executions it holds: an execution is held while its own `lease_expires_at` (set
# when it is created or claimed, 0 once handed back) or its owner's row here is in the future.
replica_leases = sa.Table(
    "replica_leases",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("lease_expires_at", sa.Double, nullable=False),
)

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column(
        "execution_id",
        sa.String(),
        sa.ForeignKey("executions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("node_id", sa.String(), primary_key=True),
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("input", Json),
    sa.Column("output", Json),
    sa.Column("error", Json),
    sa.Column("skip_reason", sa.Text),
    sa.Column("started_at", sa.Double),
    sa.Column("ended_at", sa.Double),
    sa.Column("wake_at", sa.Double),
    sa.Column("completed_order", sa.Integer, nullable=False, server_default="0"),
    sa.Column("usage", Json),
    # Migration 0011: the latest signal wait of the node (NodeRecord.wait); the partial index
    # holds the pending ones only (ListWaits).
    sa.Column("wait", Json),
    # Migration 0016: NodeRecord.exhausted, a node paused on (or resumed after) spent retries.
    sa.Column("exhausted", Json),
    sa.Index(
        "ix_nodes_pending_waits",
        "execution_id",
        "node_id",
        postgresql_where=sa.text("state = 'WAITING' AND wait IS NOT NULL"),
        sqlite_where=sa.text("state = 'WAITING' AND wait IS NOT NULL"),
    ),
    # A rowid table on SQLite (0018 made it WITHOUT ROWID, 0025 undid it): an index b-tree
    # keeps only ~1,000 bytes of a row in place on a 4 KiB page, and a node row holds its
    # input and output (benchmarks/rowid_layouts.py: +12% pages at 1 KB, +24% at 5 KB).
)

events = sa.Table(
    "events",
    metadata,
    sa.Column(
        "execution_id",
        sa.String(),
        sa.ForeignKey("executions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("sequence", sa.Integer, primary_key=True),
    sa.Column("type", sa.String(), nullable=False),
    sa.Column("node_id", sa.String()),
    sa.Column("data", Json),
    sa.Column("time", sa.Double, nullable=False),
    # A rowid table on SQLite (0024 made it WITHOUT ROWID, 0025 undid it): an index b-tree
    # keeps only ~1,000 bytes of a row in place on a 4 KiB page, the rest on overflow pages
    # of its own, and a node.succeeded event carries the output (benchmarks/rowid_layouts.py:
    # 1 KB outputs +32% to +61% WAL frames a step, +188% pages). SQLite's notification
    # poller seeks new events by rowid (event retention keeps the newest row for its mark).
)

# An execution's last sequence as SQLite's readers take it (migration 0026): a turn that
# only appends events to an unfinished execution leaves its row as it was (sqlite_turns.py),
# its newest event's sequence past the row's `last_sequence`, so a reader takes the greater
# of the two (the key's index finds the newest event: one seek). PostgreSQL's turns always
# rewrite the row. Labelled as the column, for the record mapper.
FOLDED_LAST_SEQUENCE = sa.func.max(
    executions.c.last_sequence,
    sa.func.coalesce(
        sa.select(sa.func.max(events.c.sequence))
        .where(events.c.execution_id == executions.c.id)
        .correlate(executions)
        .scalar_subquery(),
        0,
    ),
)
# The executions table's columns with `last_sequence` folded (SQLite's reads of records).
FOLDED_EXECUTIONS = [
    FOLDED_LAST_SEQUENCE.label("last_sequence") if c.name == "last_sequence" else c
    for c in executions.c
]

signals = sa.Table(
    "signals",
    metadata,
    sa.Column(
        "execution_id",
        sa.String(),
        sa.ForeignKey("executions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("data", Json),
    sa.Column("signal_id", sa.String(), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("consumed_by", sa.String()),
    sa.UniqueConstraint("execution_id", "signal_id"),
)


T = TypeVar("T")


class MappedRow(Protocol):
    """What a record mapper reads of a row: its columns by name. A SQLAlchemy row, or a row
    of a query over several tables read as one table's (execution_restore.py, `restore_read`)."""

    @property
    def _mapping(self) -> Mapping[Any, Any]: ...


# Records <-> rows. Every record field is a column of the same name (tests/storage checks the
# round trip on every backend), so one mapper per record serves, with the few conversions
# named here: enums are stored as their names, and empty mappings may come back as NULL.
def _mapper(
    cls: type[T],
    enums: dict[str, type[enum.Enum]] | None = None,
    empty: tuple[str, ...] = (),
) -> tuple[Callable[[T], dict[str, Any]], Callable[[MappedRow], T]]:
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    enums = enums or {}
    # One attrgetter for every field: half the cost of a getattr per name (rows are built on
    # the loop's thread at every start and commit).
    values = operator.attrgetter(*names)

    def to_row(record: T) -> dict[str, Any]:
        row = dict(zip(names, values(record), strict=True))
        for name in enums:
            row[name] = str(row[name])
        return row

    def to_record(row: MappedRow) -> T:
        values = row._mapping
        kwargs = {name: values[name] for name in names}
        for name, kind in enums.items():
            kwargs[name] = kind(kwargs[name])
        for name in empty:
            if kwargs[name] is None:
                kwargs[name] = {}
        return cls(**kwargs)

    return to_row, to_record


workflow_record = _mapper(WorkflowRecord)[1]
execution_row, execution_record = _mapper(
    ExecutionRecord, {"state": ExecutionState}, empty=("vars", "labels")
)
node_row, node_record = _mapper(NodeRecord, {"state": NodeState})
event_row, event_record = _mapper(EventRecord)
signal_record = _mapper(SignalRecord)[1]


# Scheduler slots shared by the replicas (migration 0008) ------------------------------------
# Used on PostgreSQL only (agentrun/storage/slots.py); SQLite has the tables, empty.

slot_tickets = sa.Table(
    "slot_tickets",
    metadata,
    # The scheduler instance (a replica's process) that asked, and its number for the call.
    sa.Column("replica", sa.String(), primary_key=True),
    sa.Column("n", sa.BigInteger, primary_key=True),
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("workflow", sa.String(), nullable=False),
    sa.Column("target", sa.String(), nullable=False),
    sa.Column("bucket", sa.String()),
    # -execution priority, -node priority, arrival: ascending is the order of service.
    sa.Column("exec_rank", sa.Integer, nullable=False),
    sa.Column("node_rank", sa.Integer, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    # Holding a slot (counted against the limits) or waiting for one.
    sa.Column("granted", sa.Boolean, nullable=False),
    # Granted by another replica's round and not yet read by its own replica.
    sa.Column("news", sa.Boolean, nullable=False),
    # A rate-limit bucket held it back at least once.
    sa.Column("throttled", sa.Boolean, nullable=False),
    sa.Index(None, "granted", "tenant", "target", "exec_rank", "node_rank", "seq"),
    sa.Index(None, "replica", "news"),
)

slot_replicas = sa.Table(
    "slot_replicas",
    metadata,
    sa.Column("replica", sa.String(), primary_key=True),
    # Database time (epoch seconds): tickets of a replica past this are taken back.
    sa.Column("expires_at", sa.Double, nullable=False),
)

slot_buckets = sa.Table(
    "slot_buckets",
    metadata,
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("tokens", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

slot_state = sa.Table(
    "slot_state",
    metadata,
    # One row (id 1): locked by every round, so rounds run one at a time across replicas.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    # The tenant that got the last slot: the next round starts with the one after it.
    sa.Column("cursor", sa.String(), nullable=False),
    sa.Column("next_seq", sa.BigInteger, nullable=False),
)


# Token and cost budgets (migration 0010) ----------------------------------------------------
# agentrun/storage/budgets.py: what each budget has spent, and what running calls reserved.

budget_spend = sa.Table(
    "budget_spend",
    metadata,
    # `tenant:NAME` or `workflow:TENANT/NAME`, and the period it covers (`day:2025-01-31`,
    # `execution:ID`).
    sa.Column("scope", sa.String(), primary_key=True),
    sa.Column("period", sa.String(), primary_key=True),
    sa.Column("tokens", sa.BigInteger, nullable=False),
    sa.Column("cost", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

budget_holds = sa.Table(
    "budget_holds",
    metadata,
    # One call's reservation, once per budget it counts against.
    sa.Column("hold", sa.String(), primary_key=True),
    sa.Column("scope", sa.String(), primary_key=True),
    sa.Column("period", sa.String(), primary_key=True),
    # The process that made it; it renews `expires_at` while the call runs.
    sa.Column("owner", sa.String(), nullable=False),
    sa.Column("tokens", sa.BigInteger, nullable=False),
    sa.Column("cost", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Index(None, "scope", "period"),
    sa.Index(None, "owner"),
)


# Remote workers (migration 0012) -------------------------------------------------------------
# Rows <-> records for these tables live in agentrun/storage/worker_calls.py.

# One call of a tool a remote worker serves, for one attempt of one node: READY until a
# worker's replica leases it, LEASED to one worker until its result, its loss or its
# cancellation, then SUCCEEDED, FAILED or CANCELLED (kept a while, then swept).
worker_calls = sa.Table(
    "worker_calls",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("tool", sa.String(), nullable=False),
    # The labels the node asked for: only workers whose labels include them.
    sa.Column("labels", Json),
    sa.Column("execution_id", sa.String(), nullable=False),
    sa.Column("node_id", sa.String(), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("idempotency_key", sa.String(), nullable=False),
    sa.Column("args", Json),
    sa.Column("deadline", sa.Double),
    sa.Column("trace", Json),
    sa.Column("state", sa.String(), nullable=False),
    # The replica waiting for the outcome, and until when it is known to wait.
    sa.Column("caller", sa.String(), nullable=False),
    sa.Column("caller_expires", sa.Double, nullable=False),
    # The worker holding the lease, and until when (heartbeats extend it).
    sa.Column("worker_id", sa.String()),
    sa.Column("lease_expires", sa.Double),
    sa.Column("result", Json),
    sa.Column("error", Json),
    sa.Column("progress", Json),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Index(None, "state", "tool"),
    sa.Index(None, "execution_id"),
    sa.Index(None, "worker_id"),
)

# A connected worker session (any replica's), for ListWorkers and routing decisions.
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("display_name", sa.String(), nullable=False),
    sa.Column("replica", sa.String(), nullable=False),
    # SERVING, DRAINING or UNRESPONSIVE.
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("labels", Json),
    sa.Column("version", sa.String(), nullable=False),
    # The tools it serves: [{name, description, args_schema, ...}].
    sa.Column("tools", Json),
    sa.Column("slots", sa.Integer, nullable=False),
    sa.Column("connected_at", sa.Double, nullable=False),
    sa.Column("heartbeat_at", sa.Double, nullable=False),
    sa.Index(None, "tenant", "id"),
)

# The last declaration of each remote tool (name, schemas, flags), kept after its workers
# disconnect: workflows that use it still validate, and their calls wait for a worker.
worker_tools = sa.Table(
    "worker_tools",
    metadata,
    sa.Column("name", sa.String(), primary_key=True),
    # The tenant whose workers serve it: another tenant's workers may not declare the name.
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("definition", Json),
    sa.Column("updated_at", sa.Double, nullable=False),
)


# Execution admission shared by the replicas (migration 0014) --------------------------------
# agentrun/storage/admissions.py: which executions hold a place in their tenant's quota and
# their concurrency key, and which wait for one.

admissions = sa.Table(
    "admissions",
    metadata,
    sa.Column("execution_id", sa.String(), primary_key=True),
    sa.Column("tenant", sa.String(), nullable=False),
    # The workflow and the evaluated `concurrency.key` (JSON [workflow, value]); NULL: none.
    sa.Column("ckey", sa.String()),
    sa.Column("key_limit", sa.Integer, nullable=False),
    sa.Column("running", sa.Boolean, nullable=False),
    # Waiting order: rank (-1 for a `cancel_oldest` start, which goes first), then the id
    # (ids begin with their creation time).
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Index(None, "tenant", "running"),
    sa.Index(None, "tenant", "ckey"),
)

admission_tenants = sa.Table(
    "admission_tenants",
    metadata,
    # One row per tenant, locked by every admission decision of that tenant.
    sa.Column("tenant", sa.String(), primary_key=True),
)
