"""`agentrun run`: its options, checked into a `RunRequest` before anything is stored, the
run itself (`agentrun.cli.in_process`), and what it prints: the result as lines or as the
one JSON object `--json` promises, and its exit code (0 SUCCEEDED, 1 any other end or an
unreachable store, 2 a refused workflow, input, config or signal).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from agentrun.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from agentrun.cli.in_process import RunRequest, RunResult, StoreUnavailable, run_in_process
from agentrun.cli.local_io import (
    UserError,
    dump,
    json_default,
    load_config,
    load_spec,
    one_line,
    print_user_error,
    read_text,
)

__all__ = ["cmd_run", "register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def cmd_run(args: argparse.Namespace) -> int:
    try:
        request = _prepare_run(args)
        result = asyncio.run(run_in_process(request))
    except UserError as exc:  # refused before or at the start: nothing ran
        print_user_error(exc)
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
        print(dump(result.as_json()))
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
    print(dump({"error": error}))


def _prepare_run(args: argparse.Namespace) -> RunRequest:
    # Everything the user gave is checked before anything is stored.
    spec = load_spec(args.file)
    children = [(path, load_spec(path)) for path in args.with_files]
    run_input = _parse_input(args)
    signals = [_parse_signal(text) for text in args.signal]
    config = load_config(args.config)
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
        text = read_text(args.input_file)
        if args.input_file.endswith((".yaml", ".yml")):
            import yaml

            try:
                return yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise UserError(
                    f"{args.input_file}: not valid YAML: {one_line(str(exc))}"
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
            json.dumps(output, indent=2, ensure_ascii=False, sort_keys=True, default=json_default)
        )
