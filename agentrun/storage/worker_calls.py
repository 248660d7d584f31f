"""Calls of the tools remote workers serve, as store rows with leases (docs/workers.md).

A node's attempt of a remote tool inserts a READY call (`enqueue`). The replica a worker is
connected to leases calls to it (`claim`: its tenant, tools, labels and free slots), extends
the leases at each heartbeat (`renew`), and writes the worker's answer only while the lease
is still the worker's (`complete`: the fence). A worker that disconnects or goes silent loses
its calls (`release`, `expire`): they end FAILED with `worker_lost`, and the caller's retry
policy decides what follows. The replica waiting for a call keeps it alive (`keep_callers`);
a call whose caller vanished is cancelled by the next `sweep`, so that no worker runs an
attempt nobody waits for.

The contract every backend keeps (tests/storage/test_worker_calls.py): a call leaves READY
once; its outcome is written once, by the worker holding a live lease or by whoever ends the
lease; records returned are copies. `MemoryWorkerCalls` keeps it in the process,
`SqlWorkerCalls` on the SQL core of a `SqlStore` (SQLite or PostgreSQL).
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from agentrun.storage import schema as db
from agentrun.storage.base import Store
from agentrun.storage.sqldb import SqlDatabase

__all__ = [
    "CallRecord",
    "CallState",
    "Claim",
    "MemoryWorkerCalls",
    "SqlWorkerCalls",
    "ToolDeclaration",
    "ToolTaken",
    "WorkerCallStore",
    "WorkerRecord",
    "worker_calls_for",
]


class CallState(enum.StrEnum):
    READY = "READY"
    LEASED = "LEASED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self not in (CallState.READY, CallState.LEASED)


_OPEN = (CallState.READY.value, CallState.LEASED.value)
_DONE = (CallState.SUCCEEDED.value, CallState.FAILED.value, CallState.CANCELLED.value)


@dataclass(slots=True)
class CallRecord:
    id: str
    tenant: str
    tool: str
    execution_id: str
    node_id: str
    attempt: int
    idempotency_key: str
    args: Any
    caller: str
    caller_expires: float
    created_at: float
    labels: dict[str, str] = field(default_factory=dict)
    # Epoch seconds when the node's timeout fires; None: no timeout.
    deadline: float | None = None
    # W3C trace context: {traceparent, tracestate}.
    trace: dict[str, str] | None = None
    state: CallState = CallState.READY
    worker_id: str | None = None
    lease_expires: float | None = None
    result: Any = None
    # {type, message, details, retryable?, retry_after?} when FAILED or CANCELLED.
    error: dict[str, Any] | None = None
    # The last progress the worker reported: {progress, total, message}.
    progress: dict[str, Any] | None = None
    updated_at: float = 0.0


@dataclass(slots=True)
class WorkerRecord:
    id: str
    tenant: str
    display_name: str
    replica: str
    labels: dict[str, str]
    version: str
    # The tools it serves, as declared: [{name, description, args_schema, ...}].
    tools: list[dict[str, Any]]
    slots: int
    connected_at: float
    heartbeat_at: float
    # SERVING, DRAINING or UNRESPONSIVE.
    state: str = "SERVING"


@dataclass(slots=True)
class ToolDeclaration:
    """The last declaration of a remote tool: {description, args_schema, result_schema,
    irreversible, idempotent, max_concurrent_calls, version} in `definition`."""

    name: str
    tenant: str
    definition: dict[str, Any]
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Claim:
    """What one worker can take now: `free` slots per tool (each at most `total`)."""

    worker_id: str
    tenant: str
    labels: Mapping[str, str]
    free: Mapping[str, int]
    total: int


class ToolTaken(Exception):
    """A tool name another tenant's workers declared already."""

    def __init__(self, name: str) -> None:
        super().__init__(f"tool {name!r} is served by another tenant's workers")
        self.name = name


def _copier(cls: type) -> Any:
    getter = operator.attrgetter(*(f.name for f in dataclasses.fields(cls)))
    return lambda record: cls(*getter(record))


_copy_call = _copier(CallRecord)
_copy_worker = _copier(WorkerRecord)
_copy_tool = _copier(ToolDeclaration)


def labels_match(wanted: Mapping[str, str] | None, offered: Mapping[str, str]) -> bool:
    """A call asking for `wanted` labels may go to a worker offering `offered`."""
    return not wanted or all(offered.get(k) == v for k, v in wanted.items())


