"""Pure computations of a DAG run: what an expression sees (the activation), what inline
nodes produce (`switch`, `aggregate`), the execution's output. No state is changed here."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, assert_never

from agentrun.engine import sizes
from agentrun.engine.expressions import Activation, Expression, ExpressionError
from agentrun.engine.plan import AggregateNode, DagPlan, NodePlan, PassNode, SwitchNode
from agentrun.engine.ports import ToolFailure
from agentrun.engine.runtime.common import error_dict
from agentrun.storage.records import ExecutionRecord, NodeRecord, NodeState


class Activate(Protocol):
    """Builds an activation from the names and node references an expression reads."""

    def __call__(
        self,
        names: frozenset[str],
        node_refs: frozenset[str],
        extra: dict[str, Any] | None = None,
        attempt: int = 1,
    ) -> dict[str, Any]: ...


def activation(
    record: ExecutionRecord,
    records: Mapping[str, NodeRecord],
    secrets: Mapping[str, str],
    names: frozenset[str],
    node_refs: frozenset[str],
    extra: dict[str, Any] | None = None,
    attempt: int = 1,
) -> dict[str, Any]:
    """What an expression sees, built only for the names it reads; `attempt` is the current
    node's (from 1) for `execution.attempt` in its arguments and output transforms. One
    `Activation` per scope: its expressions share one conversion into CEL."""
    act = Activation()
    if "input" in names:
        act["input"] = record.input
    if "vars" in names:
        act["vars"] = record.vars
    if "nodes" in names:
        views: dict[str, dict[str, Any]] = {}
        for ref in node_refs:
            rec = records.get(ref)
            if rec is None:
                views[ref] = {"output": None, "state": "PENDING", "error": None, "input": None}
            else:
                views[ref] = {
                    "output": rec.output
                    if rec.state is not NodeState.SKIPPED or rec.skip_reason == "handler"
                    else None,
                    "state": rec.state.value,
                    "error": rec.error,
                    "input": rec.input,
                }
        act["nodes"] = views
    if "execution" in names:
        act["execution"] = {
            "id": record.id,
            "workflow": record.workflow,
            "version": record.version,
            "attempt": max(attempt, 1),
            "started_at": iso(record.started_at),
        }
    if "secrets" in names:
        act["secrets"] = secrets
    if extra:
        act.update(extra)
    return act


def expression_failure(exc: ExpressionError) -> dict[str, Any]:
    """An expression that could not be evaluated, as the error a node fails with."""
    return error_dict("expression_error", exc.message, {"path": exc.path})


def boolean(expr: Expression, act: dict[str, Any]) -> bool:
    """A `when` or a case: must yield a bool."""
    value = expr.evaluate(act)
    if not isinstance(value, bool):
        raise ExpressionError(expr.path, f"must yield a bool, got {typename(value)}")
    return value


def switch_target(node: SwitchNode, act: dict[str, Any]) -> str:
    """The first case that holds, else the default; neither fails the node."""
    for case in node.cases:
        if boolean(case.when, act):
            return case.target
    if node.default:
        return node.default
    raise ToolFailure(
        "no_choice_matched", f"no case of switch {node.id!r} matched and it has no default"
    )


def inline_value(
    node: PassNode | SwitchNode | AggregateNode,
    attempt: int,
    activate: Activate,
    taken_outputs: Callable[[NodePlan], list[Any]],
) -> Any:
    """What an inline node (`pass`, `switch`, `aggregate`) yields; a switch yields its target."""
    match node:
        case PassNode():
            t = node.step.value
            if t.is_constant:
                return t.constant
            return t.evaluate(activate(node.names, node.node_refs, None, attempt))
        case SwitchNode():
            return switch_target(node, activate(node.names, node.node_refs, None))
        case AggregateNode():
            return aggregate(node, taken_outputs(node), activate)
        case _:
            assert_never(node)


def aggregate(node: AggregateNode, outputs: list[Any], activate: Activate) -> Any:
    """An `aggregate` node's value from its taken sources' outputs (in `needs` order)."""
    strategy = node.strategy
    if strategy == "merge":
        merged: dict[str, Any] = {}
        for out in outputs:
            if out is None:
                continue
            if not isinstance(out, dict):
                raise ToolFailure("tool_error", f"merge needs objects, got {typename(out)}")
            deep_merge(merged, out)
        return merged
    if strategy == "concat":
        result: list[Any] = []
        for out in outputs:
            if out is None:
                continue
            if not isinstance(out, list):
                raise ToolFailure("tool_error", f"concat needs lists, got {typename(out)}")
            result.extend(out)
        return result
    if strategy == "first":
        return outputs[0] if outputs else None
    if strategy == "vote":
        best, count = None, 0
        tallies: list[tuple[Any, int]] = []
        for out in outputs:
            for i, (value, n) in enumerate(tallies):
                if value == out:
                    tallies[i] = (value, n + 1)
                    break
            else:
                tallies.append((out, 1))
        for value, n in tallies:
            if n > count:
                best, count = value, n
        return best
    assert node.expr is not None
    return node.expr.evaluate(activate(node.names, node.node_refs, {"outputs": outputs}))


def node_output(
    node: NodePlan, raw: Any, activate: Activate, attempt: int, vars: dict[str, Any]
) -> tuple[Any, dict[str, Any] | None, dict[str, Any] | None]:
    """A succeeded call's output through the node's `output` transform, and the execution's
    vars with its `export` (None: no export); or the size error that fails the node instead.
    Raises ExpressionError."""
    output = raw
    if node.output is not None:
        output = node.output.evaluate(
            activate(node.output.names, node.output.node_refs, {"output": raw}, attempt)
        )
    too_large = sizes.output_error("the output", output)
    if too_large is not None or not node.export:
        return output, None, too_large
    names = frozenset().union(*(x.names for x in node.export.values()))
    refs = frozenset().union(*(x.node_refs for x in node.export.values()))
    act = activate(names, refs, {"output": output}, attempt)
    new_vars = vars
    for key, t in node.export.items():
        # Copy on write: a committed record may share the old dict.
        new_vars = {**new_vars, key: t.evaluate(act)}
    return (
        output,
        new_vars,
        sizes.output_error("the variables (vars) with this node's export", new_vars),
    )


def execution_output(plan: DagPlan, records: Mapping[str, NodeRecord], activate: Activate) -> Any:
    """The workflow's `output`, else the outputs of its succeeded sinks by id."""
    if plan.output is not None:
        return plan.output.evaluate(activate(plan.output.names, plan.output.node_refs, None))
    return {
        nid: records[nid].output
        for nid, node in plan.nodes.items()
        if node.sink and records.get(nid) is not None and records[nid].state is NodeState.SUCCEEDED
    }


def deep_merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for k, v in other.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            deep_merge(into[k], v)
        else:
            into[k] = v if not isinstance(v, dict) else dict(v)


def typename(value: Any) -> str:
    return {
        bool: "bool",
        int: "int",
        float: "double",
        str: "string",
        list: "list",
        dict: "map",
    }.get(type(value), "null" if value is None else type(value).__name__)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


def parse_time(value: Any) -> float:
    """A `wait.until` value: epoch seconds or an RFC 3339 timestamp (UTC when it has no zone)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"until must be an RFC 3339 timestamp, got {typename(value)}")
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()
