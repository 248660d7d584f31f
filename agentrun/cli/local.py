"""Commands that need no server: `validate`, `graph`, `run`.

`run` builds the engine in this process on the embedded store (SQLite in ./.agentrun/ unless
`--db` or `--memory` says otherwise), starts one execution, delivers `--signal`s, shows live
progress on a terminal and prints the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentrun.engine.machine.plan import MachinePlan
    from agentrun.engine.plan import DagPlan

from agentrun.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE

__all__ = ["register"]


class UserError(Exception):
    """A problem with what the user gave us; printed as `agentrun: MESSAGE`, exit 2.
    `lines` are extra lines (diagnostics) printed under it."""

    def __init__(self, message: str, lines: list[str] | None = None, *, kind: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.lines = list(lines or [])
        self.kind = kind
        self.diagnostics: list[dict[str, str]] = []


# --------------------------------------------------------------------------- registration


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "validate",
        help="check a workflow file and print its parallel stages",
        description="Loads and compiles a workflow file. Prints every problem as "
        "`path: message` (exit 2), or the plan's parallel stages and warnings (exit 0).",
    )
    p.add_argument("file", metavar="FILE", help="workflow file (.yaml, .yml or .json); - for stdin")
    p.add_argument("--config", metavar="FILE", help="config file (YAML) that registers tools/mocks")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_validate)

    p = subparsers.add_parser(
        "graph",
        help="print the workflow as a Mermaid flowchart",
        description="Prints a Mermaid `flowchart TD` of the workflow: nodes with their kind, "
        "dependencies as arrows, conditions and switch cases as arrow labels.",
    )
    p.add_argument("file", metavar="FILE", help="workflow file (.yaml, .yml or .json); - for stdin")
    p.set_defaults(handler=cmd_graph)

    p = subparsers.add_parser(
        "run",
        help="run a workflow in this process and print its result",
        description="Runs a workflow in this process on the embedded store and prints the "
        "result. Exit 0 when the execution SUCCEEDED, 1 for any other end, 2 when the "
        "workflow, input, config or a signal is invalid.",
    )
    p.add_argument("file", metavar="FILE", help="workflow file (.yaml, .yml or .json); - for stdin")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--input", metavar="JSON", help="the execution input as JSON (default {})")
    source.add_argument("--input-file", metavar="FILE", help="read the input from a JSON/YAML file")
    p.add_argument(
        "--config", metavar="FILE", help="config file (YAML): mock responses, tools, limits"
    )
    p.add_argument(
        "--signal",
        metavar="NAME=JSON",
        action="append",
        default=[],
        help="deliver a signal right after the start (repeatable); buffered until a wait takes it",
    )
    p.add_argument(
        "--with",
        dest="with_files",
        metavar="FILE",
        action="append",
        default=[],
        help="also create this workflow in the store first, for `workflow` nodes that call it "
        "(repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    store = p.add_mutually_exclusive_group()
    store.add_argument(
        "--db",
        metavar="URL",
        help="store URL (default: $AGENTRUN_DATABASE_URL, else SQLite in ./.agentrun/)",
    )
    store.add_argument("--memory", action="store_true", help="keep nothing: an in-memory store")
    p.add_argument(
        "--timeout",
        metavar="DURATION",
        help="stop watching after this long (30s, 5m); the execution stays in the store",
    )
    p.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="live node progress on stderr (auto: only when stderr is a terminal)",
    )
    p.set_defaults(handler=cmd_run)


# --------------------------------------------------------------------------- shared helpers


def _read_text(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror or exc}") from None


def _load_spec(path: str) -> Any:
    from agentrun.engine import load_workflow
    from agentrun.engine.errors import InvalidWorkflow

    text = _read_text(path)
    try:
        return load_workflow(text, filename="<stdin>" if path == "-" else path)
    except InvalidWorkflow as exc:
        raise _invalid(exc, f"{path}: invalid workflow") from None


def _invalid(exc: Any, message: str, *, kind: str = "invalid_workflow") -> UserError:
    diagnostics = list(getattr(exc, "diagnostics", []) or [])
    lines = [str(d) for d in diagnostics] or [str(getattr(exc, "message", exc))]
    error = UserError(message, lines, kind=kind)
    error.diagnostics = [
        {"path": getattr(d, "path", ""), "message": getattr(d, "message", str(d))}
        for d in diagnostics
    ]
    return error


def _load_config(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    import yaml

    text = _read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {_one_line(str(exc))}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must be a mapping, not {type(data).__name__}")
    return data


def _integrations(config: dict[str, Any], config_path: str | None) -> tuple[Any, Any]:
    """Tools and agent providers from the config file, built as the server builds them."""
    import inspect

    from agentrun import integrations

    try:
        tools = integrations.default_tools(config)
        if "tools" in inspect.signature(integrations.default_agents).parameters:
            agents = integrations.default_agents(config, tools=tools)
        else:
            agents = integrations.default_agents(config)
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{config_path or 'config'}: {exc}") from None
    return tools, agents


def _compile(spec: Any, tools: Any, agents: Any, path: str) -> DagPlan | MachinePlan:
    from agentrun.engine import compile_workflow
    from agentrun.engine.errors import InvalidWorkflow

    try:
        return compile_workflow(spec, tools=tools, agents=agents)
    except InvalidWorkflow as exc:
        raise _invalid(exc, f"{path}: invalid workflow") from None


def _print_user_error(exc: UserError) -> None:
    print(f"agentrun: {exc.message}", file=sys.stderr)
    for line in exc.lines:
        print(f"  {line}", file=sys.stderr)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# --------------------------------------------------------------------------- validate


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        spec = _load_spec(args.file)
        config = _load_config(args.config)
        tools, agents = _integrations(config, args.config)
        plan = _compile(spec, tools, agents, args.file)
    except UserError as exc:
        hint = "" if args.config else _config_hint(exc.diagnostics)
        if args.json:
            body = {
                "valid": False,
                "file": args.file,
                "error": exc.message,
                "diagnostics": exc.diagnostics
                or [{"path": "", "message": line} for line in exc.lines],
            }
            print(_dump({**body, "hint": hint} if hint else body))
        elif exc.diagnostics:
            # The diagnostics are what validate produces: on stdout, one per line.
            for line in exc.lines:
                print(line)
        else:
            _print_user_error(exc)
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        return EXIT_USAGE
    from agentrun.engine.machine.plan import MachinePlan
    from agentrun.engine.plan import DagPlan

    warnings = [{"path": w.path, "message": w.message} for w in plan.warnings]
    stages = [list(stage) for stage in plan.stages]
    match plan:
        case MachinePlan():  # stages are the states by distance from the initial one
            mode, heading = "state_machine", f"state machine, initial state {plan.initial}"
        case DagPlan():
            mode, heading = "dag", ""
    if args.json:
        body = {
            "valid": True,
            "file": args.file,
            "name": plan.name,
            "mode": mode,
            "stages": stages,
            "warnings": warnings,
            "diagnostics": [],
        }
        print(_dump(body))
        return EXIT_OK
    if heading:
        print(heading)
    for number, stage in enumerate(stages, 1):
        print(f"stage {number}: {', '.join(stage)}")
    for warning in warnings:
        where = f"{warning['path']}: " if warning["path"] else ""
        print(f"warning: {where}{warning['message']}")
    return EXIT_OK


def _config_hint(diagnostics: list[dict[str, str]]) -> str:
    """What to do when a workflow names agents or tools that only a config file defines (the
    mock provider's models, configured tools): validate was run without `--config`."""
    if any("provider" in d["message"] or "unknown tool" in d["message"] for d in diagnostics):
        return (
            "agent models and tools can come from a config file (mock responses, tools): "
            "pass it with --config FILE, as for `agentrun run`"
        )
    return ""


# --------------------------------------------------------------------------- graph


def cmd_graph(args: argparse.Namespace) -> int:
    from agentrun.cli.graph import to_mermaid

    try:
        spec = _load_spec(args.file)
    except UserError as exc:
        _print_user_error(exc)
        return EXIT_USAGE
    sys.stdout.write(to_mermaid(spec))
    return EXIT_OK


# --------------------------------------------------------------------------- run


@dataclass
class RunRequest:
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


def cmd_run(args: argparse.Namespace) -> int:
    try:
        request = _prepare_run(args)
        result = asyncio.run(_run(request))
    except UserError as exc:  # refused before or at the start: nothing ran
        _print_user_error(exc)
        if args.json:
            _print_error_json(exc.kind or "invalid_argument", exc.message, exc.diagnostics)
        return EXIT_USAGE
    except StoreUnavailable as exc:
        print(f"agentrun: {exc}", file=sys.stderr)
        if args.json:
            _print_error_json("unavailable", str(exc))
        return EXIT_FAILED
    except Exception as exc:
        if not args.json or os.environ.get("AGENTRUN_DEBUG"):
            raise  # main() prints it without a traceback
        # --json promises one object on stdout, whatever happens.
        message = f"{type(exc).__name__}: {exc}"
        print(f"agentrun: internal error: {message}", file=sys.stderr)
        _print_error_json("internal", message)
        return EXIT_FAILED
    if args.json:
        print(_dump(result.as_json()))
    else:
        _print_result(result)
    return EXIT_OK if result.state == "SUCCEEDED" else EXIT_FAILED


def _print_error_json(
    kind: str, message: str, diagnostics: list[dict[str, str]] | None = None
) -> None:
    """Nothing ran: the one object `--json` promises is `{"error": ...}`."""
    error: dict[str, Any] = {"type": kind, "message": message}
    if diagnostics:
        error["diagnostics"] = diagnostics
    print(_dump({"error": error}))


def _prepare_run(args: argparse.Namespace) -> RunRequest:
    # Everything the user gave is checked before anything is stored.
    spec = _load_spec(args.file)
    children = [(path, _load_spec(path)) for path in args.with_files]
    run_input = _parse_input(args)
    signals = [_parse_signal(text) for text in args.signal]
    config = _load_config(args.config)
    timeout = _parse_timeout(args.timeout) if args.timeout else None
    # None lets the store factory choose: $AGENTRUN_DATABASE_URL, else SQLite in ./.agentrun/.
    db_url = "memory" if args.memory else args.db
    progress = None
    show = args.progress == "always" or (args.progress == "auto" and _isatty(sys.stderr))
    if show:
        from agentrun.cli.progress import ProgressPrinter

        width = max([len(n.id) for n in spec.nodes] + [9]) + 1
        progress = ProgressPrinter(
            sys.stderr, color=_isatty(sys.stderr) and not os.environ.get("NO_COLOR"), width=width
        )
    return RunRequest(
        spec,
        run_input,
        signals,
        children,
        config,
        args.config,
        db_url,
        timeout,
        progress,
        args.file,
    )


def _parse_input(args: argparse.Namespace) -> Any:
    if args.input_file:
        text = _read_text(args.input_file)
        if args.input_file.endswith((".yaml", ".yml")):
            import yaml

            try:
                return yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise UserError(
                    f"{args.input_file}: not valid YAML: {_one_line(str(exc))}"
                ) from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{args.input_file}: not valid JSON: {exc}") from None
    if args.input is None:
        return {}
    try:
        return json.loads(args.input)
    except json.JSONDecodeError as exc:
        raise UserError(f"--input: not valid JSON: {exc}") from None


def _parse_signal(text: str) -> tuple[str, Any]:
    name, sep, payload = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise UserError(f"--signal {text!r}: expected NAME=JSON, e.g. approval='{{\"ok\": true}}'")
    if payload.strip() == "":
        return name, None
    try:
        return name, json.loads(payload)
    except json.JSONDecodeError as exc:
        raise UserError(f"--signal {name}: not valid JSON: {exc}") from None


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _parse_timeout(text: str) -> float:
    value = text.strip()
    for unit in ("ms", "s", "m", "h", "d"):
        if value.endswith(unit):
            number, scale = value[: -len(unit)], _UNITS[unit]
            break
    else:
        number, scale = value, 1.0
    try:
        seconds = float(number) * scale
    except ValueError:
        raise UserError(f"--timeout {text!r}: expected a duration such as 30s or 5m") from None
    if seconds <= 0:
        raise UserError(f"--timeout {text!r}: must be positive")
    return seconds


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


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


class StoreUnavailable(Exception):
    """The store cannot be reached: exit 1 with a message, not a traceback."""


async def _run(request: RunRequest) -> RunResult:
    from agentrun.engine import Engine, EngineConfig
    from agentrun.engine.errors import InvalidInput, InvalidWorkflow
    from agentrun.engine.machine.plan import MachinePlan

    tools, agents = _integrations(request.config, request.config_path)
    # Compile first so that an unknown tool is reported before anything is stored.
    match _compile(request.spec, tools, agents, request.file):
        case MachinePlan():
            raise UserError(
                f"{request.file}: a state machine runs as instances that receive events, on a "
                "server; `agentrun run` runs DAG workflows",
                kind="invalid_workflow",
            )
    engine_config = _engine_config(EngineConfig, request.config)
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
                    raise _invalid(exc, f"{path}: invalid workflow") from None
            workflow = await _workflow(engine, request.spec)
            execution = await engine.start_execution(
                workflow.name, request.input, version=workflow.version
            )
        except InvalidWorkflow as exc:
            raise _invalid(exc, f"{request.file}: invalid workflow") from None
        except InvalidInput as exc:
            raise _invalid(exc, "invalid input", kind="invalid_input") from None
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

    attach = getattr(integrations, "attach", None)
    if attach is None:
        return None
    try:
        return await attach(engine, config)
    except ValueError as exc:
        raise UserError(f"config: {exc}") from None


def _engine_config(config_cls: Any, config: dict[str, Any]) -> Any:
    """EngineConfig from the config file, read by the same code as the server's: the engine's
    sections (`limits:`, `circuit_breakers:`, ...) and `secrets:` (what expressions see as
    `secrets.NAME`). The rest of the file is for the integrations (`mock:`, `tools:`)."""
    try:
        from agentrun import integrations

        load_secrets = getattr(integrations, "load_secrets", None)
        secrets = load_secrets(config) if load_secrets is not None else _secrets(config)
        options = {"secrets": secrets} if secrets else {}
        from_mapping = getattr(config_cls, "from_mapping", None)
        if from_mapping is not None:
            return from_mapping(config, **options)
        return config_cls(**options)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UserError(f"config: {exc}") from None


def _secrets(config: dict[str, Any]) -> dict[str, str]:
    """`secrets: {NAME: VALUE | {env: VARIABLE}}`, for builds without the secret store."""
    data = config.get("secrets") or {}
    if not isinstance(data, dict):
        raise ValueError("secrets: expected a mapping of names to values or {env: VARIABLE}")
    secrets = {}
    for name, value in data.items():
        if isinstance(value, dict) and set(value) == {"env"}:
            variable = str(value["env"])
            if variable not in os.environ:
                raise ValueError(f"secrets.{name}: environment variable {variable} is not set")
            secrets[str(name)] = os.environ[variable]
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            secrets[str(name)] = str(value)
        else:
            raise ValueError(f"secrets.{name}: expected a string or {{env: VARIABLE}}")
    return secrets


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


def _print_result(result: RunResult) -> None:
    output = result.execution.output
    print(f"{result.state}  execution {result.execution.id}  ({result.elapsed:.2f}s)")
    error_message = result.error.get("message") if isinstance(result.error, dict) else None
    if result.note and result.note != error_message:
        print(f"note: {result.note}", file=sys.stderr)
    if result.error:
        error = result.error
        if isinstance(error, dict):
            where = f" at node {error['node']}" if error.get("node") else ""
            print(f"error{where}: {error.get('type', 'error')}: {error.get('message', '')}")
        else:
            print(f"error: {error}")
    if result.state == "SUCCEEDED" or output is not None:
        # Sorted keys: CEL maps have no order, and a stable output is easier to read and diff.
        print(
            json.dumps(output, indent=2, ensure_ascii=False, sort_keys=True, default=_json_default)
        )
