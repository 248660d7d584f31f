"""Commands that need no server: `validate`, `graph`, and `run` (registered from
`agentrun.cli.run`, which builds the engine in this process).

`validate` and `graph` read a workflow file (and `validate` a config file) as `run` reads
them (`agentrun.cli.local_io`) and print what the compiler or the loader made of it.
"""

from __future__ import annotations

import argparse
import sys

from agentrun.cli import EXIT_OK, EXIT_USAGE
from agentrun.cli import run as run_command
from agentrun.cli.local_io import (
    UserError,
    build_integrations,
    compile_spec,
    dump,
    load_config,
    load_spec,
    print_user_error,
)

__all__ = ["register"]


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

    run_command.register(subparsers)


# --------------------------------------------------------------------------- validate


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        spec = load_spec(args.file)
        config = load_config(args.config)
        tools, agents = build_integrations(config, args.config)
        plan = compile_spec(spec, tools, agents, args.file)
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
            print(dump({**body, "hint": hint} if hint else body))
        elif exc.diagnostics:
            # The diagnostics are what validate produces: on stdout, one per line.
            for line in exc.lines:
                print(line)
        else:
            print_user_error(exc)
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
        print(dump(body))
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
        spec = load_spec(args.file)
    except UserError as exc:
        print_user_error(exc)
        return EXIT_USAGE
    sys.stdout.write(to_mermaid(spec))
    return EXIT_OK
