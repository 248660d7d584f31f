"""The commands that run or talk to a server: `serve`, `workflows`, `start`, `watch`,
`signal`, `cancel`, `pause`, `resume`, `rerun`, `trace`. Client commands take `--server` ($AGENTRUN_ADDRESS, default
127.0.0.1:50051) and `--api-key` ($AGENTRUN_API_KEY)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agentrun.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from agentrun.cli.client_options import (
    UsageError,
    add_client_options,
    add_server_option,
    json_arg,
    run_with_client,
)
from agentrun.cli.output import print_json, short_json, to_json

if TYPE_CHECKING:
    from agentrun.client import Client, Execution, ExecutionEvent


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the gRPC server",
        description="Serves WorkflowService, ExecutionService, StateMachineService and "
        "WorkerService (remote workers' tools; plus health and reflection) over the store, recovering unfinished executions and state "
        "machine instances at start. SIGTERM drains: health "
        "NOT_SERVING, new calls UNAVAILABLE, running nodes finish, streams end resumably.",
    )
    p.add_argument(
        "--listen", metavar="HOST:PORT", help="default $AGENTRUN_LISTEN or 127.0.0.1:50051"
    )
    p.add_argument(
        "--http-listen",
        metavar="HOST:PORT",
        help="also serve the API over HTTP (Connect, gRPC-Web) and the web console "
        "(default $AGENTRUN_HTTP_LISTEN; off)",
    )
    p.add_argument("--config", metavar="FILE", help="YAML config: api_keys, limits, mock responses")
    p.add_argument(
        "--db",
        metavar="URL",
        help="store URL (default $AGENTRUN_DATABASE_URL, else SQLite in ./.agentrun/)",
    )
    p.add_argument("--grace", type=float, metavar="SECONDS", help="shutdown grace (default 10)")
    p.add_argument(
        "--log-level", help="DEBUG, INFO, WARNING, ERROR (default $AGENTRUN_LOG_LEVEL or INFO)"
    )
    p.add_argument(
        "--log-format",
        choices=("auto", "json", "text"),
        help="JSON lines, text, or auto: text on a terminal, JSON otherwise (default auto)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on http://0.0.0.0:PORT/metrics (default $AGENTRUN_METRICS_PORT; off)",
    )
    p.add_argument(
        "--tracing",
        choices=("none", "console", "otlp"),
        help="OpenTelemetry span exporter (default $AGENTRUN_TRACING or none); otlp sends to "
        "$OTEL_EXPORTER_OTLP_ENDPOINT or --otlp-endpoint",
    )
    p.add_argument(
        "--otlp-endpoint", metavar="URL", help="OTLP/gRPC collector (default localhost:4317)"
    )
    p.add_argument(
        "--trace-sample-ratio",
        type=float,
        metavar="RATIO",
        help="share of new traces recorded, 0..1 (default 1); a caller's sampled flag wins",
    )
    p.set_defaults(handler=cmd_serve)

    p = subparsers.add_parser(
        "health",
        help="check a server's gRPC health (exit 0 when SERVING)",
        description="Calls grpc.health.v1.Health/Check; exit 0 when SERVING, 1 otherwise "
        "(NOT_SERVING while draining, or unreachable). Used by the Docker HEALTHCHECK.",
    )
    add_server_option(p)
    p.add_argument("--service", default="", help="a service name (default: the whole server)")
    p.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS")
    p.set_defaults(handler=cmd_health)

    p = subparsers.add_parser(
        "workflows", help="create, get, list and delete workflows on a server"
    )
    sub = p.add_subparsers(dest="workflows_command", metavar="ACTION", required=True)
    c = sub.add_parser("create", help="store a workflow file (a new version if the name exists)")
    c.add_argument("file", metavar="FILE", help="workflow file (.yaml or .json); - for stdin")
    add_client_options(c)
    c.set_defaults(handler=cmd_workflows_create)
    c = sub.add_parser("get", help="print a workflow")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--version", type=int, help="a version (default: the latest)")
    add_client_options(c)
    c.set_defaults(handler=cmd_workflows_get)
    c = sub.add_parser("list", help="list workflows (latest versions)")
    add_client_options(c)
    c.set_defaults(handler=cmd_workflows_list)
    c = sub.add_parser("delete", help="delete every version of a workflow")
    c.add_argument("name", metavar="NAME")
    add_client_options(c)
    c.set_defaults(handler=cmd_workflows_delete)

    p = subparsers.add_parser("start", help="start an execution on a server")
    p.add_argument("workflow", metavar="NAME")
    p.add_argument("--input", metavar="JSON", default="{}", help="the input as JSON (default {})")
    p.add_argument("--version", type=int, help="workflow version (default: the latest)")
    p.add_argument("--request-id", help="idempotency key: the same id starts once")
    then = p.add_mutually_exclusive_group()
    then.add_argument("--watch", action="store_true", help="then follow its events to the end")
    then.add_argument(
        "--wait",
        action="store_true",
        help="answer once it ends, in the same call (for short workflows): its state and output",
    )
    p.add_argument(
        "--wait-timeout",
        metavar="DURATION",
        help="with --wait: how long the server waits (such as 10s, 2m; default 30s, at most 5m); "
        "still running then: its id, and exit 1",
    )
    add_client_options(p)
    p.set_defaults(handler=cmd_start)

    p = subparsers.add_parser("watch", help="stream an execution's events until it ends")
    p.add_argument("execution", metavar="ID")
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help="only events after SEQ")
    add_client_options(p)
    p.set_defaults(handler=cmd_watch)

    p = subparsers.add_parser("signal", help="send a signal to an execution")
    p.add_argument("execution", metavar="ID")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--data", metavar="JSON", default="null", help="the signal's data (default null)"
    )
    p.add_argument("--id", dest="signal_id", help="signal id: the same id is applied once")
    add_client_options(p)
    p.set_defaults(handler=cmd_signal)

    p = subparsers.add_parser(
        "trace",
        help="print an execution's timeline (nodes, attempts, queue waits, tokens)",
        description="A Gantt-like timeline of an execution from GetExecutionTrace: one row per "
        "node (map items, compensations and fallbacks under their node), with its attempts. "
        "Bar: '.' waiting for a scheduler slot, '#' an attempt that succeeded (or runs), 'x' "
        "one that failed, '~' one that was cancelled, '-' a retry delay.",
    )
    p.add_argument("execution", metavar="ID")
    p.add_argument(
        "--width", type=int, default=50, metavar="COLUMNS", help="bar width (default 50)"
    )
    add_client_options(p)
    p.set_defaults(handler=cmd_trace)

    p = subparsers.add_parser("cancel", help="cancel an execution")
    p.add_argument("execution", metavar="ID")
    p.add_argument("--compensate", action="store_true", help="run compensations (saga)")
    add_client_options(p)
    p.set_defaults(handler=cmd_cancel)

    p = subparsers.add_parser(
        "pause", help="pause an execution: no node starts; running ones finish"
    )
    p.add_argument("execution", metavar="ID")
    add_client_options(p)
    p.set_defaults(handler=cmd_pause)

    p = subparsers.add_parser(
        "resume",
        help="resume a paused execution",
        description="Resumes a paused execution. An execution paused on a node (on_exhausted: "
        "pause) runs that node again with a fresh attempt count; --node names it, and --args gives "
        "it new arguments (a tool's args, a child workflow's input).",
    )
    p.add_argument("execution", metavar="ID")
    p.add_argument("--node", metavar="NODE", help="the node the execution is paused on")
    p.add_argument("--args", metavar="JSON", help="with --node: that node's arguments from now on")
    add_client_options(p)
    p.set_defaults(handler=cmd_resume)

    p = subparsers.add_parser(
        "rerun",
        help="start a finished execution again from a node, reusing earlier outputs",
        description="Starts a new execution linked to a finished one (label rerun_of). It runs "
        "again from --from (default: the node the old execution failed at); nodes that "
        "succeeded and are not descendants of that node keep their outputs. Prints the new id.",
    )
    p.add_argument("execution", metavar="ID")
    p.add_argument("--from", dest="from_node", metavar="NODE", help="node to run again from")
    p.add_argument("--input", metavar="JSON", help="a new input as JSON (default: the old one)")
    p.add_argument("--version", type=int, help="workflow version (default: the old one)")
    p.add_argument("--request-id", help="idempotency key: the same id reruns once")
    p.add_argument("--watch", action="store_true", help="then follow its events to the end")
    add_client_options(p)
    p.set_defaults(handler=cmd_rerun)


# --------------------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    from agentrun.server import ConfigError, ServerConfig, serve
    from agentrun.server.observability import configure_logging

    try:
        config = ServerConfig.load(
            args.config,
            listen=args.listen,
            http_listen=args.http_listen,
            database_url=args.db,
            shutdown_grace=args.grace,
            log_level=args.log_level,
            log_format=args.log_format,
            metrics_port=args.metrics_port,
            tracing=args.tracing,
            otlp_endpoint=args.otlp_endpoint,
            trace_sample_ratio=args.trace_sample_ratio,
        )
        config.engine_config()
    except ConfigError as exc:
        print(f"agentrun: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config.log_level, config.log_format)
    try:
        asyncio.run(serve(config))
    except ConfigError as exc:  # what the config asks for cannot be built (tools, MCP servers)
        print(f"agentrun: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"agentrun: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from agentrun.client._options import target

    address = target(args.server)
    with grpc.insecure_channel(address) as channel:
        try:
            # types-grpcio-health-checking declares HealthStub without its methods.
            response = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            print(f"{address}: {exc.code().name}", file=sys.stderr)
            return EXIT_FAILED
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return EXIT_OK if response.status == health_pb2.HealthCheckResponse.SERVING else EXIT_FAILED


# --------------------------------------------------------------------------- client commands


def cmd_workflows_create(args: argparse.Namespace) -> int:
    def body(client: Client) -> int:
        try:
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
        except OSError as exc:
            raise UsageError(f"{args.file}: {exc.strerror}") from None
        workflow = client.create_workflow(source=text)
        if args.json:
            print_json(workflow)
        else:
            print(f"workflows/{workflow.name} version {workflow.version}")
        return EXIT_OK

    return run_with_client(args, body)


def cmd_workflows_get(args: argparse.Namespace) -> int:
    def body(client: Client) -> int:
        workflow = client.get_workflow(args.name, version=args.version)
        if args.json:
            print_json(workflow)
        else:
            import yaml

            print(f"# workflows/{workflow.name} version {workflow.version}")
            print(yaml.safe_dump(workflow.spec, sort_keys=False).rstrip())
        return EXIT_OK

    return run_with_client(args, body)


def cmd_workflows_list(args: argparse.Namespace) -> int:
    def body(client: Client) -> int:
        workflows = list(client.list_workflows())
        if args.json:
            # The list leaves out each spec: `workflows get NAME` prints one.
            print_json([{k: v for k, v in to_json(w).items() if k != "spec"} for w in workflows])
        else:
            for w in workflows:
                print(f"{w.name}\tv{w.version}\t{w.description}".rstrip())
        return EXIT_OK

    return run_with_client(args, body)


def cmd_workflows_delete(args: argparse.Namespace) -> int:
    def body(client: Client) -> int:
        client.delete_workflow(args.name)
        if not args.json:
            print(f"deleted workflows/{args.name}")
        return EXIT_OK

    return run_with_client(args, body)


class _WatchPrinter:
    """What `agentrun watch` prints: one line per event, except an agent's streamed answer
    (`agent.delta`), whose pieces are written as they come on one line per node, attempt and
    model call, ended by the next other event. `--json`: one object per event."""

    def __init__(self, as_json: bool) -> None:
        self._json = as_json
        self._open: tuple[str, int, int] | None = None

    def event(self, event: ExecutionEvent) -> None:
        if self._json:
            print_json(event, lines=True)
            return
        delta = event.delta
        if delta is None:
            self.end()
            print(event_line(event), flush=True)
            return
        key = (delta.node_id, delta.attempt, delta.turn)
        if key != self._open:
            self.end()
            attempt = f" (attempt {delta.attempt})" if delta.attempt > 1 else ""
            sys.stdout.write(
                f"{_stamp(event)} #{event.sequence} agent.delta {delta.node_id}{attempt}: "
            )
            self._open = key
        sys.stdout.write(delta.text)
        sys.stdout.flush()

    def end(self) -> None:
        """Ends a streamed answer's line."""
        if self._open is not None:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self._open = None


