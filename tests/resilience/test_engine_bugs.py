"""Engine bugs found while testing resilience; each test fails until the engine is fixed
(strict xfail: a fix makes it pass and the marker must then go)."""

from __future__ import annotations

import pytest

from agentrun.engine import Engine, load_workflow
from agentrun.integrations import default_agents, default_tools
from agentrun.storage.memory import MemoryStore
from agentrun.storage.records import ExecutionState


@pytest.mark.xfail(
    strict=True,
    reason="agentrun/engine/retry.py RetrySpec.allows_retry tests `error_type in "
    "self.non_retryable` (exact names only); workflow-format.md says non_retryable takes "
    "exact names or globs (`payments.*`), so a glob never stops a retry",
)
async def test_non_retryable_glob_is_not_retried() -> None:
    engine = Engine(MemoryStore(), tools=default_tools(), agents=default_agents())
    await engine.start()
    try:
        spec = load_workflow(
            """
name: glob
nodes:
  - id: charge
    tool: {name: core.fail, args: {type: payments.declined}}
    retry: {max_attempts: 3, initial_interval: 1ms, non_retryable: ["payments.*"]}
"""
        )
        await engine.create_workflow(spec)
        ex = await engine.start_execution("glob", {})
        final = await engine.wait(ex.id, timeout=5)
        nodes = {n.node_id: n for n in await engine.get_nodes(ex.id)}
    finally:
        await engine.stop(grace=0)
    assert final.state is ExecutionState.FAILED
    assert nodes["charge"].attempt == 1
