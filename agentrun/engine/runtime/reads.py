"""How clients read a run of either kind: its record, its numbered log, a watch of that log.

An execution and a state machine instance are read the same way: the record only in the
name of the tenant that owns it (another tenant's is "not found", never "forbidden"), the
log (execution events, instance history) in pages after a sequence, and a watch that
yields the stored backlog and then live entries from the engine's `Hub`, each once and in
order, ending after the entry that ends the run. `RunReads` is that, once, for both; each
interpreter gives it its store's readers and what "ended" means for its records.

The façades' read methods (`Engine.list_events`, `MachineEngine.list_history`, both `watch`,
both list methods) take their keywords as the typed dicts below, declared once here, and hand
them on: the keywords, their types and their defaults are the same for both kinds of run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypedDict, TypeVar

from agentrun.engine.hub import Hub, follow
from agentrun.engine.runtime.common import DEFAULT_TENANT


class _Run(Protocol):
    @property
    def tenant(self) -> str: ...

    @property
    def last_sequence(self) -> int: ...


R = TypeVar("R", bound=_Run)
E = TypeVar("E")
S = TypeVar("S")


class Since(TypedDict, total=False):
    """Where a read of a run's log starts: in the name of `tenant` (default: the default
    tenant), after `after_sequence` (default 0: from the first entry)."""

    tenant: str
    after_sequence: int


class LogPage(Since, total=False):
    """A page of a run's log: at most `limit` entries (default 1000)."""

    limit: int


class RunFilter(TypedDict, Generic[S], total=False):
    """What a list of runs keeps, beside its tenant and page size: ids after `after_id`, runs of
    `workflow`, runs in one of `states` (empty: every state)."""

    after_id: str | None
    workflow: str | None
    states: Sequence[S]


@dataclass(frozen=True, slots=True)
class RunReads(Generic[R, E]):
    hub: Hub
    # The stored record, None when there is none.
    load: Callable[[str], Awaitable[R | None]]
    # The log after a sequence, at most `limit` entries: (run id, after, limit).
    read_log: Callable[[str, int, int], Awaitable[list[E]]]
    # Whether a record is in a final state, and whether a log entry is the one that ends it.
    ended: Callable[[R], bool]
    is_final: Callable[[E], bool]
    # The error for a run that does not exist (or belongs to another tenant).
    not_found: Callable[[str], Exception]

    async def get(self, run_id: str, tenant: str = DEFAULT_TENANT) -> R:
        """The run's record, if `tenant` owns it."""
        record = await self.load(run_id)
        if record is None or record.tenant != tenant:
            raise self.not_found(run_id)
        return record

    async def log(
        self,
        run_id: str,
        *,
        tenant: str = DEFAULT_TENANT,
        after_sequence: int = 0,
        limit: int = 1000,
    ) -> list[E]:
        """A page of the run's log after sequence `after_sequence`."""
        await self.get(run_id, tenant)
        return await self.read_log(run_id, after_sequence, limit)

    async def watch(
        self, run_id: str, *, tenant: str = DEFAULT_TENANT, after_sequence: int = 0
    ) -> AsyncIterator[E]:
        """The stored log after `after_sequence`, then live entries; each once, in order; ends
        after the entry that ends the run."""
        await self.get(run_id, tenant)

        async def read_page(start: int, limit: int) -> list[E]:
            return await self.read_log(run_id, start, limit)

        async def finished(last: int) -> bool:
            record = await self.load(run_id)
            if record is None or not self.ended(record):
                return False
            # An ended run whose entries past `last` the store no longer holds (event retention
            # deleted them) has nothing more to send: waiting for them would never end.
            return record.last_sequence <= last or not await self.read_log(run_id, last, 1)

        async for entry in follow(
            self.hub,
            run_id,
            after=after_sequence,
            read_page=read_page,
            is_final=self.is_final,
            finished=finished,
        ):
            yield entry
