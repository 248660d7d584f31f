"""The tool registry: Python, entry points and config; args validation; idempotency keys and
attempts as a real workflow run passes them; irreversible tools are not retried."""

from __future__ import annotations

import sys
import textwrap
from typing import Any

import pytest

from agentrun.engine.ports import CallContext, Effect, Tool, ToolFailure
from agentrun.integrations import Registry, ToolDefinitionError, default_tools
from agentrun.storage.records import ExecutionState


class Recorder(Tool):
    """Fails each call (by idempotency key) until its attempt `ok_on`, recording every call."""

    name = "test.record"
    args_schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}

    def __init__(
        self, ok_on: int = 2, effect: Effect = Effect.IDEMPOTENT, name: str = "test.record"
    ) -> None:
        self.name = name
        self.effect = effect
        self.ok_on = ok_on
        self.calls: list[tuple[str, int, Any]] = []

    async def call(self, args: Any, ctx: CallContext) -> Any:
        self.calls.append((ctx.idempotency_key, ctx.attempt, args))
        if ctx.attempt < self.ok_on:
            raise ToolFailure("tool_error", f"attempt {ctx.attempt} fails")
        return {"n": args["n"], "key": ctx.idempotency_key}


def test_python_registration_and_description() -> None:
    registry = Registry()

    @registry.tool(
        "team.add",
        description="Adds.",
        effect="pure",
        args_schema={"type": "object", "properties": {"a": {"type": "number"}}},
        result_schema={"type": "number"},
    )
    async def add(args: Any, ctx: CallContext) -> Any:
        return args["a"] + 1

    registry.register(Recorder())
    assert registry.names() == ["team.add", "test.record"]
    described = {d["name"]: d for d in registry.describe()}
    assert described["team.add"] == {
        "name": "team.add",
        "description": "Adds.",
        "effect": "pure",
        "args_schema": {"type": "object", "properties": {"a": {"type": "number"}}},
        "result_schema": {"type": "number"},
    }
    assert described["test.record"]["effect"] == "idempotent"
    with pytest.raises(ToolDefinitionError, match="already registered"):
        registry.register(Recorder())
    registry.register(Recorder(ok_on=1), replace=True)


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        (Recorder(name="bad name"), "dotted words"),
        (Recorder(name=""), "dotted words"),
        (Recorder(effect="sometimes"), "effect"),  # type: ignore[arg-type]
    ],
)
def test_bad_tools_are_refused(tool: Tool, message: str) -> None:
    with pytest.raises(ToolDefinitionError, match=message):
        Registry([tool])


def test_bad_schema_is_refused() -> None:
    tool = Recorder()
    tool.args_schema = {"type": "no-such-type"}
    with pytest.raises(ToolDefinitionError, match="not a valid JSON Schema"):
        Registry([tool])


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """An installed distribution (a real .dist-info on sys.path) declaring agentrun.tools."""
    (tmp_path / "agentrun_plugin_mod.py").write_text(
        textwrap.dedent("""
        from agentrun.engine.ports import Effect, Tool

        class Shout(Tool):
            name = "plugin.shout"
            description = "Upper-cases text."
            args_schema = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
            effect = Effect.PURE

            def __init__(self, suffix=""):
                self.suffix = suffix

            async def call(self, args, ctx):
                return {"text": args["text"].upper() + self.suffix}

        def make(options):
            return [Shout(options.get("suffix", "!"))]
    """)
    )
    dist = tmp_path / "agentrun_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: agentrun-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[agentrun.tools]\nshout = agentrun_plugin_mod:make\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("agentrun_plugin_mod", None)


