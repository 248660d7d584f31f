"""The SQL schema of the store, as SQLAlchemy Core tables.

This is the target the Alembic migrations must reach: a test migrates an empty database and
compares it with this metadata, so the two cannot drift apart silently. Times are epoch seconds
in double precision (a float4 would lose seconds); payloads are JSON, JSONB on PostgreSQL.
Strings carry no length: ids and names are bounded by the API layer, not by the schema.
The mapping between records and rows lives here too, next to the columns it must match.
"""

from __future__ import annotations

import decimal
import json
import json.encoder
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from agentrun.storage.records import (
    EventRecord,
    ExecutionRecord,
    ExecutionState,
    NodeRecord,
    NodeState,
    SignalRecord,
    WorkflowRecord,
)

# Python None is stored as SQL NULL, so "no output" and "absent" are one thing in queries.
Json = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

# Explicit names keep Alembic's autogenerate comparison and future migrations stable.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

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
    sa.Index(None, "state"),
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
)

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


# Payload encoding -----------------------------------------------------------------
def jsonb_dumps(value: Any) -> str:
    """json.dumps, except that floats written with a positive exponent keep a decimal point.

    JSONB keeps numbers as `numeric`, which prints 1.5e+16 back as 15000000000000000: an int
    to json.loads. A float turning into an int on a round trip would change how expressions
    (CEL keeps int and double apart) see a node's output after a restart.
    """
    text = json.dumps(value)
    if "e+" not in text:  # the common case: no such float (or only a string containing e+)
        return text
    # json's pure-Python encoder takes a float formatter (the C one does not); a fresh one
    # per call, so that its cycle-detection memo never outlives the call.
    encode = json.encoder._make_iterencode(  # type: ignore[attr-defined]
        {},
        _not_serializable,
        json.encoder.encode_basestring_ascii,
        None,
        _float_with_point,
        ": ",
        ", ",
        False,
        False,
        False,
    )
    return "".join(encode(value, 0))


