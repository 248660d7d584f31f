"""The group commit every SQL repository writes through: one writer task, one transaction per group.

Commits are on the engines' hot paths (one per node completion, one per state machine
event). Callers enqueue their batches and one writer task writes everything pending in one
transaction, paying for one fsync (SQLite) or one WAL flush (PostgreSQL) per group instead
of per batch. If a group's transaction is refused (a constraint, an unknown row, a stale
fence), each of its batches is written alone, so one bad batch does not fail its innocent
neighbours; a database that is unavailable (StoreError) fails them all.

Both the executions and the instances repositories use this class, each with its own
`apply` (the rows a group writes) and `explain` (the error a refused batch gets). A dialect
may add a `direct` writer, tried first (execution turns: pg_turns.py, sqlite_turns.py): what it
leaves UNWRITTEN then goes through the transaction as a group of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import sqlalchemy as sa

from agentrun.storage.base import StoreError

if TYPE_CHECKING:
    from agentrun.storage.sqldb import SqlDatabase

__all__ = ["MAX_GROUP", "UNWRITTEN", "DirectWriter", "GroupCommit"]

Item = TypeVar("Item")

# A `direct` writer's answer for an item it did not write (it does not cover it, or refused
# it): such items are then written together the transaction's way, after the others (which
# refuses them with the usual errors, or writes them).
UNWRITTEN: Any = object()
# A dialect's faster way to write a whole group (pg_turns.py, sqlite_turns.py): each item's
# result or UNWRITTEN; None when it does not cover the group or the database refused it whole
# (nothing written); StoreError when the database is unavailable.
DirectWriter = Callable[[Sequence[Any]], Awaitable[Sequence[Any] | None]]

# Bounds one group's transaction so a burst cannot make a single commit arbitrarily slow.
MAX_GROUP = 512


class GroupCommit(Generic[Item]):
    """Writes queued items in groups through `database.transaction`.

    `apply(conn, items)` writes a group inside the transaction and returns each item's
    result (what its caller's future gets) or None for all; `explain(item, exc)` turns the
    refusal of an item written alone into the error its caller gets. A `submit` whose caller
    is cancelled may still be written: its item is already queued.
    """

    def __init__(
        self,
        database: SqlDatabase,
        apply: Callable[[sa.Connection, Sequence[Item]], Sequence[Any] | None],
        explain: Callable[[Item, Exception], Awaitable[BaseException]],
        *,
        name: str,
        max_group: int = MAX_GROUP,
        direct: DirectWriter | None = None,
    ) -> None:
        self._database = database
        self._apply = apply
        self._explain = explain
        self._name = name
        self._max_group = max_group
        self._direct = direct
        self._pending: list[tuple[Item, asyncio.Future[Any]]] = []
        # The writer's wake-up: a future of its loop while it waits for work, else None.
        self._wake: asyncio.Future[None] | None = None
        # The loop the writer task runs on (`start`): `submit` makes its futures there
        # without `asyncio.get_running_loop()`, whose check of the process id is a getpid()
        # system call on CPython 3.11 (the server's main thread made ~4.3 a StartExecution
        # call, ~1.5 without this one, starts.py's and runs.py's `_ended`: strace -c at
        # concurrency 10; the rest are grpc.aio's own).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        # The writer task of the current open; None before the first one and after close.
        self.task: asyncio.Task[None] | None = None
        # Group transactions written; tests and benchmarks use it to see that grouping happens.
        self.groups = 0

    def start(self) -> None:
        """Starts the writer (fresh per open: asyncio primitives belong to their loop)."""
        self._closing = False
        self._wake = None
        loop = self._loop = asyncio.get_running_loop()
        self.task = loop.create_task(self._run(), name=self._name)

    def reopen(self) -> None:
        """Lets a closed writer start again at the next `submit` (a repository opened anew
        on a database that stayed open)."""
        if self.task is None:
            self._closing = False

    @property
    def idle(self) -> bool:
        """Nothing queued and not closing: an item written outside the writer now (a
        `direct` writer's `write_now`) overtakes none."""
        return not self._pending and not self._closing

    def submit(self, item: Item) -> asyncio.Future[Any]:
        """Queues `item` for the next group; the future resolves once it is durable."""
        if self._closing or not self._database.is_open:
            raise StoreError("the store is not open")
        if self.task is None:
            self.start()
        elif self.task.done():
            raise StoreError("the store's writer has stopped")
        assert self._loop is not None
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending.append((item, future))
        self._wake_up()
        return future

    def _wake_up(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def close(self) -> None:
        """Writes what is queued, then stops the writer."""
        self._closing = True
        self._wake_up()
        task, self.task = self.task, None
        if task is not None:
            # Drains the queue; a writer that already died (cancelled, failed) raises nothing.
            await asyncio.wait([task])
            if not task.cancelled():
                task.exception()

    async def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        try:
            while True:
                if not self._pending:
                    if self._closing:
                        return
                    self._wake = loop.create_future()
                    await self._wake
                # Let every caller that is ready enqueue before the group is cut.
                await asyncio.sleep(0)
                while self._pending:
                    group = self._pending[: self._max_group]
                    del self._pending[: self._max_group]
                    await self._write(group)
        finally:
            # Whatever stopped the writer (cancellation at loop shutdown, a bug), nobody may
            # be left waiting on a commit that will never be written.
            pending, self._pending = self._pending, []
            _settle(pending, None, StoreError("the store's writer stopped before this commit"))

    async def _write(self, group: list[tuple[Item, asyncio.Future[Any]]]) -> None:
        if self._direct is not None and await self._write_direct(group):
            return
        await self._write_transaction(group)

    async def _write_direct(self, group: list[tuple[Item, asyncio.Future[Any]]]) -> bool:
        """Through the `direct` writer; False if it left the whole group to the transaction."""
        assert self._direct is not None
        try:
            results = await self._direct([item for item, _ in group])
        except StoreError as exc:
            _settle(group, None, exc)
            return True
        except asyncio.CancelledError:
            _settle(group, None, StoreError("the store was closed during commit"))
            raise
        except Exception:
            # Whatever it could not sort (nothing of the group was written): the
            # transaction's way decides, as it does for a group `direct` does not cover.
            return False
        if results is None:
            return False
        self.groups += 1
        left = [one for one, result in zip(group, results, strict=True) if result is UNWRITTEN]
        _settle(
            [one for one, result in zip(group, results, strict=True) if result is not UNWRITTEN],
            [result for result in results if result is not UNWRITTEN],
            None,
        )
        if left:
            await self._write_transaction(left)
        return True

    async def _write_transaction(self, group: list[tuple[Item, asyncio.Future[Any]]]) -> None:
        items = [item for item, _ in group]
        error: BaseException
        try:
            results = await self._database.group_transaction(
                lambda conn: self._apply(conn, items), items=len(items)
            )
        except StoreError as exc:  # the database is unavailable: no batch can succeed
            error = exc
        except asyncio.CancelledError:
            _settle(group, None, StoreError("the store was closed during commit"))
            raise
        except Exception as exc:
            if len(group) > 1:
                for one in group:
                    await self._write_transaction([one])
                return
            error = await self._explain(items[0], exc)
        else:
            self.groups += 1
            _settle(group, results, None)
            return
        _settle(group, None, error)


def _settle(
    group: Sequence[tuple[Any, asyncio.Future[Any]]],
    results: Sequence[Any] | None,
    error: BaseException | None,
) -> None:
    for index, (_, future) in enumerate(group):
        if future.done():  # the caller was cancelled; its batch was still written (or not)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(results[index] if results is not None else None)