class WorkerCallStore(abc.ABC):
    """Calls, worker sessions and remote tool declarations (see the module docstring)."""

    # Tools ----------------------------------------------------------------------------------
    @abc.abstractmethod
    async def declare_tools(self, tenant: str, tools: Sequence[ToolDeclaration]) -> None:
        """Stores each declaration (replacing the last one of its name); ToolTaken, and
        nothing stored, when another tenant declared one of the names."""

    @abc.abstractmethod
    async def list_tools(self) -> list[ToolDeclaration]: ...

    # Workers --------------------------------------------------------------------------------
    @abc.abstractmethod
    async def add_worker(self, record: WorkerRecord) -> None: ...

    @abc.abstractmethod
    async def update_worker(self, worker_id: str, *, heartbeat_at: float | None = None, state: str | None = None) -> None: ...

    @abc.abstractmethod
    async def remove_worker(self, worker_id: str) -> None: ...

    @abc.abstractmethod
    async def list_workers(
        self, tenant: str, *, seen_after: float, limit: int, after_id: str | None = None
    ) -> list[WorkerRecord]:
        """The tenant's workers that sent a heartbeat after `seen_after`, by id."""

    @abc.abstractmethod
    async def active_calls(self, worker_ids: Sequence[str]) -> dict[str, int]:
        """How many LEASED calls each worker holds."""

    # Calls ----------------------------------------------------------------------------------
    @abc.abstractmethod
    async def enqueue(self, call: CallRecord) -> None:
        """Inserts a READY call (a known id is left as it is)."""

    @abc.abstractmethod
    async def get_calls(self, ids: Sequence[str]) -> list[CallRecord]: ...

    @abc.abstractmethod
    async def waiting(self, execution_id: str) -> list[CallRecord]:
        """The execution's READY calls: nodes waiting for a worker."""

    @abc.abstractmethod
    async def claim(self, claim: Claim, *, now: float, lease_until: float) -> list[CallRecord]:
        """Leases READY calls to `claim.worker_id`, oldest first: of the tenant, for tools with
        free slots, whose labels the worker offers, whose caller and deadline are alive."""

    @abc.abstractmethod
    async def renew(self, worker_id: str, *, now: float, lease_until: float) -> set[str]:
        """Extends the worker's live leases; returns the ids of the calls it still holds."""

    @abc.abstractmethod
    async def complete(
        self, call_id: str, worker_id: str, *, now: float, result: Any = None, error: dict[str, Any] | None = None
    ) -> bool:
        """The worker's answer: SUCCEEDED with `result`, or FAILED with `error`. False, and
        nothing written, unless the call is LEASED to `worker_id` with a lease alive at `now`."""

    @abc.abstractmethod
    async def report_progress(self, call_id: str, worker_id: str, progress: dict[str, Any]) -> bool: ...

    @abc.abstractmethod
    async def release(self, worker_id: str, *, now: float, error: dict[str, Any]) -> list[CallRecord]:
        """Ends every call LEASED to the worker as FAILED with `error`; returns them."""

    @abc.abstractmethod
    async def expire(self, ids: Sequence[str], *, now: float, error: dict[str, Any]) -> list[str]:
        """Of `ids`, ends the LEASED calls whose lease expired before `now` as FAILED."""

    @abc.abstractmethod
    async def cancel(self, call_id: str, *, now: float, error: dict[str, Any]) -> CallRecord | None:
        """Ends a READY or LEASED call as CANCELLED; returns it (None if it had ended)."""

    @abc.abstractmethod
    async def keep_callers(self, caller: str, *, until: float) -> None:
        """`caller` still waits for its open calls until `until`."""

    @abc.abstractmethod
    async def sweep(self, *, now: float, keep_seconds: float, worker_seen_after: float) -> list[CallRecord]:
        """Cancels open calls whose caller stopped keeping them (returns them), deletes calls
        that ended more than `keep_seconds` ago and workers silent since `worker_seen_after`."""


# Memory ------------------------------------------------------------------------------------


