"""SQLite's writes (`SqliteWrites`, the base of `SqliteDatabase`): where each write transaction
runs on the one write connection, the transaction itself, and the WAL checkpoints between them.

SQLite allows one writer at a time, so every write goes through one long-lived sqlite3
connection that starts its transactions with `BEGIN IMMEDIATE` (no lock upgrades, no
SQLITE_BUSY half way through). It is used on a thread of its own (a transaction costs one
hand-off there and one wake-up back, not one per statement: `_hand_over`), except for a small
group commit while that thread is idle and commits are quick: that runs on the event loop's own
thread, where the two wake-ups would cost about what the commit's fsync does
(`group_transaction`, `_inline_ready`), as does one batch written at once without a coroutine
(`write_now`, for as long as the loop went round recently: the streak). WAL checkpoints run in
the writer thread between transactions (`_checkpoint_soon`). The connections themselves
(engines, PRAGMAs, open and close) and the reads are `SqliteDatabase`'s (sqldb_sqlite.py).

A base class, not an object the database holds: the commit path reads this state as
attributes of the database itself, one lookup each, as before the split (a chain step's
commit is the hot path)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

from agentrun.storage.base import StoreError
from agentrun.storage.sqldb import SqlDatabase, store_errors
from agentrun.storage.writer_thread import Job, WriterThread

__all__ = [
    "AUTOCHECKPOINT_PAGES",
    "CHECKPOINT_PAGES",
    "INLINE_ITEMS",
    "SqliteWrites",
    "is_busy",
    "loop_has_work",
]

T = TypeVar("T")


# A group commit of at most this many batches runs on the event loop's thread when the writer
# thread is idle: a hand-off to the thread and the wake-up back cost about as much as the
# commit's fsync on a small VM. Larger groups (a busy engine) go to the thread, where their
# fsync overlaps the loop's work.
INLINE_ITEMS = 2
# Only while transactions take less than this on average (a moving average over both
# paths): on a slow or busy disk the hand-off is small beside the fsync, and the loop must
# not stall behind the disk.
INLINE_MAX_SECONDS = 0.003
# One inline transaction slower than this (a long WAL checkpoint, a stall) sends the next
# INLINE_PAUSE_COMMITS group commits to the thread, whatever the average says. Counted in
# commits, not seconds: on a machine whose CPUs are oversubscribed an inline commit is now and
# then descheduled for longer than this, and a pause in seconds then kept nearly every commit
# on the thread, whose two wake-ups cost most there (one instance's events: 1,928 µs each
# through the thread against 578 µs inline, /dev/shm, loadavg 14 on 2 cores).
INLINE_SLOW_SECONDS = 0.020
INLINE_PAUSE_COMMITS = 16
# While other callbacks are ready on the loop, a commit runs on its thread only if commits
# take less than this on average: else the loop would wait out the commit's fsync, which the
# writer thread overlaps with that work (two wake-ups across threads, ~0.3 ms here, cost less).
INLINE_BUSY_MAX_SECONDS = 0.0003
# How long batches written at once (`write_now`) may keep the loop from its other work: a run
# whose tools answer at once commits turn after turn without waiting, and only the loop's
# iterations read its sockets. Past this since the loop last went round, a batch takes the
# group commit's way, whose writer task lets it go round.
NOW_STREAK_SECONDS = 0.002
# WAL checkpoints run in the writer thread, between transactions, never inside a commit: SQLite's
# own (every 1,000 pages by default) ran inside the commit that crossed the mark, most often
# one written at once on the loop's thread, which it held ~1 ms (up to 4 ms) every ~200 chain
# steps (benchmarks/step_floor.py, 7 Dec 2026). Once about CHECKPOINT_PAGES pages were written
# (estimated from commits: SQLite tells a WAL's size only by checkpointing it), a PASSIVE
# checkpoint is queued to the writer thread, which holds the write connection meanwhile, so no
# writer of this store appends while it runs: it copies the whole WAL and the next commit
# starts the WAL over (the size stays bounded under continuous writes; a checkpoint beside
# the writes would never catch up). SQLite's own autocheckpoint stays as a backstop at
# AUTOCHECKPOINT_PAGES (~16 MB of 4 KiB pages), for when ours falls behind (another process's
# reader holding an old snapshot, commits far larger than estimated).
CHECKPOINT_PAGES = 1000
AUTOCHECKPOINT_PAGES = 4000
# Commits between two checkpoints at first; then from the pages per commit the last one found.
CHECKPOINT_COMMITS = 200
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class _Busy(Exception):
    """Another process holds the write lock; nothing was written (run it in the thread)."""


def loop_has_work() -> bool:
    """Whether the running loop has callbacks ready (other tasks that an inline commit would
    hold up for its fsync): then the commit goes to the thread and the loop runs on, so more
    batches queue for the next group meanwhile. Under gRPC StartExecution at concurrency 10
    96% of commits found work ready; inline, each held the loop ~0.6-1.3 ms for a group of
    one start (calls arrive one per loop wake-up), ~0.95 commits per start. asyncio's loop
    keeps them in `_ready`; a loop without it (uvloop) reads as idle."""
    return bool(getattr(asyncio.get_running_loop(), "_ready", None))


def _tell(
    loop: asyncio.AbstractEventLoop,
    settle: Callable[[asyncio.Future[Any], Any], None],
    outcome: asyncio.Future[Any],
    value: Any,
) -> None:
    """From the writer thread: `settle(outcome, value)` on the loop (none if it closed)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle, outcome, value)


