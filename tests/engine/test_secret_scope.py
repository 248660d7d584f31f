"""Secrets are readable only where they are sent (issue 13, item 6).

`pass: {value: "${{ bytes(secrets.tok) }}"}` used to store the secret in base64: redaction after
the fact only knows the verbatim value. Now `secrets.*` is refused at validation in every field
whose result is stored or steers the run (values, outputs, exports, conditions, edge inputs,
items, guards, assigns, child inputs), and where it is allowed (a tool's args, an agent's prompt
or system) only as it is — so every copy the engine sees is verbatim, and redacted."""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from agentrun.engine import Engine, EngineConfig, InvalidWorkflow, compile_workflow, load_workflow
from agentrun.integrations import Registry, default_agents, default_tools
from agentrun.integrations.core_tools import core_tools
from agentrun.storage.memory import MemoryStore

CANARY = "cAnArY-7f3e9b1d52a4"

# Every way CEL (this library: no base64, reverse or substring functions) can re-encode a string.
ENCODINGS = [
    "bytes(secrets.tok)",
    "string(bytes(secrets.tok))",
    "size(secrets.tok)",
    "secrets.tok == 'x'",
    "secrets.tok.startsWith('c')",
    "secrets.tok.contains('A')",
    "secrets.tok.matches('^c')",
    "'c' in [secrets.tok]",
    "[secrets.tok]",
    "{'k': secrets.tok}",
    "secrets",
    "secrets[input.name]",
    "dyn(secrets.tok)",
    "type(secrets.tok)",
    "input.flag ? secrets.tok : 'x'",
    "[1, 2].map(x, secrets.tok)",
    "(secrets.tok + 'x').endsWith('x')",
]


def _diagnostics(text: str) -> list[str]:
    spec = load_workflow(textwrap.dedent(text))
    with pytest.raises(InvalidWorkflow) as info:
        compile_workflow(spec, tools=default_tools(), agents=default_agents())
    return [str(d) for d in info.value.diagnostics]


@pytest.mark.parametrize("expr", ENCODINGS)
def test_a_transformed_secret_is_refused_even_in_tool_args(expr: str) -> None:
    errors = _diagnostics(
        f"""
        name: w
        nodes:
          - {{id: a, tool: {{name: core.echo, args: {{v: "${{{{ {expr} }}}}"}}}}}}
        """
    )
    assert len(errors) == 1, errors
    assert errors[0].startswith("nodes[0].tool.args.v: use a secret as it is"), errors


STORED_FIELDS = [
    ("nodes:\n  - {id: a, pass: {value: '${{ secrets.tok }}'}}", "nodes[0].pass.value"),
    (
        "nodes:\n  - {id: a, pass: {value: {deep: ['x ${{ secrets.tok }}']}}}",
        "nodes[0].pass.value.deep[0]",
    ),
    ("nodes:\n  - {id: a, pass: {value: 1}, output: '${{ secrets.tok }}'}", "nodes[0].output"),
    (
        "nodes:\n  - {id: a, pass: {value: 1}, export: {k: '${{ secrets.tok }}'}}",
        "nodes[0].export.k",
    ),
    (
        "nodes:\n  - {id: a, pass: {value: 1}, when: '${{ size(secrets.tok) > 3 }}'}",
        "nodes[0].when",
    ),
    (
        (
            "nodes:\n  - {id: a, pass: {value: 1}}\n  - {id: b, pass: {value: 2}}\n"
            "edges:\n  - {from: a, to: b, when: '${{ secrets.tok == \"x\" }}'}"
        ),
        "edges[0].when",
    ),
    (
        (
            "nodes:\n  - {id: a, pass: {value: 1}}\n  - {id: b, pass: {value: 2}}\n"
            "edges:\n  - {from: a, to: b, input: {v: '${{ secrets.tok }}'}}"
        ),
        "edges[0].input.v",
    ),
    (
        "nodes:\n  - {id: a, map: {items: '${{ [secrets.tok] }}', node: {pass: {value: 1}}}}",
        "nodes[0].map.items",
    ),
    (
        "nodes:\n  - {id: a, map: {items: '${{ [1] }}', node: {pass: {value: '${{ secrets.tok }}'}}}}",
        "nodes[0].map.node.pass.value",
    ),
    (
        (
            "nodes:\n  - id: s\n    switch: {cases: [{when: '${{ secrets.tok == \"x\" }}', goto: b}], default: b}\n"
            "  - {id: b, pass: {value: 1}}"
        ),
        "nodes[0].switch.cases[0].when",
    ),
    ("nodes:\n  - {id: a, wait: {until: '${{ secrets.tok }}'}}", "nodes[0].wait.until"),
    (
        "nodes:\n  - {id: a, workflow: {name: child, input: {t: '${{ secrets.tok }}'}}}",
        "nodes[0].workflow.input.t",
    ),
    ("nodes:\n  - {id: a, pass: {value: 1}}\noutput: {t: '${{ secrets.tok }}'}", "output.t"),
    (
        "nodes:\n  - {id: a, pass: {value: 1}}\n  - {id: g, needs: [a], aggregate: {strategy: expr, expr: '${{ secrets.tok }}'}}",
        "nodes[1].aggregate.expr",
    ),
    (
        "nodes:\n  - {id: a, pass: {value: 1}, compensate: {pass: {value: '${{ secrets.tok }}'}}}",
        "nodes[0].compensate.pass.value",
    ),
]


