"""The `agentrun` command line.

Local commands (`validate`, `graph`, `run`) need no server: `agentrun.cli.local` registers
them, `agentrun.cli.run` and `agentrun.cli.in_process` are `run`;
the commands that talk to a server over gRPC (`serve`, `workflows`, `start`, `watch`, `signal`,
`cancel`, `pause`, `resume`, `rerun`, `trace`, `health`) live in `agentrun.cli.remote`,
`agentrun executions` in `agentrun.cli.executions`, `agentrun sm` (state machine
instances) in `agentrun.cli.machines`, and `agentrun mcp` (workflows as MCP tools) in
`agentrun.cli.mcp`; their client options and error handling are `agentrun.cli.client_options`.
Every `--json` prints the protobuf JSON mapping (`agentrun.cli.output`). Each module registers its subcommands on the parser;
a subcommand's handler takes the parsed arguments and returns the exit code.

Exit codes: 0 success, 1 the command ran but did not succeed (an execution that did not end
SUCCEEDED, a server error), 2 the user's input was refused (usage, invalid workflow or input),
130 interrupted. No command prints a traceback unless AGENTRUN_DEBUG is set.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    from agentrun.cli import local

    parser = argparse.ArgumentParser(
        prog="agentrun",
        description="A durable runtime for agent workflows.",
        epilog="Run `agentrun COMMAND --help` for a command's options. Docs: docs/cli.md",
    )
    parser.add_argument("--version", action=_VersionAction)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    local.register(subparsers)
    _register_remote(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command and returns its exit code (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        print("agentrun: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `agentrun graph x.yaml | head`: the reader left; nothing more to say.
        _silence_stdout()
        return EXIT_FAILED
    except Exception as exc:  # the last line of defence: a message, never a traceback
        if os.environ.get("AGENTRUN_DEBUG"):
            raise
        print(f"agentrun: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("agentrun: set AGENTRUN_DEBUG=1 to see the traceback", file=sys.stderr)
        return EXIT_FAILED


def _register_remote(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The server commands: `agentrun.cli.remote` (serve, workflows, start, watch, signal,
    cancel, ...), `agentrun.cli.executions`, `agentrun.cli.waits` (waits, answer),
    `agentrun.cli.machines` (`agentrun sm`) and
    `agentrun.cli.mcp`."""
    import importlib

    for name in ("remote", "executions", "waits", "machines", "mcp"):
        module_name = f"agentrun.cli.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # an install without these commands
            _warn_remote(exc)
            continue
        except Exception as exc:
            _warn_remote(exc)
            continue
        module.register(subparsers)


def _warn_remote(exc: BaseException) -> None:
    if os.environ.get("AGENTRUN_DEBUG"):
        raise exc
    print(f"agentrun: server commands unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)


class _VersionAction(argparse.Action):
    """`--version`: looks the version up only when asked (importlib.metadata scans the
    installed distributions; every other command, `serve` included, starts without it)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            default=argparse.SUPPRESS,
            help="show program's version number and exit",
        )

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"agentrun {_version()}")
        parser.exit()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("agentrun")
    except Exception:
        return "unknown"


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
