"""Property tests: random DAGs through the real engine, checked against FORMAT.md's rules.

Each example builds a random acyclic graph of `pass` nodes (and some `core.echo` tool nodes, which
run as real async tasks) with edges only from a lower to a higher index: `needs`, full-form edges
whose `when` is a constant, node `when`s, `join: all` and at times a `switch`. It runs the graph on
a fresh Engine over a MemoryStore and checks:

(a) ordering: a node starts only after every incoming edge is decided (each predecessor's
    succeeded/skipped event comes before the node's running or skipped event), and each node runs
    at most once (one `node.running` for a node that ran, none for a skipped one) and is decided once;
(b) dead-path elimination: node states (and skip reasons) equal an independent reference;
(c) event sequence numbers are 1..N, dense, in order;
(d) the execution ends SUCCEEDED, with `{ID: output}` of its sinks that succeeded as output.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from agentrun.engine import Engine, EngineConfig, load_workflow
from agentrun.engine.ports import CallContext, Effect, Tool
from agentrun.integrations import default_agents, default_tools
from agentrun.storage.memory import MemoryStore

TRUE, FALSE = "${{ true }}", "${{ false }}"


@dataclass(frozen=True)
class Edge:
    src: int
    dst: int
    # "needs": shorthand; "edge": full form under `edges`, with `when` (None: no when).
    form: str
    when: bool | None = None


@dataclass
class Graph:
    n: int
    edges: list[Edge]
    # Node index -> constant `when` (absent: no `when` field).
    node_when: dict[int, bool] = field(default_factory=dict)
    join_all: set[int] = field(default_factory=set)
    # The switch node, its cases (when, target) and its default target.
    switch: int | None = None
    cases: list[tuple[bool, int]] = field(default_factory=list)
    default: int | None = None
    # Nodes that call the `core.echo` tool (a real async task) instead of computing `pass` inline.
    echo: set[int] = field(default_factory=set)
    # A node that fails: `core.fail` (a tool call), or inline (a `pass` whose expression fails).
    fail: int | None = None
    fail_inline: bool = False

    def switch_targets(self) -> list[int]:
        targets = [t for _, t in self.cases]
        if self.default is not None:
            targets.append(self.default)
        return list(dict.fromkeys(targets))


def nid(i: int) -> str:
    return f"n{i}"


def to_document(g: Graph) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = []
    needs: dict[int, list[str]] = defaultdict(list)
    edges: list[dict[str, Any]] = []
    for e in g.edges:
        if e.form == "needs":
            needs[e.dst].append(nid(e.src))
        else:
            edge: dict[str, Any] = {"from": nid(e.src), "to": nid(e.dst)}
            if e.when is not None:
                edge["when"] = TRUE if e.when else FALSE
            edges.append(edge)
    for i in range(g.n):
        node: dict[str, Any] = {"id": nid(i)}
        if needs[i]:
            node["needs"] = needs[i]
        if i in g.node_when:
            node["when"] = TRUE if g.node_when[i] else FALSE
        if i in g.join_all:
            node["join"] = "all"
        if i == g.switch:
            sw: dict[str, Any] = {
                "cases": [{"when": TRUE if w else FALSE, "goto": nid(t)} for w, t in g.cases]
            }
            if g.default is not None:
                sw["default"] = nid(g.default)
            node["switch"] = sw
        elif i == g.fail and g.fail_inline:
            node["pass"] = {"value": "${{ input.missing }}"}
        elif i == g.fail:
            node["tool"] = {"name": "core.fail", "args": {"type": "boom", "message": "planned"}}
        elif i in g.echo:
            node["tool"] = {"name": "core.echo", "args": {"v": i}}
        else:
            node["pass"] = {"value": i}
        nodes.append(node)
    doc: dict[str, Any] = {"name": "prop", "nodes": nodes}
    if edges:
        doc["edges"] = edges
    return doc


# --------------------------------------------------------------------------------------------
# The reference: FORMAT.md's dead-path elimination as a pure function.


@dataclass(frozen=True)
class _In:
    src: int
    when: bool | None
    from_switch: bool


def reference(g: Graph) -> dict[int, tuple[str, str | None]]:
    """Node index -> (state, skip reason) by FORMAT.md, "DAG workflows" / "Edges":

    an edge is taken when its source succeeded and its `when` holds (a switch's implied edge only
    to the chosen target); a node with incoming edges is SKIPPED when none is taken (or, with
    `join: all`, when not all are), else its own `when` decides; a root is decided by its `when`.
    """
    incoming: dict[int, list[_In]] = defaultdict(list)
    for e in g.edges:
        incoming[e.dst].append(_In(e.src, e.when, False))
    if g.switch is not None:
        for t in g.switch_targets():
            incoming[t].append(_In(g.switch, None, True))
    result: dict[int, tuple[str, str | None]] = {}
    chosen: int | None = None
    for i in range(g.n):  # edges go from lower to higher index: a topological order
        edges = incoming[i]
        if edges:
            taken = [
                e
                for e in edges
                if result[e.src][0] == "SUCCEEDED"
                and e.when is not False
                and (not e.from_switch or chosen == i)
            ]
            if not taken:
                result[i] = ("SKIPPED", "dead_path")
                continue
            if i in g.join_all and len(taken) < len(edges):
                result[i] = ("SKIPPED", "join")
                continue
        if g.node_when.get(i) is False:
            result[i] = ("SKIPPED", "when")
            continue
        result[i] = ("SUCCEEDED", None)
        if i == g.switch:
            chosen = next((t for w, t in g.cases if w), g.default)
    return result


def predecessors(g: Graph) -> dict[int, set[int]]:
    preds: dict[int, set[int]] = defaultdict(set)
    for e in g.edges:
        preds[e.dst].add(e.src)
    if g.switch is not None:
        for t in g.switch_targets():
            preds[t].add(g.switch)
    return preds


# --------------------------------------------------------------------------------------------
# The strategy.


@st.composite
def graphs(draw: st.DrawFn) -> Graph:
    n = draw(st.integers(1, 25))
    edges: list[Edge] = []
    for dst in range(1, n):
        srcs = draw(st.sets(st.integers(0, dst - 1), max_size=min(dst, 4)))
        for src in sorted(srcs):
            form = draw(st.sampled_from(["needs", "needs", "edge", "edge_true", "edge_false"]))
            if form == "needs":
                edges.append(Edge(src, dst, "needs"))
            else:
                when = {"edge": None, "edge_true": True, "edge_false": False}[form]
                edges.append(Edge(src, dst, "edge", when))
            if draw(st.integers(0, 11)) == 0:
                # A second, parallel edge between the same two nodes (full form).
                edges.append(Edge(src, dst, "edge", draw(st.sampled_from([None, True, False]))))
    node_when: dict[int, bool] = {}
    join_all: set[int] = set()
    for i in range(n):
        w = draw(st.sampled_from([None, None, None, None, True, False]))
        if w is not None:
            node_when[i] = w
        if draw(st.integers(0, 3)) == 0:
            join_all.add(i)
    echo = draw(st.sets(st.integers(0, n - 1), max_size=n // 3))
    g = Graph(n, edges, node_when, join_all, echo=echo)
    if n >= 2 and draw(st.booleans()):
        s = draw(st.integers(0, n - 2))
        later = st.integers(s + 1, n - 1)
        g.switch = s
        g.cases = draw(st.lists(st.tuples(st.booleans(), later), max_size=3))
        g.default = draw(st.one_of(st.none(), later))
        if g.default is None and not any(w for w, _ in g.cases):
            # No case holds and no default would fail with no_choice_matched; keep (d) simple.
            g.default = draw(later)
        # Targets do not list the switch (FORMAT.md): drop plain edges from it to them.
        targets = set(g.switch_targets())
        g.edges = [e for e in g.edges if not (e.src == s and e.dst in targets)]
    return g


# --------------------------------------------------------------------------------------------
# Running one example on a fresh engine.


@dataclass
class Outcome:
    state: str
    output: Any
    error: Any
    last_sequence: int
    nodes: dict[str, Any]
    events: list[Any]


async def _run(document: dict[str, Any]) -> Outcome:
    engine = Engine(
        MemoryStore(), tools=default_tools(), agents=default_agents(), config=EngineConfig(seed=1)
    )
    await engine.start()
    try:
        spec = load_workflow(json.dumps(document))
        await engine.create_workflow(spec)
        ex = await engine.start_execution(spec.name, {})
        final = await engine.wait(ex.id, timeout=10)
        nodes = {n.node_id: n for n in await engine.get_nodes(ex.id)}
        events = await engine.list_events(ex.id, limit=100_000)
        return Outcome(
            final.state.value, final.output, final.error, final.last_sequence, nodes, events
        )
    finally:
        await engine.stop(grace=0)


def run_graph(g: Graph) -> Outcome:
    document = to_document(g)
    note(json.dumps(document))
    return asyncio.run(_run(document))


# --------------------------------------------------------------------------------------------
# The properties.

# Hand-picked shapes, run before the random ones.
DIAMOND_HALF_DEAD = Graph(
    4,
    [Edge(0, 1, "needs"), Edge(0, 2, "edge", False), Edge(1, 3, "needs"), Edge(2, 3, "needs")],
)
JOIN_ALL_PARTIAL = Graph(
    4,
    [Edge(0, 1, "needs"), Edge(0, 2, "needs"), Edge(1, 3, "needs"), Edge(2, 3, "needs")],
    node_when={2: False},
    join_all={3},
    echo={1},
)
SWITCH_DEFAULT = Graph(
    5,
    [Edge(0, 1, "needs"), Edge(2, 4, "needs"), Edge(3, 4, "needs"), Edge(1, 4, "edge", True)],
    switch=1,
    cases=[(False, 2)],
    default=3,
    echo={0, 3},
)
SKIP_FLOWS_ON = Graph(3, [Edge(0, 1, "needs"), Edge(1, 2, "edge", None)], node_when={0: False})
PARALLEL_EDGES_JOIN_ALL = Graph(
    3,
    [
        Edge(0, 1, "needs"),
        Edge(0, 1, "edge", False),
        Edge(0, 2, "edge", True),
        Edge(0, 2, "edge", None),
    ],
    join_all={1, 2},
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@example(DIAMOND_HALF_DEAD)
@example(JOIN_ALL_PARTIAL)
@example(SWITCH_DEFAULT)
@example(SKIP_FLOWS_ON)
@example(PARALLEL_EDGES_JOIN_ALL)
@given(graphs())
def test_random_dags_follow_format_semantics(g: Graph) -> None:
    out = run_graph(g)
    expected = reference(g)
    preds = predecessors(g)

    # (d) the execution ends SUCCEEDED.
    assert out.state == "SUCCEEDED", (out.state, out.events[-1])

    # (b) states and skip reasons equal the reference.
    actual = {
        i: (out.nodes[nid(i)].state.value, out.nodes[nid(i)].skip_reason)
        for i in range(g.n)
        if nid(i) in out.nodes
    }
    assert actual == expected
    assert set(out.nodes) == {nid(i) for i in range(g.n)}

    # (c) sequence numbers are 1..N, dense and increasing; the record agrees.
    sequences = [e.sequence for e in out.events]
    assert sequences == list(range(1, len(sequences) + 1))
    assert out.last_sequence == len(sequences)
    assert out.events[0].type == "execution.pending"
    assert out.events[-1].type == "execution.succeeded"

    # (a) each node is decided once, runs at most once, and only after its predecessors.
    running: dict[str, list[int]] = defaultdict(list)
    decided: dict[str, list[int]] = defaultdict(list)
    for e in out.events:
        if e.type == "node.running":
            running[e.node_id].append(e.sequence)
        elif e.type in ("node.succeeded", "node.skipped", "node.failed", "node.cancelled"):
            decided[e.node_id].append(e.sequence)
    for i in range(g.n):
        node = nid(i)
        assert len(decided[node]) == 1, (node, decided[node])
        state, _ = expected[i]
        if state == "SUCCEEDED":
            assert len(running[node]) == 1, (node, running[node])
            start = running[node][0]
            assert start < decided[node][0]
        else:
            assert running[node] == [], node  # a skipped node never starts
            start = decided[node][0]
        for p in preds[i]:
            # FORMAT.md: a node runs (or is skipped) once every incoming edge is decided.
            assert decided[nid(p)][0] < start, (nid(p), node)

    # (d) without `output`, the result is {ID: output} of the sinks that succeeded.
    sinks = set(range(g.n)) - {p for ps in preds.values() for p in ps}
    want = {nid(i): output_of(g, i) for i in sorted(sinks) if expected[i][0] == "SUCCEEDED"}
    assert out.output == want


def output_of(g: Graph, i: int) -> Any:
    if i == g.switch:
        return nid(next((t for w, t in g.cases if w), g.default))
    return {"v": i} if i in g.echo else i


def test_reference_on_hand_picked_shapes() -> None:
    """The reference itself, on shapes worked out by hand from FORMAT.md (so a property failure
    points at the engine, not at a reference that agrees with anything)."""
    S, K = "SUCCEEDED", "SKIPPED"
    assert reference(DIAMOND_HALF_DEAD) == {
        0: (S, None),
        1: (S, None),
        2: (K, "dead_path"),
        3: (S, None),
    }
    assert reference(JOIN_ALL_PARTIAL) == {
        0: (S, None),
        1: (S, None),
        2: (K, "when"),
        3: (K, "join"),
    }
    assert reference(SWITCH_DEFAULT) == {
        0: (S, None),
        1: (S, None),
        2: (K, "dead_path"),
        3: (S, None),
        4: (S, None),
    }
    assert reference(SKIP_FLOWS_ON) == {0: (K, "when"), 1: (K, "dead_path"), 2: (K, "dead_path")}
    assert reference(PARALLEL_EDGES_JOIN_ALL) == {0: (S, None), 1: (K, "join"), 2: (S, None)}


# --------------------------------------------------------------------------------------------
# A node that fails (no retry, no handler) fails the execution: "nothing new is scheduled, running
# nodes are cancelled, and the execution ends FAILED" (FORMAT.md, "Errors, retries, fallbacks").


@st.composite
def failing_graphs(draw: st.DrawFn) -> Graph:
    g = draw(graphs())
    g.fail = draw(st.sampled_from([i for i in range(g.n) if i != g.switch]))
    g.echo.discard(g.fail)
    # Only the tool variant is drawn: an inline failure trips the engine bug that
    # test_inline_failure_cancels_a_tool_started_in_the_same_turn pins down (set fail_inline
    # here once it is fixed).
    return g


def descendants(g: Graph, root: int) -> set[int]:
    succ: dict[int, set[int]] = defaultdict(set)
    for dst, srcs in predecessors(g).items():
        for src in srcs:
            succ[src].add(dst)
    out: set[int] = set()
    stack = [root]
    while stack:
        for t in succ[stack.pop()]:
            if t not in out:
                out.add(t)
                stack.append(t)
    return out


DECIDED = {"SUCCEEDED", "SKIPPED", "FAILED", "CANCELLED"}


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@example(Graph(3, [Edge(0, 1, "needs"), Edge(1, 2, "needs")], fail=1, echo={0}))
@example(Graph(3, [Edge(0, 2, "needs"), Edge(1, 2, "needs")], fail=0, echo={1}))
@given(failing_graphs())
def test_a_failing_node_fails_the_execution_and_nothing_new_starts(g: Graph) -> None:
    assert g.fail is not None
    out = run_graph(g)
    expected = reference(g)
    fail = nid(g.fail)
    sequences = [e.sequence for e in out.events]
    assert sequences == list(range(1, len(sequences) + 1))

    if expected[g.fail][0] == "SKIPPED":
        # The failing node is never reached: the run is as if it were not there.
        assert out.state == "SUCCEEDED"
        assert {
            i: (out.nodes[nid(i)].state.value, out.nodes[nid(i)].skip_reason) for i in range(g.n)
        } == expected
        return

    assert out.state == "FAILED", out.state
    assert out.error["node"] == fail
    assert out.error["type"] == ("expression_error" if g.fail_inline else "boom")
    assert out.events[-1].type == "execution.failed"
    failed_at = next(e.sequence for e in out.events if e.type == "node.failed")
    assert [e.node_id for e in out.events if e.type == "node.failed"] == [fail]
    after = [e for e in out.events if e.sequence > failed_at]
    assert {e.type for e in after} <= {"node.cancelled", "execution.failed"}, after

    # Nothing is left running or ready; what was decided agrees with the reference.
    for node_id, rec in out.nodes.items():
        assert rec.state.value in DECIDED, (node_id, rec.state)
    for i in range(g.n):
        rec = out.nodes.get(nid(i))
        if rec is not None and rec.state.value in ("SUCCEEDED", "SKIPPED"):
            assert (rec.state.value, rec.skip_reason) == expected[i], nid(i)
    # The failing node's descendants were never reached.
    for d in descendants(g, g.fail):
        assert nid(d) not in out.nodes, nid(d)

    # Ordering holds for whatever ran.
    preds = predecessors(g)
    first: dict[tuple[str, str], int] = {}
    for e in out.events:
        first.setdefault((e.type, e.node_id), e.sequence)
    for i in range(g.n):
        start = first.get(("node.running", nid(i)))
        if start is None:
            continue
        for p in preds[i]:
            done = first.get(("node.succeeded", nid(p))) or first.get(("node.skipped", nid(p)))
            assert done is not None and done < start, (nid(p), nid(i))


# --------------------------------------------------------------------------------------------
# Engine bug: a node started in the same turn as an inline node that fails is launched anyway.


class Recorder(Tool):
    name = "test.record"
    effect = Effect.IRREVERSIBLE

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def call(self, args: Any, ctx: CallContext) -> Any:
        self.calls.append(ctx.node_id)
        return {}


RECORDER = Recorder()


@pytest.fixture
def extra_tools() -> list[Any]:
    RECORDER.calls.clear()
    return [RECORDER]


@pytest.mark.parametrize(
    "failing",
    [
        '{id: p, pass: {value: "${{ input.missing }}"}}',  # expression_error
        "{id: p, switch: {cases: [{when: 'false', goto: q}]}}",  # no_choice_matched
    ],
)
async def test_inline_failure_cancels_a_tool_started_in_the_same_turn(
    harness: Any, failing: str
) -> None:
    final, nodes = await harness.run(
        f"""
        name: late-launch
        nodes:
          - {{id: t, tool: {{name: test.record}}}}
          - {failing}
          - {{id: q, pass: {{value: 1}}}}
        """,
        {},
    )
    assert final.state.value == "FAILED"
    assert final.error["node"] == "p"
    await asyncio.sleep(0.1)  # a launched call would have run by now
    assert RECORDER.calls == []  # nothing is called once the execution has ended
    nodes = {n.node_id: n for n in await harness.engine.get_nodes(final.id)}
    assert nodes["t"].state.value == "CANCELLED"