def _stamp(event: ExecutionEvent) -> str:
    return event.time.astimezone().strftime("%H:%M:%S.%f")[:-3] if event.time else ""


def event_line(event: ExecutionEvent) -> str:
    """One line of `agentrun watch`: time, sequence, type, node, and what happened (an error,
    a node's output, a signal's name and data), long values cut with `…`."""
    stamp = _stamp(event)
    where = f" {event.node_id}" if event.node_id else ""
    data = event.data
    extra = ""
    if isinstance(data.get("error"), dict):
        extra = f" {data['error'].get('type')}: {data['error'].get('message')}"
    elif event.type == "signal.received":
        extra = f" {data.get('signal', '')}"
        if data.get("data") is not None:
            extra += " " + short_json(data["data"], _WATCH_WIDTH)
    elif event.type == "agent.deltas_discarded":
        extra = f" attempt {data.get('attempt')}: drop its {data.get('deltas')} deltas"
    elif "output" in data and event.type != "execution.succeeded":
        extra = " " + short_json(data["output"], _WATCH_WIDTH)
    return f"{stamp} #{event.sequence} {event.type}{where}{extra}"


# Longest JSON value on a watch line.
_WATCH_WIDTH = 120


def _follow(client: Client, execution_id: str, after: int, as_json: bool) -> int:

    # One plain call first: no server, or no such execution, is said at once (the watch
    # itself reconnects through a server's restarts, for up to half a minute).
    client.get_execution(execution_id)
    printer = _WatchPrinter(as_json)
    try:
        for event in client.watch(execution_id, after_sequence=after):
            printer.event(event)
    finally:
        printer.end()
    return _ended(client.get_execution(execution_id), as_json)


