"""Fault injection: the engine runs over a store that fails 0.5% of its calls at random with
StoreError, before the call or (for writes) after it was made. Every execution completes, no
committed step runs again, none is lost.

Issue 7 acceptance: 1,000 executions (slow, on PostgreSQL); the default run does 200 on SQLite
and 100 on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.integrations import Registry, default_agents
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.base import StoreError
from agentrun.storage.sql import SqlStore
from tests.durability.common import check_event_logs, diagnose, snapshot
from tests.durability.faults import FaultyStore
from tests.durability.ledger import Ledger, LedgerStep, check, steps_workflow

STEPS = 20


async def retrying(call: Any, *, attempts: int = 50) -> Any:
    """What a client does with UNAVAILABLE: try again (the request id makes it safe)."""
    for attempt in range(attempts):
        try:
            return await call()
        except StoreError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.01)


async def run_with_faults(
    url: str, workdir: Path, *, executions: int, rate: float, seed: int, timeout: float
) -> dict[str, Any]:
    inner = SqlStore(url)
    await inner.open()
    store = FaultyStore(inner, rate=rate, seed=seed)
    ledger = workdir / "ledger.txt"
    log = EngineLog()
    engine = Engine(
        store,
        tools=Registry([*core_tools(), LedgerStep(ledger, replica="r1")]),
        agents=default_agents(),
        config=EngineConfig(replica_id="r1", lease_seconds=3.0, seed=seed),
    )
    try:
        store.enabled = False  # the process starts while the database answers
        await engine.start()
        await engine.create_workflow(load_workflow(steps_workflow("steps", STEPS, 0.0)))
        store.enabled = True
        gate = asyncio.Semaphore(50)

        async def start(i: int) -> str:
            async with gate:
                record = await retrying(
                    lambda: engine.start_execution("steps", {"job": i}, request_id=f"job-{i}")
                )
                return record.id

        ids = await asyncio.gather(*(start(i) for i in range(executions)))
        assert len(set(ids)) == executions
        deadline = time.monotonic() + timeout
        while True:
            snap = await snapshot(url)
            unfinished = snap.unfinished()
            if not unfinished:
                break
            if time.monotonic() > deadline:
                why = diagnose(snap, {"r1": log.text()}, store.ambiguous_starts)
                detail = [
                    (i, snap.executions[i]["state"], i in engine._runs, why[i])
                    for i in unfinished[:10]
                ]
                raise AssertionError(
                    f"{len(unfinished)} executions unfinished after {timeout:.0f}s "
                    f"(id, state, running here, looks like): {detail}; injected {dict(store.injected)}"
                )
            await asyncio.sleep(0.25)
    finally:
        store.enabled = False
        await engine.stop(grace=0)
        await inner.close()
        log.close()
    snap = await snapshot(url, events=True)
    assert snap.states() == {"SUCCEEDED": executions}, snap.states()
    report = check(Ledger.read(ledger), snap.outputs(), snap.expected_keys(STEPS))
    report.assert_ok()
    check_event_logs(snap)
    return {"report": report, "injected": store.injected, "calls": store.calls}


class EngineLog(logging.Handler):
    """Collects the engine's log lines (a failure message tells what stuck executions look like)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.logger = logging.getLogger("agentrun.engine")
        self.logger.addHandler(self)
        self._level = self.logger.level
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def text(self) -> str:
        return "\n".join(self.lines)

    def close(self) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._level)
        super().close()


def _seed() -> int:
    return int(os.environ.get("DURABILITY_SEED", random.randrange(1 << 30)))


def _print(result: dict[str, Any], seed: int) -> None:
    injected = result["injected"]
    print(
        f"seed {seed}: {result['report'].summary()}; {sum(result['calls'].values())} store calls, "
        f"{sum(injected.values())} failed: {dict(injected)}"
    )


@pytest.mark.timeout(120)
async def test_store_faults_sqlite(tmp_path: Path) -> None:
    seed = _seed()
    result = await run_with_faults(
        f"sqlite+aiosqlite:///{tmp_path}/agentrun.db",
        tmp_path,
        executions=200,
        rate=0.005,
        seed=seed,
        timeout=90,
    )
    _print(result, seed)
    assert sum(result["injected"].values()) > 0


@pytest.mark.timeout(120)
async def test_store_faults_postgresql(tmp_path: Path, pg_url: str) -> None:
    seed = _seed()
    result = await run_with_faults(
        pg_url, tmp_path, executions=100, rate=0.005, seed=seed, timeout=90
    )
    _print(result, seed)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_store_faults_1000_executions(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    seed = _seed()
    url = (
        f"sqlite+aiosqlite:///{tmp_path}/agentrun.db"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    result = await run_with_faults(
        url, tmp_path, executions=1000, rate=0.005, seed=seed, timeout=600
    )
    _print(result, seed)
    assert sum(result["injected"].values()) > 10
