"""The engine `agentrun run` builds in this process: `run_in_process` takes a checked
`RunRequest`, opens the embedded store (SQLite in ./.agentrun/ unless `--db` or `--memory`
says otherwise), builds the engine and its integrations as the server does, starts one
execution, delivers the `--signal`s, follows its events (feeding the live progress) and
returns a `RunResult`.

It stops following early, with a note, at `--timeout`, or when the execution waits for a
signal that nothing in this process can send (`_stuck`): the execution stays in the store.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentrun.cli.local_io import UserError, build_integrations, compile_spec, invalid

if TYPE_CHECKING:
    from agentrun.engine import EngineConfig

__all__ = ["RunRequest", "RunResult", "StoreUnavailable", "run_in_process"]


@dataclass
class RunRequest:
    """What `run` was given, checked before anything is stored."""

    spec: Any
    input: Any
    signals: list[tuple[str, Any]]
    children: list[tuple[str, Any]]
    config: dict[str, Any]
    config_path: str | None
    db_url: str | None
    timeout: float | None
    progress: Any  # ProgressPrinter | None
    file: str


@dataclass
class RunResult:
    """The execution as `run` left it: ended, or still in the store with a `note` saying why
    `run` stopped following it."""

    execution: Any  # ExecutionRecord
    nodes: list[Any]  # NodeRecord: every node of the workflow (Engine.list_nodes)
    elapsed: float
    note: str = ""

    @property
    def state(self) -> str:
        return str(getattr(self.execution.state, "value", self.execution.state))

    @property
    def error(self) -> Any:
        if self.note and self.execution.error is None and self.state != "SUCCEEDED":
            return {"type": "not_finished", "message": self.note}
        return self.execution.error

    def as_json(self) -> dict[str, Any]:
        """GetExecution's answer with `include_nodes`, in the protobuf JSON mapping (as every
        `--json`), and the note when `run` stopped following before the end."""
        from agentrun.cli.output import to_json
        from agentrun.server.convert import execution_to_proto, node_to_proto

        body = {
            "execution": to_json(execution_to_proto(self.execution)),
            "nodes": [to_json(node_to_proto(node)) for node in self.nodes],
        }
        return {**body, "note": self.note} if self.note else body


class StoreUnavailable(Exception):
    """The store cannot be reached: exit 1 with a message, not a traceback."""


async def run_in_process(request: RunRequest) -> RunResult:
    """Runs the request's workflow on an engine of this process until it ends or `run` stops
    following it; a refusal of the workflow, input or config raises UserError."""
    from agentrun.engine import Engine
    from agentrun.engine.errors import InvalidInput, InvalidWorkflow
    from agentrun.engine.machine.plan import MachinePlan

    tools, agents = build_integrations(request.config, request.config_path)
    # Compile first so that an unknown tool is reported before anything is stored.
    match compile_spec(request.spec, tools, agents, request.file):
        case MachinePlan():
            raise UserError(
                f"{request.file}: a state machine runs as instances that receive events, on a "
                "server; `agentrun run` runs DAG workflows",
                kind="invalid_workflow",
            )
    engine_config = _engine_config(request.config)
    # The store may be shared with a running `agentrun serve` (the default ./.agentrun/ is):
    # this process takes a replica id of its own and adopts nothing, so it never takes the
    # server's executions, and the server takes over this one if `run` dies before its end.
    engine_config.replica_id = _run_replica_id()
    engine_config.adopt = False
    store = await _open_store(request.db_url, engine_config.lease_seconds)
    engine = Engine(store, tools=tools, agents=agents, config=engine_config)
    t0 = time.monotonic()
    publisher = None
    try:
        await engine.start()
        publisher = await _attach(engine, request.config)
        try:
            for path, child in request.children:
                try:
                    await _workflow(engine, child)
                except InvalidWorkflow as exc:
                    raise invalid(exc, f"{path}: invalid workflow") from None
            workflow = await _workflow(engine, request.spec)
            execution = await engine.start_execution(
                workflow.name, request.input, version=workflow.version
            )
        except InvalidWorkflow as exc:
            raise invalid(exc, f"{request.file}: invalid workflow") from None
        except InvalidInput as exc:
            raise invalid(exc, "invalid input", kind="invalid_input") from None
        for name, data in request.signals:
            await engine.signal(execution.id, name, data)
        note = await _follow(engine, execution.id, request)
        execution = await engine.get_execution(execution.id)
        nodes = await engine.list_nodes(execution.id)
    finally:
        try:
            await engine.stop(grace=1.0)
            if publisher is not None:
                await publisher.stop()
        finally:
            await store.close()
            if hasattr(tools, "aclose"):
                await tools.aclose()  # MCP sessions
    return RunResult(execution, nodes, elapsed=time.monotonic() - t0, note=note)


async def _open_store(url: str | None, lease_seconds: float | None = None) -> Any:
    from agentrun.storage.base import StoreError
    from agentrun.storage.factory import open_store, resolve_url

    try:
        resolved = resolve_url(url)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError: not a URL
        raise UserError(f"--db {url}: not a database URL ({exc})") from None
    try:
        return await open_store(resolved, lease_seconds=lease_seconds)
    except StoreError as exc:
        raise StoreUnavailable(f"cannot open the store {_redact(resolved)}: {exc}") from None


def _redact(url: str) -> str:
    try:
        import sqlalchemy as sa

        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(url)"


async def _workflow(engine: Any, spec: Any) -> Any:
    """The stored workflow for `spec`: its latest version when that is the same spec (running
    an unchanged file again adds no version), else a new version."""
    from agentrun.engine.errors import WorkflowNotFound
    from agentrun.engine.loader import spec_to_dict

    try:
        latest = await engine.get_workflow(spec.name)
    except WorkflowNotFound:
        latest = None
    if latest is not None and latest.spec == spec_to_dict(spec):
        return latest
    return await engine.create_workflow(spec)


def _run_replica_id() -> str:
    """Unique among live processes: a replica id names one process's leases."""
    import secrets
    import socket

    return f"run-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


