"""Hostile expressions against a real `agentrun serve` (issue 13, items 1 and 2): an expression
too costly to evaluate fails its node with `expression_error: cost limit exceeded` while a health
probe keeps being answered, and the server stays usable afterwards."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest

from agentrun.client import Client, ExecutionState
from tests.server.conftest import STOP_GRACE
from tests.server.subprocess_server import ServerProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


class HealthProbe:
    """Asks the server's health service in a loop from a thread; records the longest wait."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.worst = 0.0
        self.answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            if self.server.health() is not None:
                self.answers += 1
            self.worst = max(self.worst, time.monotonic() - start)
            time.sleep(0.01)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_quadratic_filter_over_10000_ints_fails_its_node_and_health_keeps_answering(
    served: ServerProcess,
) -> None:
    with Client(served.address) as client, HealthProbe(served) as probe:
        client.create_workflow(
            source="name: quadratic\nnodes:\n"
            '  - id: a\n    pass: {value: "${{ size(input.l.filter(x, x in input.l)) }}"}\n'
        )
        execution = client.start_execution("quadratic", {"l": list(range(10_000))})
        done = client.wait(execution, timeout=60)
        answered_before = probe.answers
        deadline = time.monotonic() + 30
        while probe.answers < answered_before + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert done.state is ExecutionState.FAILED
    assert done.error is not None
    assert done.error.type == "expression_error"
    assert done.error.message.startswith("cost limit exceeded"), done.error.message
    assert probe.answers > answered_before
    # Generous (a loaded machine): evaluating the expression used to hold the server 12.7 s.
    assert probe.worst < 5, f"health waited {probe.worst:.2f}s"


def test_data_limits_come_from_the_config_file(tmp_path: Path) -> None:
    from agentrun.server.config import ConfigError, ServerConfig

    path = tmp_path / "c.yaml"
    path.write_text("data_limits: {expression_cost: 5000}\n")
    assert ServerConfig.load(path, env={}).data_limits.expression_cost == 5000
    path.write_text("data_limits: {expression_cost: -1}\n")
    with pytest.raises(ConfigError, match="data_limits.expression_cost"):
        ServerConfig.load(path, env={})


async def test_list_and_get_stay_within_the_answer_limit() -> None:
    """With a 4 MiB answer limit (pages of 2 MiB), ten executions of ~0.6 MiB each (input and
    output) are listed over several pages, and a node list larger than the page comes back
    without node data past the budget instead of RESOURCE_EXHAUSTED."""
    from agentrun.client import AsyncClient
    from agentrun.server import AgentrunServer, ServerConfig
    from tests.server.conftest import make_engine

    engine = await make_engine()
    server = AgentrunServer(
        engine, ServerConfig.load(env={}, max_send_message_bytes=4 * 1024 * 1024)
    )
    await server.start("127.0.0.1:0")
    try:
        async with AsyncClient(f"127.0.0.1:{server.port}", api_key="") as client:
            await client.create_workflow(
                source="name: fat\nnodes:\n"
                "  - {id: a, pass: {value: '${{ input.s }}'}}\n"
                "  - {id: b, pass: {value: '${{ input.s }}'}}\n"
                "  - {id: c, pass: {value: '${{ input.s }}'}}\n"
                "  - {id: d, pass: {value: '${{ input.s }}'}}\n"
                "  - {id: e, pass: {value: '${{ input.s }}'}}\n"
                "output: '${{ nodes.a.output }}'\n"
            )
            names = []
            for n in range(10):
                started = await client.start_execution("fat", {"s": str(n) * 300_000})
                names.append(started.name)
            for name in names:
                assert (await client.wait(name, timeout=30)).state is ExecutionState.SUCCEEDED
            listed = [e.name async for e in client.list_executions(page_size=100)]
            assert sorted(listed) == sorted(names)
            got = await client.get_execution(names[0], include_nodes=True)
            assert [n.node_id for n in got.nodes] == ["a", "b", "c", "d", "e"]
            assert got.nodes[0].output == "0" * 300_000
            assert got.nodes[-1].output is None  # past the budget: read it from the events
    finally:
        await server.stop(STOP_GRACE)
        await engine.stop(grace=0)