def _float_with_point(value: float) -> str:
    text = float.__repr__(value)
    if "e+" in text:
        return format(decimal.Decimal(text), "f") + ".0"
    if text in ("nan", "inf", "-inf"):  # as json.dumps writes them; PostgreSQL refuses them
        return {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[text]
    return text


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# Records <-> rows: plain functions, as the hot path cannot afford an ORM's bookkeeping.
def workflow_record(row: sa.Row[Any]) -> WorkflowRecord:
    return WorkflowRecord(
        tenant=row.tenant,
        name=row.name,
        version=row.version,
        spec=row.spec,
        created_at=row.created_at,
        description=row.description,
    )


def execution_row(r: ExecutionRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "tenant": r.tenant,
        "workflow": r.workflow,
        "version": r.version,
        "state": str(r.state),
        "input": r.input,
        "output": r.output,
        "error": r.error,
        "vars": r.vars,
        "priority": r.priority,
        "request_id": r.request_id,
        "request_hash": r.request_hash,
        "parent_id": r.parent_id,
        "parent_node": r.parent_node,
        "created_at": r.created_at,
        "started_at": r.started_at,
        "ended_at": r.ended_at,
        "deadline": r.deadline,
        "last_sequence": r.last_sequence,
        "labels": r.labels,
        "usage": r.usage,
        "owner": r.owner,
        "lease_epoch": r.lease_epoch,
        "lease_expires_at": r.lease_expires_at,
    }


def execution_record(row: sa.Row[Any]) -> ExecutionRecord:
    return ExecutionRecord(
        id=row.id,
        tenant=row.tenant,
        workflow=row.workflow,
        version=row.version,
        state=ExecutionState(row.state),
        input=row.input,
        created_at=row.created_at,
        output=row.output,
        error=row.error,
        vars=row.vars if row.vars is not None else {},
        priority=row.priority,
        request_id=row.request_id,
        request_hash=row.request_hash,
        parent_id=row.parent_id,
        parent_node=row.parent_node,
        started_at=row.started_at,
        ended_at=row.ended_at,
        deadline=row.deadline,
        last_sequence=row.last_sequence,
        labels=row.labels if row.labels is not None else {},
        usage=row.usage,
        owner=row.owner,
        lease_epoch=row.lease_epoch,
        lease_expires_at=row.lease_expires_at,
    )


def node_row(n: NodeRecord) -> dict[str, Any]:
    return {
        "execution_id": n.execution_id,
        "node_id": n.node_id,
        "state": str(n.state),
        "attempt": n.attempt,
        "input": n.input,
        "output": n.output,
        "error": n.error,
        "skip_reason": n.skip_reason,
        "started_at": n.started_at,
        "ended_at": n.ended_at,
        "wake_at": n.wake_at,
        "completed_order": n.completed_order,
        "usage": n.usage,
    }


def node_record(row: sa.Row[Any]) -> NodeRecord:
    return NodeRecord(
        execution_id=row.execution_id,
        node_id=row.node_id,
        state=NodeState(row.state),
        attempt=row.attempt,
        input=row.input,
        output=row.output,
        error=row.error,
        skip_reason=row.skip_reason,
        started_at=row.started_at,
        ended_at=row.ended_at,
        wake_at=row.wake_at,
        completed_order=row.completed_order,
        usage=row.usage,
    )


def event_row(e: EventRecord) -> dict[str, Any]:
    return {
        "execution_id": e.execution_id,
        "sequence": e.sequence,
        "type": e.type,
        "node_id": e.node_id,
        "data": e.data,
        "time": e.time,
    }


def event_record(row: sa.Row[Any]) -> EventRecord:
    return EventRecord(
        execution_id=row.execution_id,
        sequence=row.sequence,
        type=row.type,
        time=row.time,
        node_id=row.node_id,
        data=row.data,
    )


def signal_record(row: sa.Row[Any]) -> SignalRecord:
    return SignalRecord(
        execution_id=row.execution_id,
        name=row.name,
        data=row.data,
        signal_id=row.signal_id,
        created_at=row.created_at,
        seq=row.seq,
        consumed_by=row.consumed_by,
    )


# State machines (migration 0005) ------------------------------------------------------------
# Rows <-> records for these tables live in agentrun/storage/machines.py.

sm_instances = sa.Table(
    "sm_instances",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("workflow", sa.String(), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    # Lifecycle: ACTIVE, COMPLETED, FAILED, CANCELLED.
    sa.Column("state", sa.String(), nullable=False),
    # The machine state the instance is in.
    sa.Column("current", sa.String(), nullable=False),
    sa.Column("data", Json),
    sa.Column("input", Json),
    sa.Column("error", Json),
    sa.Column("request_id", sa.String()),
    sa.Column("request_hash", sa.String()),
    sa.Column("parent_id", sa.String()),
    sa.Column("parent_node", sa.String()),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("ended_at", sa.Double),
    sa.Column("last_sequence", sa.Integer, nullable=False, server_default="0"),
    sa.Column("entry_sequence", sa.Integer, nullable=False, server_default="0"),
    sa.Column("invoke_execution", sa.String()),
    sa.Column("labels", Json),
    sa.UniqueConstraint("tenant", "request_id"),
    sa.Index(None, "tenant", "id"),
    sa.Index(None, "tenant", "workflow", "id"),
    sa.Index(None, "state"),
)

sm_history = sa.Table(
    "sm_history",
    metadata,
    sa.Column(
        "instance_id",
        sa.String(),
        sa.ForeignKey("sm_instances.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("sequence", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(), nullable=False),
    sa.Column("time", sa.Double, nullable=False),
    sa.Column("event", sa.String(), nullable=False),
    sa.Column("event_id", sa.String()),
    sa.Column("event_data", Json),
    sa.Column("from_state", sa.String(), nullable=False),
    sa.Column("to_state", sa.String(), nullable=False),
    sa.Column("transition_index", sa.Integer),
    sa.Column("actions", Json),
    sa.Column("assigned", Json),
    sa.Column("instance_state", sa.String(), nullable=False),
    sa.Column("error", Json),
    sa.Column("reentered", sa.Boolean, nullable=False),
    # An event id is applied once per instance; NULL ids never collide.
    sa.UniqueConstraint("instance_id", "event_id"),
)

sm_timers = sa.Table(
    "sm_timers",
    metadata,
    sa.Column(
        "instance_id",
        sa.String(),
        sa.ForeignKey("sm_instances.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("key", sa.String(), primary_key=True),
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("timer_index", sa.Integer, nullable=False),
    sa.Column("fire_at", sa.Double, nullable=False),
    sa.Index(None, "fire_at"),
)