async def _attach(engine: Any, config: dict[str, Any]) -> Any:
    """Log redaction of secrets and the event bus the config selects, as the server does."""
    from agentrun import integrations

    try:
        return await integrations.attach(engine, config)
    except ValueError as exc:
        raise UserError(f"config: {exc}") from None


def _engine_config(config: dict[str, Any]) -> EngineConfig:
    """EngineConfig from the config file, read by the same code as the server's: the engine's
    sections (`limits:`, `circuit_breakers:`, ...) and `secrets:` (what expressions see as
    `secrets.NAME`). The rest of the file is for the integrations (`mock:`, `tools:`)."""
    from agentrun import integrations
    from agentrun.engine import EngineConfig

    try:
        secrets = integrations.load_secrets(config)
        options = {"secrets": secrets} if secrets else {}
        return EngineConfig.from_mapping(config, **options)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UserError(f"config: {exc}") from None


async def _follow(engine: Any, execution_id: str, request: RunRequest) -> str:
    """Follows the execution's events until it ends; returns a note when it stopped early:
    at `--timeout`, or when it waits for a signal nothing in this process can send."""
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for event in engine.watch(execution_id):
                queue.put_nowait(event)
        finally:
            queue.put_nowait(None)

    signal_waits = frozenset(
        node.id
        for node in request.spec.nodes
        if node.WhichOneof("kind") == "wait" and node.wait.signal
    )
    task = asyncio.create_task(pump())
    deadline = None if request.timeout is None else time.monotonic() + request.timeout
    waiting = False  # the last execution event said WAITING
    try:
        while True:
            wait = _QUIET if waiting else None
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())
                wait = left if wait is None else min(wait, left)
            try:
                event = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    return f"still not finished after --timeout {request.timeout:g}s"
                if waiting and await _stuck(engine, execution_id, signal_waits):
                    return _stuck_note(await engine.get_nodes(execution_id))
                waiting = False
                continue
            if event is None:
                await task  # re-raises what ended the watch, if it failed
                return ""
            if request.progress is not None:
                request.progress.on_event(event)
            if event.type.startswith("execution."):
                waiting = event.type in ("execution.waiting", "execution.escalated")
    finally:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass


# How long an execution must sit in WAITING, with no event, before `run` checks whether
# anything can still wake it.
_QUIET = 0.3


async def _stuck(engine: Any, execution_id: str, signal_waits: frozenset[str]) -> bool:
    """True when the execution can only go on with a signal that nothing in this process will
    send: every waiting node waits for a signal (the only signals this process sends are the
    `--signal`s, already delivered), and none of their timeouts ends within _HORIZON seconds.
    Timers (`wait: {duration}`), retry delays and short signal timeouts are waited out."""
    execution = await engine.get_execution(execution_id)
    if str(getattr(execution.state, "value", execution.state)) not in ("WAITING", "ESCALATED"):
        return False
    nodes = await engine.get_nodes(execution_id)
    active = [n for n in nodes if str(getattr(n.state, "value", n.state)) in _ACTIVE_NODE_STATES]
    if not active:
        return False
    horizon = time.time() + _HORIZON
    if execution.deadline is not None and execution.deadline <= horizon:
        return False
    for node in active:
        state = str(getattr(node.state, "value", node.state))
        if state == "WAITING" and node.node_id in signal_waits:
            pass  # waits for a signal
        elif state != "ESCALATED":  # an escalation waits for an answer (a signal)
            return False
        if node.wake_at is not None and node.wake_at <= horizon:
            return False
    return True


# Node states in which something may still happen to a node.
_ACTIVE_NODE_STATES = frozenset({"READY", "RUNNING", "RETRYING", "WAITING", "ESCALATED"})
# A timer due within this many seconds is waited for rather than reported.
_HORIZON = 60.0


def _stuck_note(nodes: list[Any]) -> str:
    def ids(state: str) -> str:
        return ", ".join(
            n.node_id for n in nodes if str(getattr(n.state, "value", n.state)) == state
        )

    waiting, escalated = ids("WAITING"), ids("ESCALATED")
    parts = []
    if waiting:
        parts.append(f"waiting for a signal at {waiting}")
    if escalated:
        parts.append(f"escalated at {escalated}")
    return "; ".join(parts) + ", and nothing in this process will answer: pass --signal NAME=JSON"
