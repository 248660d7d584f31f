"""The SQLite writer thread (writer_thread.py): jobs in order on one thread, a job cancelled
before it started never runs, and a job that raises does not stop the thread."""

from __future__ import annotations

import threading

from agentrun.storage.writer_thread import WriterThread


def test_jobs_run_in_order_and_a_cancelled_one_never_runs() -> None:
    writer = WriterThread("test-writer")
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []
    threads: set[str] = set()

    def job(name: str, block: bool = False) -> None:
        threads.add(threading.current_thread().name)
        if block:
            started.set()
            assert release.wait(10)
        ran.append(name)

    def failing() -> None:
        raise RuntimeError("a bug")

    try:
        first = writer.submit(lambda: job("first", block=True))
        assert started.wait(10)
        assert not first.cancel()  # running: too late to cancel
        writer.submit(failing)  # logged; the thread goes on
        dropped = writer.submit(lambda: job("dropped"))
        writer.submit(lambda: job("last"))
        assert dropped.cancel()  # not started: it never runs
        release.set()
        done = threading.Event()
        writer.submit(done.set)
        assert done.wait(10)
        assert ran == ["first", "last"]
        assert threads == {"test-writer"}
    finally:
        release.set()
        writer.shutdown()
