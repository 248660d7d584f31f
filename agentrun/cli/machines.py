"""`agentrun sm create|list|send|get|history|events|watch|cancel`: state machine instances on a server.

Client commands take `--server` ($AGENTRUN_ADDRESS, default 127.0.0.1:50051), `--api-key`
($AGENTRUN_API_KEY) and `--json`. Exit codes as elsewhere: 0 ok, 1 the server refused the
call (a guard that cannot read the event's data, an instance that has ended, ...), the event
changed nothing (no guard held, or an action failed) or the instance did not complete (`watch`),
2 a usage error or an event the state does not accept.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from agentrun.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from agentrun.cli.client_options import UsageError, add_client_options, json_arg, run_with_client
from agentrun.cli.output import print_json

if TYPE_CHECKING:
    from agentrun.client import Client
    from agentrun.client.machines import Instance, Transition

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "sm",
        help="state machine instances: create, send events, inspect, watch",
        description="Creates state machine instances on a server, sends them events and reads "
        "their history (StateMachineService).",
    )
    sub = p.add_subparsers(dest="sm_command", metavar="ACTION", required=True)

    c = sub.add_parser("create", help="create an instance of a state machine workflow")
    c.add_argument("workflow", metavar="NAME")
    c.add_argument("--input", metavar="JSON", default="{}", help="the input as JSON (default {})")
    c.add_argument("--data", metavar="JSON", help="overrides of the initial data, as a JSON object")
    c.add_argument("--version", type=int, help="workflow version (default: the latest)")
    c.add_argument("--request-id", help="idempotency key: the same id creates once")
    add_client_options(c)
    c.set_defaults(handler=cmd_create)

    c = sub.add_parser("list", help="list instances, oldest first")
    c.add_argument("--workflow", metavar="NAME", help="only instances of this workflow")
    c.add_argument(
        "--state",
        metavar="STATE",
        action="append",
        default=[],
        help="only instances in this state (ACTIVE, COMPLETED, FAILED, CANCELLED; repeatable)",
    )
    c.add_argument("--current-state", metavar="NAME", help="only instances in this machine state")
    add_client_options(c)
    c.set_defaults(handler=cmd_list)

    c = sub.add_parser("send", help="send an event to an instance")
    c.add_argument("instance", metavar="ID")
    c.add_argument("event", metavar="EVENT")
    c.add_argument("--data", metavar="JSON", default="null", help="the event's data (default null)")
    c.add_argument("--id", dest="event_id", help="event id: the same id is applied once")
    add_client_options(c)
    c.set_defaults(handler=cmd_send)

    c = sub.add_parser("get", help="print an instance")
    c.add_argument("instance", metavar="ID")
    add_client_options(c)
    c.set_defaults(handler=cmd_get)

    c = sub.add_parser("history", help="print an instance's history (every event and transition)")
    c.add_argument("instance", metavar="ID")
    c.add_argument("--after", type=int, default=0, metavar="SEQ", help="only entries after SEQ")
    add_client_options(c)
    c.set_defaults(handler=cmd_history)

    c = sub.add_parser("events", help="list the events the instance's current state accepts")
    c.add_argument("instance", metavar="ID")
    add_client_options(c)
    c.set_defaults(handler=cmd_events)

    c = sub.add_parser("cancel", help="cancel an instance (its timers and invoked execution too)")
    c.add_argument("instance", metavar="ID")
    c.add_argument("--reason", default="", help="recorded as the instance's error message")
    add_client_options(c)
    c.set_defaults(handler=cmd_cancel)

    c = sub.add_parser("watch", help="stream an instance's history until it ends")
    c.add_argument("instance", metavar="ID")
    c.add_argument("--after", type=int, default=0, metavar="SEQ", help="only entries after SEQ")
    add_client_options(c)
    c.set_defaults(handler=cmd_watch)


def _line(entry: Transition) -> str:
    move = f"{entry.from_state or '-'} -> {entry.to_state}"
    text = f"{entry.sequence:>4}  {entry.kind.value:<13} {entry.event:<16} {move}"
    if entry.transition_index is not None:
        text += f"  [transition {entry.transition_index}]"
    if entry.error is not None:
        text += f"  error {entry.error.type}: {entry.error.message}"
    if entry.instance_state.value != "ACTIVE":
        text += f"  ({entry.instance_state.value})"
    return text


def _show(instance: Instance) -> None:
    print(
        f"{instance.id}  {instance.workflow} v{instance.workflow_version}  {instance.state.value}  "
        f"state={instance.current_state}"
    )
    print(f"  data: {json.dumps(instance.data, ensure_ascii=False, sort_keys=True)}")
    if instance.error is not None:
        print(f"  error: {instance.error.type}: {instance.error.message}")
    if instance.invoked_execution:
        print(f"  invoked execution: {instance.invoked_execution}")


def cmd_create(args: argparse.Namespace) -> int:
    def body(client: Client) -> int:
        data = json_arg(args.data, "--data") if args.data else None
        if data is not None and not isinstance(data, dict):
            raise UsageError("--data must be a JSON object")
        instance = client.machines.create_instance(
            args.workflow,
            json_arg(args.input, "--input"),
            version=args.version,
            request_id=args.request_id,
            data=data,
        )
        if args.json:
            print_json(instance)
        else:
            print(instance.id)
        return EXIT_OK

    return run_with_client(args, body)


def cmd_list(args: argparse.Namespace) -> int:
    def body(client: Client) -> int:
        from agentrun.client.machines import InstanceState

        states = [s.upper() for s in args.state]
        unknown = [s for s in states if s not in InstanceState.__members__ or s == "UNSPECIFIED"]
        if unknown:
            raise UsageError(
                f"--state {unknown[0]}: expected ACTIVE, COMPLETED, FAILED or CANCELLED"
            )
        instances = list(
            client.machines.list_instances(
                workflow=args.workflow, states=states, current_state=args.current_state
            )
        )
        if args.json:
            print_json({"instances": instances})
        else:
            for i in instances:
                print(
                    f"{i.id}  {i.state.value:<9} {i.workflow} v{i.workflow_version}  state={i.current_state}"
                )
        return EXIT_OK

    return run_with_client(args, body)


def cmd_send(args: argparse.Namespace) -> int:
    from agentrun.client.machines import EventNotAccepted

    def body(client: Client) -> int:
        try:
            instance, entry = client.machines.send_event(
                args.instance, args.event, json_arg(args.data, "--data"), event_id=args.event_id
            )
        except EventNotAccepted as exc:
            if args.json:
                print_json(
                    {
                        "error": {
                            "type": "event_not_accepted",
                            "message": exc.message,
                            "accepted_events": exc.accepted_events,
                        }
                    }
                )
            else:
                print(f"agentrun: {exc.message}", file=sys.stderr)
            return EXIT_USAGE
        if args.json:
            print_json({"instance": instance, "transition": entry})
        else:
            print(_line(entry))
        return EXIT_OK if entry.kind.value == "TRANSITION" else EXIT_FAILED

    return run_with_client(args, body)


def cmd_get(args: argparse.Namespace) -> int:
    def body(client: Client) -> int:
        instance = client.machines.get_instance(args.instance)
        if args.json:
            print_json(instance)
        else:
            _show(instance)
        return EXIT_OK

    return run_with_client(args, body)


def cmd_history(args: argparse.Namespace) -> int:
    def body(client: Client) -> int:
        entries = list(client.machines.history(args.instance, after_sequence=args.after))
        if args.json:
            print_json({"transitions": entries})
        else:
            for entry in entries:
                print(_line(entry))
        return EXIT_OK

    return run_with_client(args, body)


def cmd_events(args: argparse.Namespace) -> int:
    def body(client: Client) -> int:
        events = client.machines.available_events(args.instance)
        if args.json:
            print_json({"events": events})
        else:
            for event in events:
                print(event)
        return EXIT_OK

    return run_with_client(args, body)


def cmd_cancel(args: argparse.Namespace) -> int:
    def body(client: Client) -> int:
        instance = client.machines.cancel_instance(args.instance, reason=args.reason)
        if args.json:
            print_json(instance)
        else:
            _show(instance)
        return EXIT_OK

    return run_with_client(args, body)


def cmd_watch(args: argparse.Namespace) -> int:
    def body(client: Client) -> int:
        machines = client.machines
        for entry in machines.watch(args.instance, after_sequence=args.after):
            if args.json:
                print_json(entry, lines=True)
            else:
                print(_line(entry), flush=True)
        instance = machines.get_instance(args.instance)
        return EXIT_OK if instance.state.value == "COMPLETED" else EXIT_FAILED

    return run_with_client(args, body)