def _succeed(outcome: asyncio.Future[Any], result: Any) -> None:
    if not outcome.done():  # its caller was cancelled
        outcome.set_result(result)


def _fail(outcome: asyncio.Future[Any], exc: BaseException) -> None:
    if not outcome.done():
        outcome.set_exception(exc)


def is_busy(exc: BaseException) -> bool:
    """Whether `exc` (SQLAlchemy's or sqlite3's) says another connection holds the lock."""
    orig = getattr(exc, "orig", exc)
    return isinstance(orig, sqlite3.OperationalError) and orig.sqlite_errorcode in _BUSY


class SqliteWrites(SqlDatabase):
    """`SqliteDatabase`'s write side: the write connection's state and where its transactions
    run (the connections are opened and closed by `SqliteDatabase`, sqldb_sqlite.py)."""

    def __init__(
        self, url: str, *, synchronous: str = "FULL", lease_seconds: float | None = None
    ) -> None:
        super().__init__(url, synchronous=synchronous, lease_seconds=lease_seconds)
        self._sync_writer: sa.Engine | None = None
        self._sync_conn: sa.Connection | None = None
        self._thread: WriterThread | None = None
        # Transactions handed to the writer thread, and those it finished (counted by the
        # thread itself: a caller cancelled while its transaction runs stops waiting, the
        # thread does not). While they differ, the thread owns the write connection and
        # nothing runs on the loop's thread.
        self._handed = 0
        self._finished = 0
        self._dropped = 0
        # How many group commits still go to the thread because an inline one was slow.
        self._inline_pause = 0
        # When the batches written at once since the loop last went round began (None: the
        # loop went round since the last one); see `write_now`.
        self._streak: float | None = None
        # The timer that ends the streak when the loop goes round (`_went_round`), and whether
        # the streak began again while that timer was due, not run yet (`write_now`).
        self._round: asyncio.TimerHandle | None = None
        self._again = False
        # The running loop `write_now` found last (`_running_loop`).
        self._loop_now: asyncio.AbstractEventLoop | None = None
        # Commits since a checkpoint was last queued, and how many make one (`_checkpoint_soon`).
        self._commits = 0
        self._checkpoint_every = CHECKPOINT_COMMITS
        # The write connection's busy_timeout now (ms; `_run` sets it per transaction).
        self._wait_ms = 0
        # The write connection's PRAGMA foreign_keys now (`_run` sets it per transaction).
        self._foreign_keys = True
        # The write connection's sqlite3 handle and a cursor of it (`_run`).
        self._sync_driver: sqlite3.Connection | None = None
        self._sync_cursor: sqlite3.Cursor | None = None
        # A moving average of how long a write transaction takes (seconds).
        self._average = 0.0

    async def transaction(self, work: Callable[[sa.Connection], T], *, leases: bool = False) -> T:
        """In the writer thread (`leases` changes nothing: there is one writer)."""
        return await self._write(work, foreign_keys=True)

    async def group_transaction(self, work: Callable[[sa.Connection], T], *, items: int) -> T:
        """A group commit of `items` batches: a small one on the event loop's own thread when
        the writer is idle (see `_inline_ready`), anything else in the writer thread."""
        return await self._group(work, items=items, raw=False)

    async def turn_transaction(
        self, work: Callable[[sqlite3.Connection], T], *, items: int, checked: bool = False
    ) -> T:
        """`group_transaction` with `work` given the write connection's sqlite3 handle, not
        SQLAlchemy's: the turn writer's way (sqlite_turns.py). sqlite3's own errors pass
        through raw; a `work` that raises has written nothing (rolled back). `checked`: the
        work writes a row that references a parent (a node, an event, a signal) only after
        it found that parent row in this transaction (a fenced UPDATE that changed it, or its
        INSERT), so SQLite's own reference checks are left out (`_run`)."""
        return await self._group(work, items=items, raw=True, checked=checked)

    def write_now(
        self, work: Callable[[sqlite3.Connection], T], *, checked: bool = False
    ) -> tuple[T] | None:
        """One batch's `work`, written now without a coroutine, when the group commit would
        write it alone on the loop's thread anyway: no other work ready on the loop to join a
        group (the caller checks its own queue), the writer thread idle and commits quick
        (`inline_now`), and the loop gone round within NOW_STREAK_SECONDS. Its result in a
        1-tuple; None: nothing written (not now, busy, or it failed and rolled back), and the
        caller's group commit takes the batch and gives its caller the usual outcome. One
        streak for every writer of this database: they share the loop.

        The streak's own timer, due and not run yet, is no other work (`loop_has_work` read it
        as some): it tells that the loop went round, and a streak begins again there, bounded as
        any (a caller writing on without a suspension must not hold the loop unbounded). A
        run whose turns give the loop a turn now and then (loop.py's `_BUSY_TURNS`) resumed before that timer ran, and its next turn
        went the group commit's way: one turn in 16 of a chain of stored steps. `checked`: as
        `turn_transaction`'s."""
        loop = self._running_loop()
        # The loop's ready callbacks, read once (`loop_has_work`, `_other_work`).
        ready: Any = getattr(loop, "_ready", None)
        if ready and (len(ready) > 1 or ready[0] is not self._round):
            return None  # other work ready: it joins a group (`_other_work`)
        # `inline_now(1)` written out (no other work: `_inline_ready`'s last clause holds).
        if (
            self._inline_pause > 0
            or self._handed != self._finished + self._dropped
            or self._sync_writer is None
            or self._average >= INLINE_MAX_SECONDS
        ):
            return None
        streak = self._streak
        if streak is None:
            self._streak = time.monotonic()
            # At the loop's next iteration (a timer: a ready callback would read as work).
            self._round = loop.call_later(0, self._went_round)
        elif ready and not self._again:
            # The streak's timer ready: the loop went round, a streak begins again (once: a
            # caller that writes on without a suspension is bounded from here as any).
            self._streak, self._again = time.monotonic(), True
        elif time.monotonic() - streak > NOW_STREAK_SECONDS:
            return None
        try:
            return self._inline(work, raw=True, checked=checked)
        except Exception:  # rolled back: the group commit's ways sort it out
            return None

    def _went_round(self) -> None:
        self._streak, self._again = None, False

    def streak_spent(self) -> bool:
        """Whether batches written at once kept the loop from going round for longer than
        NOW_STREAK_SECONDS: `write_now` refuses until it does. A caller that can give the loop
        one turn first (`await asyncio.sleep(0)`: the loop reads its sockets) may then write
        at once again, where the group commit's way costs its writer task's loop turns and
        wake-ups (one instance's events, a sender that never waits: ~90-110 µs more each)."""
        streak = self._streak
        return streak is not None and time.monotonic() - streak > NOW_STREAK_SECONDS

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, as `asyncio.get_running_loop()`, without its cost at every
        commit: on CPython 3.11 each call checks the process id with `getpid()`, a system call
        (`write_now` asked three times a turn). The loop found last is this thread's running
        loop while its `_thread_id` (set by asyncio's `run_forever` while it runs, None after)
        is this thread's: one loop runs on a thread at a time. A loop without it (uvloop) is
        asked for every time."""
        loop = self._loop_now
        if loop is None or getattr(loop, "_thread_id", None) != threading.get_ident():
            loop = self._loop_now = asyncio.get_running_loop()
        return loop

    def _other_work(self) -> bool:
        """`loop_has_work`, the streak's own timer (due, not run yet) left out."""
        ready: Any = getattr(self._running_loop(), "_ready", None)
        return bool(ready) and (len(ready) > 1 or ready[0] is not self._round)

    def inline_now(self, items: int) -> bool:
        """Whether `write_now` would write a group of `items` batches now (a caller checks it
        before building the work)."""
        return self._inline_pause <= 0 and items <= INLINE_ITEMS and self._inline_ready()

    def _inline(
        self, work: Callable[[Any], T], *, raw: bool, checked: bool = False
    ) -> tuple[T] | None:
        try:
            done = (self._run(work, foreign_keys=not checked, wait=False, raw=raw),)
            self._checkpoint_soon()
            return done
        except _Busy:
            return None  # another process holds the write lock: wait for it in the thread
        except Exception:
            # Sorted as `store_errors` sorts them, entered only on a failure: a generator's
            # context manager at every commit cost more than this `try`.
            with store_errors():
                raise

    async def _group(
        self, work: Callable[[Any], T], *, items: int, raw: bool, checked: bool = False
    ) -> T:
        if self._inline_pause > 0:
            self._inline_pause -= 1
        elif items <= INLINE_ITEMS and self._inline_ready():
            done = self._inline(work, raw=raw, checked=checked)
            if done is not None:
                return done[0]
        return await self._write(work, foreign_keys=not checked, raw=raw)

    def _hand_over(self, job: Callable[[], T]) -> tuple[Job, asyncio.Future[T]]:
        """`job` in the writer thread, counted as handed until it finished (`_handed`,
        `_finished`), and a loop future of its outcome, which the thread completes through
        `call_soon_threadsafe`: `asyncio.wrap_future` chained a second future with callbacks
        on both threads, ~53k instructions more per commit on the loop (callgrind)."""
        thread = self._thread
        assert thread is not None
        loop = self._running_loop()
        outcome: asyncio.Future[T] = loop.create_future()

        def run() -> None:
            try:
                result = job()
            except BaseException as exc:
                self._finished += 1
                _tell(loop, _fail, outcome, exc)
            else:
                self._finished += 1
                _tell(loop, _succeed, outcome, result)

        submitted = thread.submit(run)
        self._handed += 1
        return submitted, outcome

    def _inline_ready(self) -> bool:
        """Whether a transaction may run on the loop's thread now: the writer thread has
        nothing queued or running (it owns the one write connection meanwhile), and the last
        commits are quick (a slow disk sends them to the thread, so the loop is not held up
        by it; a single slow one, `_inline_pause` commits), quicker than a hand-off to the
        thread when the loop has other work ready."""
        return (
            self._handed == self._finished + self._dropped
            and self._sync_writer is not None
            and self._average < INLINE_MAX_SECONDS
            and (self._average < INLINE_BUSY_MAX_SECONDS or not self._other_work())
        )

    async def _write(
        self,
        work: Callable[[Any], T],
        *,
        foreign_keys: bool,
        raw: bool = False,
        timed: bool = True,
    ) -> T:
        if self._engine is None:
            raise StoreError("the store is not open")
        submitted, outcome = self._hand_over(
            lambda: self._run(work, foreign_keys=foreign_keys, wait=True, raw=raw, timed=timed)
        )
        try:
            with store_errors():
                result = await outcome
            self._checkpoint_soon()
            return result
        except asyncio.CancelledError:
            # A transaction the thread never started is dropped; one it started runs to
            # its end and counts itself.
            if submitted.cancel():
                self._dropped += 1
            raise

    def _checkpoint_soon(self) -> None:
        """After a commit, on the loop's thread: once enough commits wrote about
        CHECKPOINT_PAGES pages, a checkpoint goes to the writer thread. It counts as a handed
        transaction, so commits meanwhile go to the thread too and wait behind it (the loop
        does not), and it runs when the commits queued before it are written."""
        self._commits += 1
        thread = self._thread
        if self._commits < self._checkpoint_every or thread is None:
            return
        commits, self._commits = self._commits, 0

        def checkpoint() -> None:
            try:
                self._checkpoint(commits)
            finally:
                self._finished += 1

        thread.submit(checkpoint)
        self._handed += 1

    def _checkpoint(self, commits: int) -> None:
        """A PASSIVE checkpoint on the write connection, in the writer thread (no writer of
        this store runs meanwhile); what it copied sets how many commits make the next one. A
        failure is left to the next one (or the backstop autocheckpoint), and so is a write
        connection dropped (after a failed transaction, or closed by `dispose`, which may
        have run first): none is opened for a checkpoint."""
        conn = self._sync_conn
        if conn is None or conn.closed or conn.invalidated:
            return
        with contextlib.suppress(Exception):
            driver = conn.connection.driver_connection
            assert driver is not None
            busy, pages, _copied = driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if not busy and pages > 0:
                every = commits * CHECKPOINT_PAGES // pages
                self._checkpoint_every = max(8, min(every, 10 * CHECKPOINT_COMMITS))

    def _run(
        self,
        work: Callable[[Any], T],
        *,
        foreign_keys: bool,
        wait: bool,
        raw: bool = False,
        timed: bool = True,
    ) -> T:
        """One write transaction on the write connection, in the writer thread (`wait`: for
        another process's write lock up to `busy_timeout_ms`) or on the loop's thread (no
        waiting: `_Busy` if the lock is taken, before anything was written). `work` gets the
        SQLAlchemy connection, or with `raw` its sqlite3 handle (no SQLAlchemy transaction
        around it: BEGIN IMMEDIATE and COMMIT are all there is).

        `foreign_keys`: whether SQLite checks the references of the rows written. Off for a
        migration (see `_migrate_schema`) and for a turn writer's work (`checked`), which
        writes a node, event or signal only after it found its execution's row in the same
        transaction: each reference check was a lookup of that row in its primary key index
        for each such row (five a chain step, ~11k of its ~229k instructions on the storage
        side, callgrind). The PRAGMA is set only when a transaction needs the other state
        than the connection has (`_foreign_keys`): a run of turns sets it once. `timed`: the
        transaction counts in the average the inline ways read (not a migration: slow once,
        not a sign of the disk)."""
        writer = self._sync_writer
        assert writer is not None
        # One connection, kept for the store's life: no pool checkout or reset per
        # transaction. Dropped after a failure, so the next one starts clean.
        conn = self._sync_conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._sync_conn = writer.connect()
            self._wait_ms = 0  # as `_pragmas` opened it
            self._foreign_keys = True
            # Its sqlite3 handle (SQLAlchemy's property chain cost ~0.5 µs a commit) and a
            # cursor for BEGIN and COMMIT (`driver.execute` makes one per call).
            driver = conn.connection.driver_connection
            assert driver is not None
            self._sync_driver, self._sync_cursor = driver, driver.cursor()
        driver, cursor = self._sync_driver, self._sync_cursor
        assert driver is not None and cursor is not None
        started = time.monotonic()
        # The lock wait this transaction may have: none on the loop's thread (it must not
        # wait). Set only when it changes: on a slow disk every commit is in the thread, and
        # two PRAGMAs per commit were a quarter of its statements.
        wait_ms = self.busy_timeout_ms if wait else 0
        if self._wait_ms != wait_ms:
            driver.execute(f"PRAGMA busy_timeout={wait_ms}")
            self._wait_ms = wait_ms
        try:
            if self._foreign_keys is not foreign_keys:  # outside a transaction (else a no-op)
                driver.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
                self._foreign_keys = foreign_keys
            try:
                # IMMEDIATE: the write lock now, so no lock upgrade fails half way through.
                cursor.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not wait and exc.sqlite_errorcode in _BUSY:
                    raise _Busy from exc
                raise sa.exc.OperationalError("BEGIN IMMEDIATE", None, exc) from exc
            if raw:
                result = work(driver)
                cursor.execute("COMMIT")
            else:
                with conn.begin():
                    result = work(conn)
        except _Busy:
            raise  # before BEGIN: nothing to undo
        except BaseException as exc:
            with contextlib.suppress(Exception):
                conn.close()
            self._sync_conn = None
            if not wait and is_busy(exc):
                raise _Busy from exc
            raise
        took = time.monotonic() - started
        if timed:
            self._average += (took - self._average) / 16
        if not wait and took > INLINE_SLOW_SECONDS:
            self._inline_pause = INLINE_PAUSE_COMMITS
        return result