def _ended(execution: Execution, as_json: bool) -> int:
    """An ended execution's state and output (its error on stderr); 0 if it SUCCEEDED."""
    from agentrun.client import ExecutionState

    if not as_json:
        print(
            f"{execution.state.value}"
            + (f" {json.dumps(execution.output)}" if execution.output is not None else "")
        )
        if execution.error:
            print(f"error: {execution.error.type}: {execution.error.message}", file=sys.stderr)
    return EXIT_OK if execution.state is ExecutionState.SUCCEEDED else EXIT_FAILED


def cmd_start(args: argparse.Namespace) -> int:
    def body(client: Client) -> int:
        from agentrun.client import InvalidArgument

        data = json_arg(args.input, "--input")
        wait_timeout = _wait_timeout(args)
        try:
            execution = client.start_execution(
                args.workflow,
                data,
                version=args.version,
                request_id=args.request_id,
                wait=args.wait,
                wait_timeout=wait_timeout,
            )
        except InvalidArgument:
            if _is_state_machine(client, args.workflow, args.version):
                raise UsageError(
                    f"{args.workflow} is a state machine: it runs as instances that receive "
                    f"events; create one with `agentrun sm create {args.workflow}`"
                ) from None
            raise
        if args.json and not args.watch:
            print_json(execution)
        else:
            print(execution.id, flush=True)
        if args.watch:
            return _follow(client, execution.id, 0, args.json)
        if args.wait:
            return _waited(execution, args.json)
        return EXIT_OK

    return run_with_client(args, body)