@pytest.mark.parametrize(("body", "path"), STORED_FIELDS)
def test_secrets_are_refused_where_the_result_is_stored(body: str, path: str) -> None:
    errors = _diagnostics("name: w\n" + body + "\n")
    # (The workflow's `output` never had `secrets` in scope: "unknown name 'secrets'".)
    assert any(e.startswith(f"{path}: ") and "secrets" in e for e in errors), errors


MACHINE = """
name: m
mode: state_machine
initial: a
states:
  a:
    on:
      GO: {target: b, guard: "${{ secrets.tok == event.data.x }}", assign: {t: "${{ secrets.tok }}"}}
    invoke: {name: child, input: {t: "${{ secrets.tok }}"}}
  b: {final: true}
"""


def test_state_machine_fields_refuse_secrets_too() -> None:
    errors = _diagnostics(MACHINE)
    for path in (
        "states.a.on.GO[0].guard",
        "states.a.on.GO[0].assign.t",
        "states.a.invoke.input.t",
    ):
        assert any(e.startswith(f"{path}: secrets.* may be used only in") for e in errors), (
            path,
            errors,
        )


def test_verbatim_uses_in_args_and_prompts_pass_validation() -> None:
    spec = load_workflow(
        textwrap.dedent(
            """
            name: ok
            nodes:
              - id: a
                tool:
                  name: core.echo
                  args:
                    auth: "Bearer ${{ secrets.tok }}"
                    url: "${{ input.url + '?t=' + secrets['tok'] }}"
                    raw: "${{ secrets.tok }}"
              - {id: b, agent: {model: mock/echo, prompt: "use ${{ secrets.tok }}", system: "${{ secrets.tok }}"}}
            """
        )
    )
    compile_workflow(spec, tools=default_tools(), agents=default_agents())


def _encodings(secret: str) -> Iterator[tuple[str, str]]:
    yield "verbatim", secret
    yield "reversed", secret[::-1]
    yield "upper", secret.upper()
    yield "lower", secret.lower()
    yield "hex", secret.encode().hex()
    for shift in range(3):  # base64 of the secret at any alignment inside a longer text
        encoded = base64.b64encode(b"x" * shift + secret.encode()).decode()
        yield f"base64+{shift}", encoded[4 if shift else 0 : -4]
        yield (
            f"urlsafe+{shift}",
            base64.urlsafe_b64encode(b"x" * shift + secret.encode()).decode()[
                4 if shift else 0 : -4
            ],
        )
    for start in range(len(secret) - 8 + 1):  # any 8-character piece (split, substring)
        yield f"piece{start}", secret[start : start + 8]


def _hits(text: str) -> list[str]:
    return [name for name, needle in _encodings(CANARY) if needle in text]


async def test_a_canary_sent_in_args_and_prompts_reaches_no_stored_row_or_event() -> None:
    engine = Engine(
        MemoryStore(),
        tools=Registry(core_tools()),
        agents=default_agents({"mock": {"responses": {}}}),
        config=EngineConfig(secrets={"tok": CANARY}),
    )
    await engine.start()
    try:
        spec = load_workflow(
            textwrap.dedent(
                """
                name: canary
                nodes:
                  - id: a
                    tool: {name: core.echo, args: {auth: "Bearer ${{ secrets.tok }}", url: "${{ input.url + '?t=' + secrets.tok }}"}}
                  - {id: b, agent: {model: mock/echo, prompt: "say ${{ secrets.tok }}"}}
                  - {id: c, needs: [a, b], pass: {value: {a: "${{ nodes.a.output }}", b: "${{ nodes.b.output }}"}}}
                output: "${{ nodes.c.output }}"
                """
            )
        )
        await engine.create_workflow(spec)
        started = await engine.start_execution("canary", {"url": "https://x.test/p"})
        final = await engine.wait(started.id, timeout=20)
        nodes = await engine.get_nodes(started.id)
        events = await engine.list_events(started.id, limit=10_000)
    finally:
        await engine.stop(grace=0)
    assert final.state.name == "SUCCEEDED", final.error
    stored: dict[str, Any] = {
        "execution": repr(final),
        "nodes": repr(nodes),
        "events": repr(events),
    }
    assert {name: _hits(text) for name, text in stored.items()} == {name: [] for name in stored}
    assert "Bearer [REDACTED]" in repr(nodes)
