"""State machine records and the `MachineStore` interface: the instance rows, their history,
their timers and the batch one event commits. `machines.py` holds the SQL store and
re-exports these; `machine_memory.py` the in-process one."""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import enum
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agentrun.storage.records import EventRecord


class InstanceState(enum.StrEnum):
    """The lifecycle of an instance (FORMAT.md, States)."""

    ACTIVE = "ACTIVE"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self is not InstanceState.ACTIVE


class EntryKind(enum.StrEnum):
    """What a history entry records."""

    # The instance was created and entered its initial state.
    CREATED = "CREATED"
    # An event moved the instance (to another state, or to the same one).
    TRANSITION = "TRANSITION"
    # The state handles the event but none of its guards held: nothing changed.
    NO_TRANSITION = "NO_TRANSITION"
    # The state does not handle the event: refused, nothing changed.
    REJECTED = "REJECTED"
    # An action, guard or assign failed before the state changed: nothing changed but the
    # actions that ran; an `on_error` entry or the instance's failure follows.
    ABORTED = "ABORTED"
    # The instance was cancelled.
    CANCELLED = "CANCELLED"


@dataclass(slots=True)
class InstanceRecord:
    id: str
    tenant: str
    workflow: str
    version: int
    state: InstanceState
    # The name of the machine state the instance is in.
    current: str
    data: dict[str, Any]
    input: Any
    created_at: float
    updated_at: float = 0.0
    ended_at: float | None = None
    # {"type", "message", "state", "details"} when the instance FAILED.
    error: dict[str, Any] | None = None
    request_id: str | None = None
    request_hash: str | None = None
    # The execution (and its node) that started the instance, for a DAG `workflow` node.
    parent_id: str | None = None
    parent_node: str | None = None
    # The sequence of the last history entry.
    last_sequence: int = 0
    # The sequence of the entry that entered `current` (timers and invokes carry it, so a
    # stale one is recognised after the state was left and entered again).
    entry_sequence: int = 0
    # The child execution the current state's `invoke` runs.
    invoke_execution: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # An event being handled whose action waits for its next attempt: {"event", "done" (the
    # results of the actions called so far), "attempt", "started", "error", "key" (its retry
    # timer), "at"}. The instance takes no other event until it is done.
    pending: dict[str, Any] | None = None
    # The replica that drives the instance (its timers, retries, invoked execution) while
    # its lease lasts; the epoch grows each time the lease changes hands and fences commits.
    # Written by the lease methods and at creation, never by a batch.
    owner: str | None = None
    lease_epoch: int = 0
    lease_expires_at: float | None = None


@dataclass(slots=True)
class HistoryRecord:
    instance_id: str
    sequence: int
    kind: EntryKind
    time: float
    # The event's name (`after:30m`, `invoke:done`, `invoke:error`, `action:error` for the
    # engine's own), its id (None when the sender gave none) and its data.
    event: str
    event_id: str | None
    event_data: Any
    from_state: str
    # Where the instance is after the entry (from_state when nothing moved).
    to_state: str
    # Index of the transition taken among the event's guarded ones; None when none was.
    transition_index: int | None = None
    # The actions run, in order: {phase, state, index, kind, target, ok, attempts, output|error}.
    actions: list[dict[str, Any]] | None = None
    # The values `assign` set.
    assigned: dict[str, Any] | None = None
    # The instance's lifecycle state after the entry.
    instance_state: InstanceState = InstanceState.ACTIVE
    error: dict[str, Any] | None = None
    # Whether the transition exited and re-entered its state.
    reentered: bool = False


@dataclass(slots=True)
class TimerRecord:
    instance_id: str
    # `ENTRY_SEQUENCE:INDEX`: which entry into the state armed it, and which `after` it is.
    key: str
    state: str
    index: int
    fire_at: float


@dataclass(slots=True)
class MachineBatch:
    """Everything one event changed, committed atomically."""

    instance: InstanceRecord
    history: list[HistoryRecord]
    # Not None: the instance's timers are replaced by these (its state was left or entered).
    timers: list[TimerRecord] | None = None
    # A timer that fired while the instance stayed in its state (or a retry timer spent).
    fired: str | None = None
    # Timers added to the instance's (after `timers` and `fired` applied): a retry timer.
    added: Sequence[TimerRecord] = ()
    # Not None: the instance's `last_sequence` the batch was computed from; the commit is
    # refused when the stored one differs (a batch with no history has no key to collide on).
    base: int | None = None
    # Not None: (owner, lease_epoch) the writer holds; the commit is refused (LeaseLost) when
    # the instance's lease is another replica's or another epoch's.
    fence: tuple[str, int] | None = None


def history_event(entry: HistoryRecord) -> EventRecord:
    """A history entry as an event of its instance, for event buses (`instance.transition`,
    `instance.created`, ...; its id on the bus is `INSTANCE_ID:SEQUENCE`, as an execution
    event's is `EXECUTION_ID:SEQUENCE`)."""
    data: dict[str, Any] = {
        "event": entry.event,
        "event_id": entry.event_id,
        "event_data": entry.event_data,
        "from_state": entry.from_state,
        "to_state": entry.to_state,
        "transition_index": entry.transition_index,
        "instance_state": entry.instance_state.value,
    }
    for key in ("actions", "assigned", "error"):
        value = getattr(entry, key)
        if value is not None:
            data[key] = value
    if entry.reentered:
        data["reentered"] = True
    return EventRecord(
        entry.instance_id,
        entry.sequence,
        f"instance.{entry.kind.value.lower()}",
        entry.time,
        None,
        data,
    )


R = TypeVar("R", InstanceRecord, HistoryRecord, TimerRecord)