def _wait_timeout(args: argparse.Namespace) -> float | None:
    if args.wait_timeout is None:
        return None
    if not args.wait:
        raise UsageError("--wait-timeout goes with --wait")
    from agentrun.engine.durations import parse_duration

    try:
        return parse_duration(args.wait_timeout)
    except ValueError as exc:
        raise UsageError(f"--wait-timeout: {exc}") from None


def _waited(execution: Execution, as_json: bool) -> int:
    """`start --wait`: the final state and output (after the id), or a note that it still runs."""
    if not execution.state.terminal:
        print(
            f"{execution.id} still {execution.state.value} at the wait's deadline; "
            f"follow it with `agentrun watch {execution.id}`",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return _ended(execution, as_json)


def _is_state_machine(client: Client, name: str, version: int | None) -> bool:
    from agentrun.client import AgentrunError

    try:
        workflow = client.get_workflow(name, version=version)
    except AgentrunError:
        return False
    return bool(workflow.spec.get("mode") == "MODE_STATE_MACHINE")


def cmd_watch(args: argparse.Namespace) -> int:
    return run_with_client(
        args, lambda client: _follow(client, args.execution, args.after, args.json)
    )


def cmd_signal(args: argparse.Namespace) -> int:
    def body(client: Client) -> int:
        data = json_arg(args.data, "--data")
        execution = client.signal_execution(
            args.execution, args.name, data, signal_id=args.signal_id
        )
        if args.json:
            print_json(execution)
        else:
            print(f"{execution.id} {execution.state.value}")
        return EXIT_OK

    return run_with_client(args, body)


def _control(args: argparse.Namespace, call: Callable[[Client], Execution]) -> int:
    """cancel, pause, resume: one call, then the execution's new state."""

    def body(client: Client) -> int:
        execution = call(client)
        if args.json:
            print_json(execution)
        else:
            print(f"{execution.id} {execution.state.value}")
        return EXIT_OK

    return run_with_client(args, body)


def cmd_cancel(args: argparse.Namespace) -> int:
    return _control(args, lambda c: c.cancel_execution(args.execution, compensate=args.compensate))


def cmd_pause(args: argparse.Namespace) -> int:
    return _control(args, lambda c: c.pause_execution(args.execution))


def cmd_resume(args: argparse.Namespace) -> int:
    if args.args is None:
        return _control(args, lambda c: c.resume_execution(args.execution, node_id=args.node))
    given = json_arg(args.args, "--args")
    return _control(
        args, lambda c: c.resume_execution(args.execution, node_id=args.node, args=given)
    )


def cmd_rerun(args: argparse.Namespace) -> int:
    def body(client: Client) -> int:
        data = None if args.input is None else json_arg(args.input, "--input")
        execution = client.rerun_execution(
            args.execution,
            from_node=args.from_node,
            input=data,
            version=args.version,
            request_id=args.request_id,
        )
        if args.json and not args.watch:
            print_json(execution)
        else:
            print(execution.id, flush=True)
        if args.watch:
            return _follow(client, execution.id, 0, args.json)
        return EXIT_OK

    return run_with_client(args, body)


# --------------------------------------------------------------------------- trace


def cmd_trace(args: argparse.Namespace) -> int:
    def body(client: Client) -> int:
        from agentrun.client import _convert as c
        from agentrun.v1 import execution_service_pb2 as pb

        request = pb.GetExecutionTraceRequest(name=c.execution_name(args.execution))
        response = client.call(client.execution_service.GetExecutionTrace, request)
        if args.json:
            print_json(response.trace)
        else:
            from agentrun.cli.trace import render_trace

            print(render_trace(response.trace, width=max(10, args.width)))
        return EXIT_OK

    return run_with_client(args, body)