async def test_entry_point_tools_run_in_a_workflow(plugin_dist, runner_factory) -> None:
    config = {"tools": {"shout": {"suffix": "?!"}}}
    assert "plugin.shout" in default_tools(config).names()
    assert "plugin.shout" not in default_tools({"tools": {"entry_points": False}}).names()
    runner = await runner_factory(config)
    final, _ = await runner.run(
        'name: ep\nnodes:\n  - {id: a, tool: {name: plugin.shout, args: {text: "${{ input.t }}"}}}\n',
        {"t": "hi"},
    )
    assert final.state is ExecutionState.SUCCEEDED, final.error
    assert final.output == {"a": {"text": "HI?!"}}


def test_config_registered_tools(tmp_path, monkeypatch) -> None:
    (tmp_path / "agentrun_cfg_mod.py").write_text(
        textwrap.dedent("""
        from agentrun.integrations import FunctionTool

        async def _lookup(args, ctx):
            return {"id": args["id"]}

        lookup = FunctionTool(_lookup, name="orders.lookup", effect="pure")

        def several(options):
            return [FunctionTool(_lookup, name=n) for n in options["names"]]
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry = default_tools(
            {
                "tools": {
                    "register": [
                        "agentrun_cfg_mod:lookup",
                        {
                            "factory": "agentrun_cfg_mod:several",
                            "options": {"names": ["a.one", "a.two"]},
                        },
                    ]
                }
            }
        )
        assert {"orders.lookup", "a.one", "a.two"} <= set(registry.names())
        with pytest.raises(ToolDefinitionError, match="cannot import"):
            default_tools({"tools": {"register": ["agentrun_cfg_mod:nothing"]}})
        with pytest.raises(ValueError, match="unknown keys"):
            default_tools({"tools": {"http.reqest": {}}})
    finally:
        sys.modules.pop("agentrun_cfg_mod", None)


async def test_idempotency_key_is_stable_across_retries_and_indexed_in_maps(runner_factory) -> None:
    tool = Recorder(ok_on=3)
    runner = await runner_factory(extra_tools=[tool])
    final, _ = await runner.run(
        """
name: keys
defaults: {retry: {max_attempts: 3, initial_interval: 10ms, backoff: fixed}}
nodes:
  - {id: one, tool: {name: test.record, args: {n: 0}}}
  - id: many
    map: {items: "${{ [1, 2, 3] }}", node: {tool: {name: test.record, args: {n: "${{ item }}"}}}}
"""
    )
    assert final.state is ExecutionState.SUCCEEDED, final.error
    by_key: dict[str, list[int]] = {}
    for key, attempt, _ in tool.calls:
        by_key.setdefault(key, []).append(attempt)
    eid = final.id
    assert by_key == {
        f"{eid}/one": [1, 2, 3],
        f"{eid}/many/0": [1, 2, 3],
        f"{eid}/many/1": [1, 2, 3],
        f"{eid}/many/2": [1, 2, 3],
    }
    assert [o["key"] for o in final.output["many"]] == [f"{eid}/many/{i}" for i in range(3)]


async def test_irreversible_tool_is_never_retried(runner_factory) -> None:
    tool = Recorder(ok_on=2, effect=Effect.IRREVERSIBLE, name="test.charge")
    runner = await runner_factory(extra_tools=[tool])
    final, _nodes = await runner.run(
        "name: irr\nnodes:\n  - {id: pay, retry: {max_attempts: 5, initial_interval: 10ms},"
        " tool: {name: test.charge, args: {n: 1}}}\n"
    )
    assert final.state is ExecutionState.FAILED
    assert [a for _, a, _ in tool.calls] == [1]


async def test_args_are_validated_before_the_call_naming_the_field(runner_factory) -> None:
    tool = Recorder(ok_on=1)
    runner = await runner_factory(extra_tools=[tool])
    final, nodes = await runner.run(
        'name: badargs\nnodes:\n  - {id: a, tool: {name: test.record, args: {n: "${{ input.n }}"}}}\n',
        {"n": "seven"},
    )
    assert final.state is ExecutionState.FAILED
    assert nodes["a"].error["type"] == "invalid_args"
    assert nodes["a"].error["details"]["field"] == "args.n"
    assert tool.calls == []
