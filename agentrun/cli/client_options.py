"""What every command that calls a server shares, in one place: the client options (`--server`
($AGENTRUN_ADDRESS, default 127.0.0.1:50051), `--api-key` ($AGENTRUN_API_KEY), `--json`),
opening the SDK client, and turning a refused call into one line and an exit code.

`agentrun.cli.remote`, `.executions`, `.waits`, `.machines` and `.mcp` register their commands with
`add_client_options` and run them with `run_with_client`; a command's body raises `UsageError`
for input it refuses before or instead of a call.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agentrun.cli import EXIT_FAILED, EXIT_USAGE

if TYPE_CHECKING:
    from agentrun.client import AgentrunError, Client

__all__ = [
    "UsageError",
    "add_client_options",
    "add_server_option",
    "error_line",
    "json_arg",
    "run_with_client",
]


class UsageError(Exception):
    """The user's input is refused: printed as `agentrun: MESSAGE`, exit 2."""


def add_server_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server", metavar="HOST:PORT", help="default $AGENTRUN_ADDRESS or 127.0.0.1:50051"
    )


def add_client_options(p: argparse.ArgumentParser, *, json_output: bool = True) -> None:
    """`--server`, `--api-key` and (unless the command prints no results) `--json`."""
    add_server_option(p)
    p.add_argument("--api-key", metavar="KEY", help="default $AGENTRUN_API_KEY")
    if json_output:
        p.add_argument("--json", action="store_true", help="print JSON")


def json_arg(text: str, what: str) -> Any:
    """An option's JSON value, or a UsageError naming the option."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}") from None


def run_with_client(args: argparse.Namespace, body: Callable[[Client], int]) -> int:
    """Runs `body` with a client of the server the options name and returns its exit code;
    a UsageError or a refused call becomes one line on stderr and exit 2 (the user's input was
    refused) or 1 (the call failed)."""
    from agentrun.client import AgentrunError, Client, InvalidArgument

    try:
        with Client(args.server, api_key=args.api_key) as client:
            return body(client)
    except UsageError as exc:
        print(f"agentrun: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AgentrunError as exc:
        print(f"agentrun: {error_line(exc, args)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, InvalidArgument) else EXIT_FAILED


def error_line(exc: AgentrunError, args: argparse.Namespace) -> str:
    """One line for a refused or failed call, with what to do when it is a setup problem: no
    server at the address, or a missing or wrong API key."""
    from agentrun.client import PermissionDenied, Unauthenticated, Unavailable
    from agentrun.client._options import target

    if isinstance(exc, Unavailable) and not exc.reason:  # no server answered at all
        cause = str(exc).rsplit(": ", 1)[-1].strip() or "unavailable"
        return (
            f"cannot reach an agentrun server at {target(args.server)} ({cause}); start one "
            "with `agentrun serve`, or give its address with --server or $AGENTRUN_ADDRESS"
        )
    line = f"{exc.code.name.lower()}: {exc}"
    if isinstance(exc, Unauthenticated | PermissionDenied):
        line += "; pass an API key with --api-key KEY or $AGENTRUN_API_KEY"
    return line
