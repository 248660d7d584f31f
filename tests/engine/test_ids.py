"""Execution ids sort in creation order within a process (ListExecutions pages by id)."""

from __future__ import annotations

import re
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from agentrun.engine.runtime.requests import new_execution_id


def test_ids_made_in_one_millisecond_sort_in_creation_order() -> None:
    ids = [new_execution_id(lambda: 1_700_000_000.0005) for _ in range(1000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{24}", i) for i in ids)


# No per-example deadline: on a loaded machine one example can take longer than 200 ms.
@settings(deadline=None)
@given(st.lists(st.floats(min_value=1.6e9, max_value=1.9e9), min_size=2, max_size=50))
def test_ids_sort_in_creation_order_whatever_the_clock_does(times: list[float]) -> None:
    ids = [new_execution_id(lambda t=t: t) for t in times]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_a_later_millisecond_starts_a_new_random_part() -> None:
    first = new_execution_id(lambda: 2_000_000_000.0)
    later = new_execution_id(lambda: 2_000_000_001.0)
    assert later[:12] > first[:12]


# Run in a fresh interpreter: forking an xdist worker that has loaded grpc (its fork handlers
# and threads) segfaulted the child under stress-ng in a clean-clone `make test`.
_FORK = """
import os, re
from agentrun.engine.runtime.requests import new_execution_id

at = lambda: 2_100_000_000.0
new_execution_id(at)
read, write = os.pipe()
pid = os.fork()
if pid == 0:  # the child: its next id to the parent, then gone
    try:
        os.write(write, new_execution_id(at).encode())
    finally:
        os._exit(0)
os.close(write)
child = os.read(read, 64).decode()
os.waitpid(pid, 0)
assert re.fullmatch(r"[0-9a-f]{24}", child), child
assert child != new_execution_id(at)
print("ok")
"""


def test_a_forked_process_does_not_make_its_parents_next_id() -> None:
    """A child forked after the parent made an id (the same clock, the same millisecond)
    starts from a random part of its own, not from the parent's last one (nor from random
    bytes the parent read ahead): the ids both make next differ."""
    done = subprocess.run(
        [sys.executable, "-c", _FORK], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
