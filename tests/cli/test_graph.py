"""`agentrun graph`: the Mermaid flowchart of a workflow."""

from __future__ import annotations

from agentrun.cli.graph import to_mermaid
from agentrun.engine import load_workflow

SMALL = """
name: small
nodes:
  - id: fetch
    tool: {name: core.echo, args: {n: 3}}
  - id: route
    needs: [fetch]
    switch:
      cases: [{when: "${{ nodes.fetch.output.n > 2 }}", goto: big}]
      default: small
  - id: big
    agent: {model: mock/echo, prompt: big}
  - id: small
    pass: {value: small}
  - id: join
    needs: [big, small]
    aggregate: {strategy: first}
  - id: approve
    wait: {signal: approval}
  - id: each
    map: {items: "${{ nodes.join.output }}", node: {tool: {name: core.echo}}}
edges:
  - {from: join, to: approve, when: "${{ output != \\"\\" }}"}
  - {from: approve, to: each}
"""

EXPECTED = """\
flowchart TD
    fetch["fetch: tool core.echo"]
    route{"route: switch"}
    big["big: agent mock/echo"]
    small["small: pass"]
    join[/"join: aggregate first"\\]
    approve(["approve: wait signal approval"])
    each[["each: map tool core.echo"]]
    fetch --> route
    big --> join
    small --> join
    join -->|"output != #quot;#quot;"| approve
    approve --> each
    route -->|"nodes.fetch.output.n #gt; 2"| big
    route -->|"default"| small
"""


def test_small_dag_exact() -> None:
    assert to_mermaid(load_workflow(SMALL, filename="small.yaml")) == EXPECTED


def test_reserved_word_ids_are_renamed_in_the_chart() -> None:
    spec = load_workflow(
        "name: r\nnodes:\n  - {id: start, pass: {value: 1}}\n"
        "  - {id: end, needs: [start], pass: {value: 2}}\n"
    )
    assert to_mermaid(spec) == (
        'flowchart TD\n    start["start: pass"]\n    end_["end: pass"]\n    start --> end_\n'
    )


def test_long_conditions_are_shortened() -> None:
    condition = " && ".join(["input.flag"] * 20)
    spec = load_workflow(
        "name: l\nnodes:\n  - {id: a, pass: {value: 1}}\n  - {id: b, pass: {value: 2}}\n"
        f'edges:\n  - {{from: a, to: b, when: "${{{{ {condition} }}}}"}}\n'
    )
    arrow = to_mermaid(spec).splitlines()[-1]
    assert arrow.startswith('    a -->|"input.flag && ')
    assert arrow.endswith('…"| b')


def test_graph_command(cli, write) -> None:
    path = write("small.yaml", SMALL)
    result = cli("graph", path)
    assert result.code == 0
    assert result.out == EXPECTED


def test_graph_command_bad_file(cli, write) -> None:
    result = cli("graph", write("bad.yaml", "name: bad\nnodes: [{id: a, bogus: 1}]\n"))
    assert result.code == 2
    assert result.out == ""
    assert "nodes[0]" in result.err
    assert "Traceback" not in result.err


def test_graph_command_missing_file(cli) -> None:
    result = cli("graph", "nope.yaml")
    assert result.code == 2
    assert result.err == "agentrun: nope.yaml: no such file\n"


MACHINE = """
name: door
mode: state_machine
initial: closed
states:
  closed:
    on:
      OPEN: {target: open}
    after: {90m: {target: locked}}
  open:
    on:
      CLOSE:
        - {guard: "${{ event.data.force }}", target: closed}
        - {target: open}
  locked: {final: true}
"""


def test_state_machine() -> None:
    assert to_mermaid(load_workflow(MACHINE)) == (
        "flowchart TD\n"
        "    start__((start))\n"
        '    s_closed(["closed"])\n'
        '    s_locked(("locked"))\n'
        '    s_open(["open"])\n'
        "    start__ --> s_closed\n"
        '    s_closed -->|"OPEN"| s_open\n'
        '    s_closed -->|"after 1h30m"| s_locked\n'
        '    s_open -->|"CLOSE [event.data.force]"| s_closed\n'
        '    s_open -->|"CLOSE"| s_open\n'
    )


def test_wait_durations_read_as_written() -> None:
    spec = load_workflow("name: w\nnodes:\n  - {id: pause, wait: {duration: 1500ms}}\n")
    assert '    pause(["pause: wait 1.5s"])' in to_mermaid(spec).splitlines()
