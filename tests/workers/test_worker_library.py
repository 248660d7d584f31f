"""The Python worker library's own rules: which functions get the Call, JSON values on the
wire, and that it needs nothing of the server's packages."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from agentrun.worker import Call, ToolDefinition, Worker
from agentrun.worker._types import from_value, to_value


def _call() -> Call:
    return Call("c1", "t.x", "e1", "n1", 1, "e1/n1/1", None, "", {})


def _one(args: Any) -> Any:
    return ("one", args)


def _two(args: Any, call: Call) -> Any:
    return ("two", call.call_id)


def _defaulted(args: Any, scale: int = 3) -> Any:
    return ("defaulted", scale)


def _named(args: Any, call: Call | None = None) -> Any:
    return ("named", call.call_id if call else None)


async def _async_two(args: Any, call: Call) -> Any:
    return ("async", call.attempt)


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (_one, ("one", {"a": 1})),
        (_two, ("two", "c1")),
        (_defaulted, ("defaulted", 3)),  # a default is not the Call's place
        (_named, ("named", "c1")),
        (_async_two, ("async", 1)),
        (lambda args: args["a"], 1),
    ],
)
async def test_a_function_gets_the_call_only_when_it_asks_for_it(fn: Any, expected: Any) -> None:
    assert await ToolDefinition("t.x", fn).run({"a": 1}, _call()) == expected


def test_values_round_trip_with_integers_kept() -> None:
    value = {"n": 3, "f": 2.5, "s": "x", "b": True, "none": None, "list": [1, {"k": [2.0]}]}
    assert from_value(to_value(value)) == {
        "n": 3,
        "f": 2.5,
        "s": "x",
        "b": True,
        "none": None,
        "list": [1, {"k": [2]}],
    }
    with pytest.raises(ValueError):
        to_value(float("nan"))
    with pytest.raises(TypeError):
        to_value(object())


def test_a_tool_name_is_served_once() -> None:
    worker = Worker("127.0.0.1:1")
    worker.tool("t.x")(_one)
    with pytest.raises(ValueError, match="twice"):
        worker.tool("t.x")(_two)


def test_the_library_imports_no_server_package() -> None:
    code = (
        "import sys, agentrun.worker; "
        "bad = [m for m in sys.modules if m.startswith(('agentrun.engine', 'agentrun.server', "
        "'agentrun.storage', 'agentrun.integrations', 'sqlalchemy'))]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
