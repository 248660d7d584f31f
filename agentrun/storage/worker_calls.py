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
`SqlWorkerCalls` (worker_calls_sql.py) on the SQL core of a `SqlStore` (SQLite or PostgreSQL).
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from agentrun.storage.base import Store

__all__ = [
    "CallRecord",
    "CallState",
    "CallStatus",
    "Claim",
    "MemoryWorkerCalls",
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


OPEN = (CallState.READY.value, CallState.LEASED.value)
DONE = (CallState.SUCCEEDED.value, CallState.FAILED.value, CallState.CANCELLED.value)


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


@dataclass(frozen=True, slots=True)
class CallStatus:
    """Where a call is, without its payloads: what a waiting caller polls."""

    id: str
    state: CallState
    lease_expires: float | None
    progress: dict[str, Any] | None


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


_call_copier = _copier(CallRecord)
_worker_copier = _copier(WorkerRecord)
_tool_copier = _copier(ToolDeclaration)


def _copy_call(record: CallRecord) -> CallRecord:
    return cast(CallRecord, _call_copier(record))


def _copy_worker(record: WorkerRecord) -> WorkerRecord:
    return cast(WorkerRecord, _worker_copier(record))


def _copy_tool(record: ToolDeclaration) -> ToolDeclaration:
    return cast(ToolDeclaration, _tool_copier(record))


def labels_match(wanted: Mapping[str, str] | None, offered: Mapping[str, str]) -> bool:
    """A call asking for `wanted` labels may go to a worker offering `offered`."""
    return not wanted or all(offered.get(k) == v for k, v in wanted.items())


class WorkerCallStore(abc.ABC):
    """Calls, worker sessions and remote tool declarations (see the module docstring)."""

    async def close(self) -> None:
        """Writes what is queued (the store it belongs to stays open)."""

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
    async def update_worker(
        self, worker_id: str, *, heartbeat_at: float | None = None, state: str | None = None
    ) -> None: ...

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
    async def changes(self, caller: str, *, since: float, now: float) -> list[CallStatus]:
        """What a waiting caller polls (no payloads): its calls that ended at `since` or
        later, and its LEASED ones whose lease expired before `now` or that report progress."""

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
        self,
        call_id: str,
        worker_id: str,
        *,
        now: float,
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """The worker's answer: SUCCEEDED with `result`, or FAILED with `error`. False, and
        nothing written, unless the call is LEASED to `worker_id` with a lease alive at `now`."""

    @abc.abstractmethod
    async def report_progress(
        self, call_id: str, worker_id: str, progress: dict[str, Any]
    ) -> bool: ...

    @abc.abstractmethod
    async def release(
        self, worker_id: str, *, now: float, error: dict[str, Any]
    ) -> list[CallRecord]:
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
    async def sweep(
        self, *, now: float, keep_seconds: float, worker_seen_after: float
    ) -> list[CallRecord]:
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

    async def update_worker(
        self, worker_id: str, *, heartbeat_at: float | None = None, state: str | None = None
    ) -> None:
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
            if w.tenant == tenant
            and w.heartbeat_at > seen_after
            and (after_id is None or w.id > after_id)
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

    async def changes(self, caller: str, *, since: float, now: float) -> list[CallStatus]:
        return [
            CallStatus(c.id, c.state, c.lease_expires, c.progress)
            for c in self._calls.values()
            if c.caller == caller
            and (
                (c.state.finished and c.updated_at >= since)
                or (c.state is CallState.LEASED and ((c.lease_expires or 0) < now or c.progress))
            )
        ]

    async def waiting(self, execution_id: str) -> list[CallRecord]:
        return [
            _copy_call(c)
            for c in self._calls.values()
            if c.execution_id == execution_id and c.state is CallState.READY
        ]

    async def claim(self, claim: Claim, *, now: float, lease_until: float) -> list[CallRecord]:
        candidates = sorted(
            (
                c
                for c in self._calls.values()
                if c.state is CallState.READY and c.tenant == claim.tenant
            ),
            key=lambda c: (c.created_at, c.id),
        )
        taken = choose(candidates, claim, now)
        for call in taken:
            call.state, call.worker_id, call.lease_expires, call.updated_at = (
                CallState.LEASED,
                claim.worker_id,
                lease_until,
                now,
            )
        return [_copy_call(c) for c in taken]

    async def renew(self, worker_id: str, *, now: float, lease_until: float) -> set[str]:
        held = set()
        for call in self._calls.values():
            if (
                call.state is CallState.LEASED
                and call.worker_id == worker_id
                and (call.lease_expires or 0) >= now
            ):
                call.lease_expires = lease_until
                held.add(call.id)
        return held

    async def complete(
        self,
        call_id: str,
        worker_id: str,
        *,
        now: float,
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        call = self._calls.get(call_id)
        if not _leased_to(call, worker_id, now):
            return False
        assert call is not None
        call.state = CallState.FAILED if error is not None else CallState.SUCCEEDED
        call.result, call.error, call.updated_at = (
            (None if error is not None else result),
            error,
            now,
        )
        return True

    async def report_progress(self, call_id: str, worker_id: str, progress: dict[str, Any]) -> bool:
        call = self._calls.get(call_id)
        if call is None or call.state is not CallState.LEASED or call.worker_id != worker_id:
            return False
        call.progress = dict(progress)
        return True

    async def release(
        self, worker_id: str, *, now: float, error: dict[str, Any]
    ) -> list[CallRecord]:
        lost = [
            c
            for c in self._calls.values()
            if c.state is CallState.LEASED and c.worker_id == worker_id
        ]
        for call in lost:
            call.state, call.error, call.updated_at = CallState.FAILED, dict(error), now
        return [_copy_call(c) for c in lost]

    async def expire(self, ids: Sequence[str], *, now: float, error: dict[str, Any]) -> list[str]:
        ended = []
        for i in ids:
            call = self._calls.get(i)
            if (
                call is not None
                and call.state is CallState.LEASED
                and (call.lease_expires or 0) < now
            ):
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

    async def sweep(
        self, *, now: float, keep_seconds: float, worker_seen_after: float
    ) -> list[CallRecord]:
        orphans = []
        for call_id, call in list(self._calls.items()):
            if not call.state.finished and call.caller_expires < now:
                call.state, call.updated_at = CallState.CANCELLED, now
                call.error = {
                    "type": "cancelled",
                    "message": "nobody waits for the call any more",
                    "details": {},
                }
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


def choose(candidates: Sequence[Any], claim: Claim, now: float) -> list[Any]:
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


def worker_calls_for(store: Store) -> WorkerCallStore:
    """The worker call repository beside `store`: on its SQL database, or in the process."""
    from agentrun.storage.sqldb import SqlDatabase

    database = store.database
    if isinstance(database, SqlDatabase):
        from agentrun.storage.worker_calls_sql import SqlWorkerCalls

        return SqlWorkerCalls(database)
    return MemoryWorkerCalls()
