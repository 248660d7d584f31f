"""`agentrun waits` and `agentrun answer`: the approvals an execution waits for (ListWaits)
and answering one (AnswerWait), by its wait id or by the callback token of its
`node.waiting` event.

`waits` prints one line per pending wait: its id, the execution, node (and map index), the
signal, since when, and the answer's schema when it has one. `answer` prints the execution's
new state; a wait that ended, or an earlier attempt's, exits 1 with FAILED_PRECONDITION.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from agentrun.cli import EXIT_OK
from agentrun.cli.client_options import UsageError, add_client_options, json_arg, run_with_client
from agentrun.cli.output import print_json

if TYPE_CHECKING:
    from agentrun.client import Client

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "waits",
        help="list the pending waits for a signal (approvals to give)",
        description="Pending waits for a signal of the caller's tenant (or of one execution), "
        "by execution then node: wait id, execution, node[index], signal, since, schema.",
    )
    p.add_argument("--execution", metavar="ID", help="only this execution's waits")
    add_client_options(p)
    p.set_defaults(handler=cmd_waits)

    p = subparsers.add_parser(
        "answer",
        help="answer one wait by its id or its callback token (applied once)",
        description="Answers a wait named by its id (from `agentrun waits` or a node.waiting "
        "event) or, with --token, by its callback token. An answer to a wait that ended, or "
        "to an earlier attempt of its node, is refused (exit 1).",
    )
    p.add_argument("wait_id", metavar="WAIT_ID", nargs="?", help="the wait's id")
    p.add_argument("--token", metavar="TOKEN", help="the wait's callback token instead of its id")
    p.add_argument("--data", metavar="JSON", default="null", help="the answer (default null)")
    add_client_options(p)
    p.set_defaults(handler=cmd_answer)


def cmd_waits(args: argparse.Namespace) -> int:
    def body(client: Client) -> int:
        waits = list(client.list_waits(execution=args.execution))
        if args.json:
            print_json({"waits": waits})
            return EXIT_OK
        for wait in waits:
            node = wait.node_id + (f"[{wait.map_index}]" if wait.map_index is not None else "")
            since = (
                wait.start_time.astimezone().strftime("%Y-%m-%d %H:%M:%S")
                if wait.start_time
                else ""
            )
            schema = (
                f" schema {json.dumps(wait.schema, separators=(',', ':'))}" if wait.schema else ""
            )
            print(
                f"{wait.wait_id}  {wait.workflow} {node} signal {wait.signal} since {since}{schema}"
            )
        return EXIT_OK

    return run_with_client(args, body)


def cmd_answer(args: argparse.Namespace) -> int:
    def body(client: Client) -> int:
        if bool(args.wait_id) == bool(args.token):
            raise UsageError("give a WAIT_ID or --token, not both")
        data = json_arg(args.data, "--data")
        if args.token:
            execution = client.answer_wait(data=data, token=args.token)
        else:
            execution = client.answer_wait(args.wait_id, data)
        if args.json:
            print_json(execution)
        else:
            print(f"{execution.id} {execution.state.value}")
        return EXIT_OK

    return run_with_client(args, body)
