"""The SQLite writer thread (sqlite_writes.py): one thread running the jobs handed to it one at a
time, in order, each of which may be cancelled until the thread starts it.

What `concurrent.futures.ThreadPoolExecutor(1)` did, without what the writer does not use: a
`Future` per job (a `threading.Condition` made, and taken twice by the thread: running, then
done), the pool's locks around each submit and its idle semaphore taken and released at every
job. The writer answers the loop itself (`call_soon_threadsafe`, `SqliteWrites._hand_over`). A
hand-off there and back took ~37-47 µs of CPU through the pool and ~29 µs this way (5,000 no-op
round trips from an asyncio loop: submit, the thread's `call_soon_threadsafe`, the loop's future
awaited; 7 Dec 2026).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

__all__ = ["Job", "WriterThread"]

log = logging.getLogger(__name__)


class Job:
    """A job handed to the writer thread. Whoever claims it first decides: the thread (it
    runs) or `cancel` (it never does). `list.append` is atomic under the GIL, so the first
    item appended is the one claim both sides read."""

    __slots__ = ("_claims", "_work")

    def __init__(self, work: Callable[[], None]) -> None:
        self._work = work
        self._claims: list[bool] = []

    def cancel(self) -> bool:
        """True if the job will never run (the thread had not started it)."""
        claims = self._claims
        claims.append(False)
        return not claims[0]

    def _run(self) -> None:
        claims = self._claims
        claims.append(True)
        if claims[0]:
            self._work()


class WriterThread:
    """One daemon thread running the submitted jobs in order until `shutdown`. A job that
    raises is logged and the thread goes on (the writer's jobs catch their own errors and
    hand them to the loop: this is a backstop, so that a bug does not stop every commit)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, work: Callable[[], None]) -> Job:
        job = Job(work)
        self._jobs.put(job)
        return job

    def shutdown(self) -> None:
        """Stops the thread once the jobs submitted before have run (it is not waited for)."""
        self._jobs.put(None)

    def _serve(self) -> None:
        take = self._jobs.get
        while (job := take()) is not None:
            try:
                job._run()
            except BaseException:
                log.exception("a job of the SQLite writer thread failed")