def _copier(cls: type[R]) -> Callable[[R], R]:
    getter = operator.attrgetter(*(f.name for f in dataclasses.fields(cls)))
    return lambda record: cls(*getter(record))


copy_instance = _copier(InstanceRecord)
copy_history = _copier(HistoryRecord)
copy_timer = _copier(TimerRecord)


class MachineStore(abc.ABC):
    """Durable state of state machine instances.

    Contract (tests/machines/test_store.py runs it against every backend):
    - `commit` is atomic and, once it returns, survives a process kill (SQL backends).
    - history is append-only; (instance_id, sequence) and (instance_id, event_id) are unique.
    - records returned are copies.
    - leases: one owner per instance at a time; a fenced commit of a writer that is not the
      owner at its epoch is refused with LeaseLost and writes nothing.

    Beyond `commit`, a backend may offer (None where it does not; typed here, so that the
    engine needs no getattr): `submit`, which queues a batch on a group commit and returns
    the future of its durability; `write_at_once`, a commit without a coroutine when it can
    be one, whether it was (False: nothing written, commit the batch the usual way): always
    where nothing waits (memory, which raises what `commit` would), on SQLite when its group
    commit would write the batch alone on the loop's thread anyway (a batch it cannot write,
    stale or refused, is False: `commit` gives the outcome); `yield_first`: whether `submit`
    would write a batch at once after the loop went round once, where it queues it now
    (SQLite: its writes at once kept the loop from going round for too long, see
    `SqliteDatabase.streak_spent`). `announces`: its commits (not `create_instance`) tell the
    other replicas of new history themselves (`events:ID` notifications, as execution commits
    do), so the engine sends none after them (on PostgreSQL, a round trip saved per commit).
    """

    submit: Callable[[MachineBatch], asyncio.Future[None]] | None = None
    write_at_once: Callable[[MachineBatch], bool] | None = None
    yield_first: Callable[[], bool] | None = None
    announces: bool = False

    async def open(self) -> None:
        """Nothing to connect: the store it belongs to (`Store.instances`) is open already."""

    async def close(self) -> None:
        """Flushes pending commits."""

    @abc.abstractmethod
    async def create_instance(
        self,
        record: InstanceRecord,
        history: Sequence[HistoryRecord] = (),
        timers: Sequence[TimerRecord] = (),
    ) -> tuple[InstanceRecord, bool]:
        """Inserts an instance; with a `request_id` the tenant used already, returns
        (the existing instance, False) and writes nothing."""

    @abc.abstractmethod
    async def get_instance(self, instance_id: str) -> InstanceRecord | None: ...

    @abc.abstractmethod
    async def list_instances(
        self,
        tenant: str,
        *,
        limit: int,
        after_id: str | None = None,
        workflow: str | None = None,
        states: Sequence[InstanceState] = (),
        current: str | None = None,
    ) -> list[InstanceRecord]:
        """Ordered by id (ids sort by creation time)."""

    @abc.abstractmethod
    async def list_history(
        self, instance_id: str, *, after_sequence: int = 0, limit: int = 1000
    ) -> list[HistoryRecord]:
        """Entries with sequence > after_sequence, ascending."""

    @abc.abstractmethod
    async def event_ids(self, instance_id: str) -> dict[str, int]:
        """Every event id the instance's history holds, with its entry's sequence."""

    @abc.abstractmethod
    async def list_timers(
        self,
        *,
        instance_id: str | None = None,
        due_before: float | None = None,
        limit: int | None = None,
    ) -> list[TimerRecord]:
        """Armed timers, soonest first: every one (recovery re-arms them), one instance's, or
        those due before a time (the sweep fires timers their replica missed)."""

    @abc.abstractmethod
    async def list_invoking(self) -> list[InstanceRecord]:
        """ACTIVE instances whose current state runs an invoked execution (recovery waits
        for them again)."""

    @abc.abstractmethod
    async def commit(self, batch: MachineBatch) -> None:
        """Updates the instance (it must exist), appends history, replaces or drops timers."""

    # Leases ------------------------------------------------------------------------------
    @abc.abstractmethod
    async def acquire(
        self,
        instance_id: str,
        owner: str,
        *,
        lease_seconds: float,
        now: float,
        take: bool,
        tenant: str | None = None,
    ) -> InstanceRecord | None:
        """The instance (of `tenant`, when given) with its lease held by `owner` until `now +
        lease_seconds`: kept at its epoch when `owner` held it already, else taken with the
        epoch + 1. Another owner's lease that has not expired is taken only with `take`;
        without, or when the instance does not exist, None."""

    @abc.abstractmethod
    async def renew_leases(self, owner: str, *, lease_seconds: float, now: float) -> set[str]:
        """Extends the leases `owner` holds on ACTIVE instances; returns their ids."""

    @abc.abstractmethod
    async def claim(
        self,
        owner: str,
        *,
        lease_seconds: float,
        now: float,
        limit: int,
        include_own: bool = False,
        after_id: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[InstanceRecord]:
        """Takes (epoch + 1) ACTIVE instances with something to drive (a timer, a pending
        event, an invoked execution) whose lease expired, or that nobody holds; with
        `include_own`, also `owner`'s own (a replica restarted under its id). In id order,
        after `after_id`: the next page (runtime/claims.py). With `ids`, only those (a
        restart takes back the own ones its pages skipped: on PostgreSQL a row another
        transaction locked is skipped, not waited for)."""

    @abc.abstractmethod
    async def held_instances(self, owner: str) -> set[str]:
        """The ids of the ACTIVE instances with something to drive that `owner` holds (its
        lease current or not): those `claim` with `include_own` takes back."""

    @abc.abstractmethod
    async def release_leases(self, owner: str) -> None:
        """Lets `owner`'s leases expire now (a replica stopping: others take over at once)."""
