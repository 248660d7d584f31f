"""Fixtures: a real engine and grpc.aio server with traces into an in-memory exporter,
metrics on an HTTP port, and an agent provider that reports token usage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentrun.client import AsyncClient
from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.ports import AgentProvider, AgentRequest, CallContext, Tool
from agentrun.integrations import Providers, Registry
from agentrun.integrations.core_tools import core_tools
from agentrun.integrations.mock_agent import MockProvider
from agentrun.server import AgentrunServer, ServerConfig
from agentrun.server.observability import Metrics, Observability, make_provider
from agentrun.storage.memory import MemoryStore
from tests.server.conftest import STOP_GRACE

WORKFLOW = """
name: traced
nodes:
  - id: start
    pass: {value: 1}
  - id: flaky
    needs: [start]
    retry: {max_attempts: 2, backoff: fixed, initial_interval: 1ms, jitter: none}
    tool: {name: core.fail, args: {type: tool_error, succeed_on_attempt: 2}}
  - id: slow
    needs: [start]
    tool: {name: core.sleep, args: {seconds: 0.05}}
  - id: ask
    needs: [flaky, slow]
    agent: {model: llm/small, prompt: "hello"}
"""


class UsageProvider(AgentProvider):
    """Answers every prompt and reports 10 prompt tokens, 5 completion tokens, $0.01."""

    name = "llm"

    def knows_model(self, model: str) -> bool:
        return True

    async def complete(self, request: AgentRequest, ctx: CallContext) -> Any:
        assert ctx.emit is not None
        ctx.emit("agent.usage", {"prompt_tokens": 10, "completion_tokens": 5, "cost": 0.01})
        if request.model == "slow":
            await asyncio.sleep(30)
        logging.getLogger("test.provider").info("answering %s", request.prompt)
        return {"text": "hi"}


class Secretive(Tool):
    """Logs its secret argument (the log must mask it)."""

    name = "test.secretive"

    async def call(self, args: Any, ctx: CallContext) -> Any:
        logging.getLogger("test.tool").warning("calling with %s", ctx.secrets.get("token"))
        return {}


SECRET = "s3cr3t-value-42"


@dataclass
class Stack:
    engine: Engine
    server: AgentrunServer
    observability: Observability
    exporter: InMemorySpanExporter
    client: AsyncClient

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.observability.metrics_port}/metrics"

    async def run(
        self, yaml_text: str = WORKFLOW, *, metadata: Any = None, input: Any = None
    ) -> Any:
        spec = load_workflow(yaml_text)
        await self.client.create_workflow(spec)
        if metadata is None:
            execution = await self.client.start_execution(spec.name, input or {})
        else:
            from agentrun.v1 import execution_service_pb2 as pb

            response = await self.client.execution_service.StartExecution(
                pb.StartExecutionRequest(workflow=spec.name), metadata=metadata
            )
            execution = response.execution
            execution = await self.client.get_execution(execution.name)
        await self.engine.wait(execution.id, timeout=10)
        return await self.client.get_execution(execution.id)


async def make_stack(
    *,
    sample_ratio: float = 1.0,
    tracing: bool = True,
    metrics: bool = True,
    scheduler: Any = None,
    api_key: str = "",
    **config: Any,
) -> Stack:
    exporter = InMemorySpanExporter()
    provider = (
        make_provider(sample_ratio=sample_ratio, processors=[SimpleSpanProcessor(exporter)])
        if tracing
        else None
    )
    observability = Observability(
        tracer_provider=provider,
        metrics=Metrics() if metrics else None,
        metrics_port=0 if metrics else None,
        metrics_host="127.0.0.1",
    )
    engine = Engine(
        MemoryStore(),
        tools=Registry([*core_tools(), Secretive()]),
        agents=Providers([MockProvider(), UsageProvider()]),
        config=EngineConfig(
            instrumentation=observability.instrumentation(),
            secrets={"token": SECRET},
            scheduler=scheduler,
        ),
    )
    observability.attach(engine)
    observability.start()
    await engine.start()
    server = AgentrunServer(
        engine, ServerConfig.load(env={}, **config), observability=observability
    )
    await server.start("127.0.0.1:0")
    client = AsyncClient(f"127.0.0.1:{server.port}", api_key=api_key)
    return Stack(engine, server, observability, exporter, client)


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    s = await make_stack()
    yield s
    await s.client.close()
    await s.server.stop(STOP_GRACE)
    await s.engine.stop(grace=0)
    s.observability.close()
