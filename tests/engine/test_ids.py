"""Execution ids sort in creation order within a process (ListExecutions pages by id)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from agentrun.engine.runtime.requests import new_execution_id


def test_ids_made_in_one_millisecond_sort_in_creation_order() -> None:
    ids = [new_execution_id(lambda: 1_700_000_000.0005) for _ in range(1000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{24}", i) for i in ids)


@given(st.lists(st.floats(min_value=1.6e9, max_value=1.9e9), min_size=2, max_size=50))
def test_ids_sort_in_creation_order_whatever_the_clock_does(times: list[float]) -> None:
    ids = [new_execution_id(lambda t=t: t) for t in times]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_a_later_millisecond_starts_a_new_random_part() -> None:
    first = new_execution_id(lambda: 2_000_000_000.0)
    later = new_execution_id(lambda: 2_000_000_001.0)
    assert later[:12] > first[:12]