class MemoryWorkerCalls(WorkerCallStore):
    """Everything in the process (the memory store; one replica)."""

    def __init__(self) -> None:
        self._calls: dict[str, CallRecord] = {}
        self._workers: dict[str, WorkerRecord] = {}
        self._tools: dict[str, ToolDeclaration] = {}

    async def declare_tools(self, tenant: str, tools: Sequence[ToolDeclaration]) -> None:
        for tool in tools:
            known = self._tools.get(tool.name)
            if known is not None and known.tenant != tenant:
                raise ToolTaken(tool.name)
        for tool in tools:
            self._tools[tool.name] = _copy_tool(tool)

    async def list_tools(self) -> list[ToolDeclaration]:
        return [_copy_tool(t) for _, t in sorted(self._tools.items())]

    async def add_worker(self, record: WorkerRecord) -> None:
        self._workers[record.id] = _copy_worker(record)

    async def update_worker(self, worker_id: str, *, heartbeat_at: float | None = None, state: str | None = None) -> None:
        worker = self._workers.get(worker_id)
        if worker is not None:
            if heartbeat_at is not None:
                worker.heartbeat_at = heartbeat_at
            if state is not None:
                worker.state = state

    async def remove_worker(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    async def list_workers(
        self, tenant: str, *, seen_after: float, limit: int, after_id: str | None = None
    ) -> list[WorkerRecord]:
        found = [
            _copy_worker(w)
            for _, w in sorted(self._workers.items())
            if w.tenant == tenant and w.heartbeat_at > seen_after and (after_id is None or w.id > after_id)
        ]
        return found[:limit]

    async def active_calls(self, worker_ids: Sequence[str]) -> dict[str, int]:
        wanted = set(worker_ids)
        counts = dict.fromkeys(wanted, 0)
        for call in self._calls.values():
            if call.state is CallState.LEASED and call.worker_id in wanted:
                counts[call.worker_id] += 1
        return counts

    async def enqueue(self, call: CallRecord) -> None:
        if call.id not in self._calls:
            stored = _copy_call(call)
            stored.state, stored.updated_at = CallState.READY, call.created_at
            self._calls[call.id] = stored

    async def get_calls(self, ids: Sequence[str]) -> list[CallRecord]:
        return [_copy_call(self._calls[i]) for i in ids if i in self._calls]

    async def waiting(self, execution_id: str) -> list[CallRecord]:
        return [
            _copy_call(c) for c in self._calls.values()
            if c.execution_id == execution_id and c.state is CallState.READY
        ]

    async def claim(self, claim: Claim, *, now: float, lease_until: float) -> list[CallRecord]:
        candidates = sorted(
            (c for c in self._calls.values() if c.state is CallState.READY and c.tenant == claim.tenant),
            key=lambda c: (c.created_at, c.id),
        )
        taken = _choose(candidates, claim, now)
        for call in taken:
            call.state, call.worker_id, call.lease_expires, call.updated_at = CallState.LEASED, claim.worker_id, lease_until, now
        return [_copy_call(c) for c in taken]

    async def renew(self, worker_id: str, *, now: float, lease_until: float) -> set[str]:
        held = set()
        for call in self._calls.values():
            if call.state is CallState.LEASED and call.worker_id == worker_id and (call.lease_expires or 0) >= now:
                call.lease_expires = lease_until
                held.add(call.id)
        return held

    async def complete(
        self, call_id: str, worker_id: str, *, now: float, result: Any = None, error: dict[str, Any] | None = None
    ) -> bool:
        call = self._calls.get(call_id)
        if not _leased_to(call, worker_id, now):
            return False
        assert call is not None
        call.state = CallState.FAILED if error is not None else CallState.SUCCEEDED
        call.result, call.error, call.updated_at = (None if error is not None else result), error, now
        return True

    async def report_progress(self, call_id: str, worker_id: str, progress: dict[str, Any]) -> bool:
        call = self._calls.get(call_id)
        if call is None or call.state is not CallState.LEASED or call.worker_id != worker_id:
            return False
        call.progress = dict(progress)
        return True

    async def release(self, worker_id: str, *, now: float, error: dict[str, Any]) -> list[CallRecord]:
        lost = [c for c in self._calls.values() if c.state is CallState.LEASED and c.worker_id == worker_id]
        for call in lost:
            call.state, call.error, call.updated_at = CallState.FAILED, dict(error), now
        return [_copy_call(c) for c in lost]

    async def expire(self, ids: Sequence[str], *, now: float, error: dict[str, Any]) -> list[str]:
        ended = []
        for i in ids:
            call = self._calls.get(i)
            if call is not None and call.state is CallState.LEASED and (call.lease_expires or 0) < now:
                call.state, call.error, call.updated_at = CallState.FAILED, dict(error), now
                ended.append(i)
        return ended

    async def cancel(self, call_id: str, *, now: float, error: dict[str, Any]) -> CallRecord | None:
        call = self._calls.get(call_id)
        if call is None or call.state.finished:
            return None
        call.state, call.error, call.updated_at = CallState.CANCELLED, dict(error), now
        return _copy_call(call)

    async def keep_callers(self, caller: str, *, until: float) -> None:
        for call in self._calls.values():
            if call.caller == caller and not call.state.finished:
                call.caller_expires = until

    async def sweep(self, *, now: float, keep_seconds: float, worker_seen_after: float) -> list[CallRecord]:
        orphans = []
        for call_id, call in list(self._calls.items()):
            if not call.state.finished and call.caller_expires < now:
                call.state, call.updated_at = CallState.CANCELLED, now
                call.error = {"type": "cancelled", "message": "nobody waits for the call any more", "details": {}}
                orphans.append(_copy_call(call))
            elif call.state.finished and call.updated_at < now - keep_seconds:
                del self._calls[call_id]
        for worker_id, worker in list(self._workers.items()):
            if worker.heartbeat_at < worker_seen_after:
                del self._workers[worker_id]
        return orphans


def _leased_to(call: CallRecord | None, worker_id: str, now: float) -> bool:
    return (
        call is not None
        and call.state is CallState.LEASED
        and call.worker_id == worker_id
        and (call.lease_expires or 0) >= now
    )


def _choose(candidates: Sequence[Any], claim: Claim, now: float) -> list[Any]:
    """The candidates (oldest first) the claim takes: alive, labels matching, within the
    free slots of their tool and of the worker."""
    free = dict(claim.free)
    left = claim.total
    taken = []
    for call in candidates:
        if left <= 0:
            break
        if free.get(call.tool, 0) <= 0 or call.caller_expires < now:
            continue
        if call.deadline is not None and call.deadline <= now:
            continue
        if not labels_match(call.labels, claim.labels):
            continue
        free[call.tool] -= 1
        left -= 1
        taken.append(call)
    return taken


# SQL ---------------------------------------------------------------------------------------

_calls = db.worker_calls
_CALL_FIELDS = tuple(f.name for f in dataclasses.fields(CallRecord))
_WORKER_FIELDS = tuple(f.name for f in dataclasses.fields(WorkerRecord))


def _call_row(call: CallRecord) -> dict[str, Any]:
    row = {name: getattr(call, name) for name in _CALL_FIELDS}
    row["state"] = str(call.state)
    row["labels"] = dict(call.labels or {})
    return row


def _call_record(row: Any) -> CallRecord:
    values = row._mapping
    kwargs = {name: values[name] for name in _CALL_FIELDS}
    kwargs["state"] = CallState(kwargs["state"])
    kwargs["labels"] = kwargs["labels"] or {}
    return CallRecord(**kwargs)


def _worker_record(row: Any) -> WorkerRecord:
    values = row._mapping
    kwargs = {name: values[name] for name in _WORKER_FIELDS}
    kwargs["labels"] = kwargs["labels"] or {}
    kwargs["tools"] = kwargs["tools"] or []
    return WorkerRecord(**kwargs)


class SqlWorkerCalls(WorkerCallStore):
    """The worker tables in the database of an open SqlStore (`SqlStore.database`)."""

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database

    async def declare_tools(self, tenant: str, tools: Sequence[ToolDeclaration]) -> None:
        t = db.worker_tools
        names = [tool.name for tool in tools]

        def write(conn: sa.Connection) -> None:
            owners = conn.execute(sa.select(t.c.name, t.c.tenant).where(t.c.name.in_(names))).all()
            for name, owner in owners:
                if owner != tenant:
                    raise ToolTaken(name)
            for tool in tools:
                row = {"name": tool.name, "tenant": tenant, "definition": tool.definition, "updated_at": tool.updated_at}
                statement = self._db.insert(t).values(row)
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=[t.c.name],
                        set_={"definition": statement.excluded.definition, "updated_at": statement.excluded.updated_at},
                    )
                )

        await self._db.retry_unique(write)

    async def list_tools(self) -> list[ToolDeclaration]:
        t = db.worker_tools
        rows = await self._db.read(sa.select(t).order_by(t.c.name))
        return [ToolDeclaration(r.name, r.tenant, r.definition or {}, r.updated_at) for r in rows]

    async def add_worker(self, record: WorkerRecord) -> None:
        row = {name: getattr(record, name) for name in _WORKER_FIELDS}
        await self._db.transaction(lambda conn: conn.execute(db.workers.insert(), row))

    async def update_worker(self, worker_id: str, *, heartbeat_at: float | None = None, state: str | None = None) -> None:
        values: dict[str, Any] = {}
        if heartbeat_at is not None:
            values["heartbeat_at"] = heartbeat_at
        if state is not None:
            values["state"] = state
        if values:
            statement = db.workers.update().where(db.workers.c.id == worker_id).values(values)
            await self._db.transaction(lambda conn: conn.execute(statement))

    async def remove_worker(self, worker_id: str) -> None:
        statement = db.workers.delete().where(db.workers.c.id == worker_id)
        await self._db.transaction(lambda conn: conn.execute(statement))

    async def list_workers(
        self, tenant: str, *, seen_after: float, limit: int, after_id: str | None = None
    ) -> list[WorkerRecord]:
        w = db.workers
        query = sa.select(w).where(w.c.tenant == tenant, w.c.heartbeat_at > seen_after)
        if after_id is not None:
            query = query.where(w.c.id > after_id)
        rows = await self._db.read(query.order_by(w.c.id).limit(limit))
        return [_worker_record(r) for r in rows]

    async def active_calls(self, worker_ids: Sequence[str]) -> dict[str, int]:
        counts = dict.fromkeys(worker_ids, 0)
        if not worker_ids:
            return counts
        query = (
            sa.select(_calls.c.worker_id, sa.func.count())
            .where(_calls.c.state == CallState.LEASED.value, _calls.c.worker_id.in_(list(worker_ids)))
            .group_by(_calls.c.worker_id)
        )
        for worker_id, count in await self._db.read(query):
            counts[worker_id] = int(count)
        return counts

    async def enqueue(self, call: CallRecord) -> None:
        row = _call_row(call)
        row["state"], row["updated_at"] = CallState.READY.value, call.created_at
        statement = self._db.insert(_calls).values(row).on_conflict_do_nothing(index_elements=[_calls.c.id])
        await self._db.transaction(lambda conn: conn.execute(statement))

    async def get_calls(self, ids: Sequence[str]) -> list[CallRecord]:
        if not ids:
            return []
        rows = await self._db.read(sa.select(_calls).where(_calls.c.id.in_(list(ids))))
        return [_call_record(r) for r in rows]

    async def waiting(self, execution_id: str) -> list[CallRecord]:
        query = sa.select(_calls).where(
            _calls.c.execution_id == execution_id, _calls.c.state == CallState.READY.value
        )
        return [_call_record(r) for r in await self._db.read(query)]

    async def claim(self, claim: Claim, *, now: float, lease_until: float) -> list[CallRecord]:
        tools = [name for name, free in claim.free.items() if free > 0]
        if not tools or claim.total <= 0:
            return []
        c = _calls
        query = (
            sa.select(c.c.id, c.c.tool, c.c.labels, c.c.caller_expires, c.c.deadline)
            .where(
                c.c.state == CallState.READY.value,
                c.c.tenant == claim.tenant,
                c.c.tool.in_(tools),
                c.c.caller_expires >= now,
                sa.or_(c.c.deadline.is_(None), c.c.deadline > now),
            )
            .order_by(c.c.created_at, c.c.id)
        )
        if self._db.sqlite:
            # Labels are matched below: enough rows to fill the slots past calls whose labels
            # this worker lacks (SQLite has one writer: nothing is locked meanwhile).
            query = query.limit(claim.total * 4 + 50)
        else:
            # Only calls whose labels the worker offers (JSONB containment), no more rows than
            # it can take, and rows another replica is leasing right now skipped, not waited for.
            offered = sa.cast(sa.literal(db.jsonb_dumps(dict(claim.labels))), JSONB)
            query = query.where(c.c.labels.op("<@")(offered)).limit(claim.total).with_for_update(skip_locked=True)

        def lease(conn: sa.Connection) -> list[CallRecord]:
            taken = _choose(conn.execute(query).all(), claim, now)
            if not taken:
                return []
            ids = [row.id for row in taken]
            conn.execute(
                c.update()
                .where(c.c.id.in_(ids), c.c.state == CallState.READY.value)
                .values(state=CallState.LEASED.value, worker_id=claim.worker_id, lease_expires=lease_until, updated_at=now)
            )
            rows = conn.execute(sa.select(c).where(c.c.id.in_(ids), c.c.worker_id == claim.worker_id)).all()
            return sorted((_call_record(r) for r in rows), key=lambda r: (r.created_at, r.id))

        return await self._db.transaction(lease)

    async def renew(self, worker_id: str, *, now: float, lease_until: float) -> set[str]:
        c = _calls
        statement = (
            c.update()
            .where(c.c.worker_id == worker_id, c.c.state == CallState.LEASED.value, c.c.lease_expires >= now)
            .values(lease_expires=lease_until)
            .returning(c.c.id)
        )
        return await self._db.transaction(lambda conn: {row.id for row in conn.execute(statement)})

    async def complete(
        self, call_id: str, worker_id: str, *, now: float, result: Any = None, error: dict[str, Any] | None = None
    ) -> bool:
        c = _calls
        values: dict[str, Any] = {"updated_at": now, "error": error}
        if error is not None:
            values["state"] = CallState.FAILED.value
        else:
            values["state"], values["result"] = CallState.SUCCEEDED.value, result
        statement = (
            c.update()
            .where(
                c.c.id == call_id,
                c.c.state == CallState.LEASED.value,
                c.c.worker_id == worker_id,
                c.c.lease_expires >= now,
            )
            .values(values)
        )
        return bool(await self._db.transaction(lambda conn: conn.execute(statement).rowcount))

    async def report_progress(self, call_id: str, worker_id: str, progress: dict[str, Any]) -> bool:
        c = _calls
        statement = (
            c.update()
            .where(c.c.id == call_id, c.c.state == CallState.LEASED.value, c.c.worker_id == worker_id)
            .values(progress=progress)
        )
        return bool(await self._db.transaction(lambda conn: conn.execute(statement).rowcount))

    async def release(self, worker_id: str, *, now: float, error: dict[str, Any]) -> list[CallRecord]:
        c = _calls
        statement = (
            c.update()
            .where(c.c.worker_id == worker_id, c.c.state == CallState.LEASED.value)
            .values(state=CallState.FAILED.value, error=error, updated_at=now)
            .returning(*c.columns)
        )
        return await self._db.transaction(lambda conn: [_call_record(r) for r in conn.execute(statement)])

    async def expire(self, ids: Sequence[str], *, now: float, error: dict[str, Any]) -> list[str]:
        if not ids:
            return []
        c = _calls
        statement = (
            c.update()
            .where(c.c.id.in_(list(ids)), c.c.state == CallState.LEASED.value, c.c.lease_expires < now)
            .values(state=CallState.FAILED.value, error=error, updated_at=now)
            .returning(c.c.id)
        )
        return await self._db.transaction(lambda conn: [r.id for r in conn.execute(statement)])

    async def cancel(self, call_id: str, *, now: float, error: dict[str, Any]) -> CallRecord | None:
        c = _calls
        statement = (
            c.update()
            .where(c.c.id == call_id, c.c.state.in_(_OPEN))
            .values(state=CallState.CANCELLED.value, error=error, updated_at=now)
            .returning(*c.columns)
        )
        rows = await self._db.transaction(lambda conn: conn.execute(statement).all())
        return _call_record(rows[0]) if rows else None

    async def keep_callers(self, caller: str, *, until: float) -> None:
        c = _calls
        statement = c.update().where(c.c.caller == caller, c.c.state.in_(_OPEN)).values(caller_expires=until)
        await self._db.transaction(lambda conn: conn.execute(statement))

    async def sweep(self, *, now: float, keep_seconds: float, worker_seen_after: float) -> list[CallRecord]:
        c = _calls
        gone = {"type": "cancelled", "message": "nobody waits for the call any more", "details": {}}

        def work(conn: sa.Connection) -> list[CallRecord]:
            orphans = conn.execute(
                c.update()
                .where(c.c.state.in_(_OPEN), c.c.caller_expires < now)
                .values(state=CallState.CANCELLED.value, error=gone, updated_at=now)
                .returning(*c.columns)
            ).all()
            conn.execute(c.delete().where(c.c.state.in_(_DONE), c.c.updated_at < now - keep_seconds))
            conn.execute(db.workers.delete().where(db.workers.c.heartbeat_at < worker_seen_after))
            return [_call_record(r) for r in orphans]

        return await self._db.transaction(work)


def worker_calls_for(store: Store) -> WorkerCallStore:
    """The worker call repository beside `store`: on its SQL database, or in the process."""
    database = getattr(store, "database", None)
    if isinstance(database, SqlDatabase):
        return SqlWorkerCalls(database)
    return MemoryWorkerCalls()
