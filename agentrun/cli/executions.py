"""`agentrun executions list|get|pause|resume|cancel`: the executions on a server
(ListExecutions, GetExecution, ControlExecutions).

`list` prints one page (ListExecutions' paging: `--page-size`, `--page-token`, the next token
on stderr) or, with `--all`, every page; filters as ListExecutions takes them. `get` prints an
execution with every node of its workflow (a node never reached is PENDING).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agentrun.cli import EXIT_FAILED, EXIT_OK
from agentrun.cli.client_options import UsageError, add_client_options, run_with_client
from agentrun.cli.output import print_json

if TYPE_CHECKING:
    from agentrun.client import Client, Execution

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("executions", help="list and inspect executions on a server")
    sub = p.add_subparsers(dest="executions_command", metavar="ACTION", required=True)

    c = sub.add_parser(
        "list",
        help="list executions, oldest (or newest) first",
        description="Lists executions in creation order (newest first with --newest-first), one "
        "page at a time (the next page's token goes to stderr), or every page with --all.",
    )
    c.add_argument("--workflow", metavar="NAME", help="only executions of this workflow")
    c.add_argument(
        "--state",
        metavar="STATE",
        action="append",
        default=[],
        help="only executions in this state (RUNNING, WAITING, FAILED, ...; repeatable)",
    )
    c.add_argument(
        "--filter",
        metavar="TEXT",
        help="a ListExecutions filter, e.g. 'state IN (RUNNING, WAITING)'; ANDed with the above",
    )
    c.add_argument("--newest-first", action="store_true", help="the newest executions first")
    c.add_argument(
        "--created-after",
        metavar="TIME",
        help="only executions created at or after TIME (ISO 8601; without an offset, local time)",
    )
    c.add_argument(
        "--created-before",
        metavar="TIME",
        help="only executions created before TIME (ISO 8601; without an offset, local time)",
    )
    c.add_argument(
        "--page-size", type=int, default=100, metavar="N", help="default 100, at most 1000"
    )
    c.add_argument(
        "--page-token", default="", metavar="TOKEN", help="the page after a previous one"
    )
    c.add_argument("--all", action="store_true", help="follow the pages to the end")
    add_client_options(c)
    c.set_defaults(handler=cmd_list)

    for action in ("pause", "resume", "cancel"):
        c = sub.add_parser(
            action,
            help=f"{action} every execution a filter matches",
            description=f"{action.capitalize()}s every execution matching --workflow, --state and "
            "--filter (at least one is required), a page of --page-size per server call, and prints "
            "each execution's outcome: done, or refused with the reason. Exit 1 if any was refused.",
        )
        c.add_argument("--workflow", metavar="NAME", help="only executions of this workflow")
        c.add_argument(
            "--state",
            metavar="STATE",
            action="append",
            default=[],
            help="only in this state (repeatable)",
        )
        c.add_argument(
            "--filter", metavar="TEXT", help="a ListExecutions filter, ANDed with the above"
        )
        c.add_argument(
            "--page-size",
            type=int,
            default=100,
            metavar="N",
            help="executions per call (default 100, at most 1000)",
        )
        if action == "cancel":
            c.add_argument("--compensate", action="store_true", help="undo completed nodes (saga)")
        add_client_options(c)
        c.set_defaults(handler=cmd_bulk, action=action)

    c = sub.add_parser("get", help="print an execution and every node of its workflow")
    c.add_argument("execution", metavar="ID")
    add_client_options(c)
    c.set_defaults(handler=cmd_get)


def cmd_list(args: argparse.Namespace) -> int:
    def body(client: Client) -> int:
        from agentrun.client import _convert as c
        from agentrun.v1 import execution_service_pb2 as pb

        base = c.list_executions_request(
            c.execution_filter(args.workflow, _states(args.state), args.filter),
            created_after=_local_time(args.created_after, "--created-after"),
            created_before=_local_time(args.created_before, "--created-before"),
            newest_first=args.newest_first,
        )
        token = args.page_token
        executions: list[Any] = []
        while True:
            request = pb.ListExecutionsRequest(page_size=args.page_size, page_token=token)
            request.MergeFrom(base)
            response = client.call(client.execution_service.ListExecutions, request)
            executions.extend(response.executions)
            token = response.next_page_token
            if not args.all or not token:
                break
        if args.json:
            # ListExecutions' answer (with --all, every page's executions in one).
            print_json(pb.ListExecutionsResponse(executions=executions, next_page_token=token))
        else:
            for message in executions:
                print(_row(c.execution(message)))
        if token:
            print(f"more: --page-token {token}", file=sys.stderr)
        return EXIT_OK

    return run_with_client(args, body)


def _local_time(text: str | None, flag: str) -> datetime | None:
    """An ISO 8601 time from the command line; without an offset it is the local time, as the
    rows print it."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{flag} {text}: expected an ISO 8601 time such as 2026-01-31T09:30"
        ) from None
    return value if value.tzinfo else value.astimezone()


