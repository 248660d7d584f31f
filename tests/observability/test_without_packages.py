"""With tracing and metrics off the server needs neither OpenTelemetry nor prometheus_client
(they are imported on first use), and still keeps a caller's traceparent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import asyncio, sys
sys.modules["opentelemetry"] = None      # any import of it now fails
sys.modules["prometheus_client"] = None

async def main():
    from agentrun.client import AsyncClient
    from agentrun.engine import Engine, EngineConfig, load_workflow
    from agentrun.integrations import default_agents, default_tools
    from agentrun.server import AgentrunServer, ServerConfig
    from agentrun.server.observability import Observability, configure_logging
    from agentrun.storage.memory import MemoryStore
    from agentrun.v1 import execution_service_pb2 as pb

    configure_logging("INFO", "json")
    config = ServerConfig.load(env={})
    observability = Observability.from_config(config)
    assert observability.instrumentation() is None and observability.interceptor() is None
    engine = Engine(MemoryStore(), tools=default_tools(), agents=default_agents(),
                    config=EngineConfig(instrumentation=observability.instrumentation()))
    await engine.start()
    server = AgentrunServer(engine, config, observability=observability)
    await server.start("127.0.0.1:0")
    async with AsyncClient(f"127.0.0.1:{server.port}", api_key="") as client:
        await client.create_workflow(load_workflow("name: w\nnodes:\n  - {id: a, pass: {value: 1}}\n"))
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        response = await client.execution_service.StartExecution(
            pb.StartExecutionRequest(workflow="w"), metadata=(("traceparent", tp),))
        assert response.execution.labels["traceparent"] == tp
        trace = await client.execution_service.GetExecutionTrace(
            pb.GetExecutionTraceRequest(name=response.execution.name))
        assert trace.trace.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    await server.stop(0)
    await engine.stop(grace=0)
    assert "opentelemetry.sdk" not in sys.modules and "prometheus_client.registry" not in sys.modules
    print("ok")

asyncio.run(main())
"""


def test_server_runs_without_opentelemetry_and_prometheus() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