def _states(raw: list[str]) -> list[str]:
    from agentrun.client import ExecutionState

    states = [s.upper().removeprefix("STATE_") for s in raw]
    known = [s.value for s in ExecutionState if s is not ExecutionState.UNSPECIFIED]
    for state in states:
        if state not in known:
            raise UsageError(f"--state {state}: expected one of {', '.join(known)}")
    return states


def cmd_bulk(args: argparse.Namespace) -> int:
    """`executions pause|resume|cancel`: ControlExecutions over every page."""

    def body(client: Client) -> int:
        from agentrun.client import _convert as c
        from agentrun.v1 import execution_service_pb2 as pb

        text = c.execution_filter(args.workflow, _states(args.state), args.filter)
        if not text:
            raise UsageError("name the executions: --workflow, --state or --filter")
        outcomes: list[Any] = []
        token = ""
        while True:
            request = c.control_request(
                args.action, text, args.page_size, token, getattr(args, "compensate", False)
            )
            response = client.call(client.execution_service.ControlExecutions, request)
            outcomes.extend(response.outcomes)
            if not args.json:
                for item in response.outcomes:
                    o = c.control_outcome(item)
                    verdict = "done" if o.done else f"refused {o.reason}: {o.message}"
                    print(f"{o.execution_id}  {o.state.value:<19} {verdict}")
            token = response.next_page_token
            if not token:
                break
        if args.json:
            print_json(pb.ControlExecutionsResponse(outcomes=outcomes))
        return EXIT_OK if all(o.done for o in outcomes) else EXIT_FAILED

    return run_with_client(args, body)


def _row(execution: Execution) -> str:
    created = (
        execution.create_time.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        if execution.create_time
        else ""
    )
    return (
        f"{execution.id}  {execution.state.value:<19} {execution.workflow} "
        f"v{execution.workflow_version}  {created}"
    )


def cmd_get(args: argparse.Namespace) -> int:
    def body(client: Client) -> int:
        execution = client.get_execution(args.execution, include_nodes=True)
        if args.json:
            print_json({"execution": execution, "nodes": execution.nodes})
            return EXIT_OK
        print(_row(execution))
        if execution.output is not None:
            print(f"output: {json.dumps(execution.output, ensure_ascii=False)}")
        if execution.error is not None:
            at = f" at {execution.error.node_id}" if execution.error.node_id else ""
            print(f"error{at}: {execution.error.type}: {execution.error.message}")
        width = max([len(n.node_id) for n in execution.nodes] + [4])
        for node in execution.nodes:
            extra = f"  {node.error.type}: {node.error.message}" if node.error else ""
            if node.skip_reason:
                extra += f"  skipped: {node.skip_reason}"
            attempts = f"attempt {node.attempt}" if node.attempt else ""
            print(f"  {node.node_id:<{width}}  {node.state.value:<19} {attempts}{extra}".rstrip())
        return EXIT_OK

    return run_with_client(args, body)
