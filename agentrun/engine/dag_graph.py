"""The DAG as the compiler sees it before its nodes are built: drafts with their edges, the run
order and its parallel stages (Kahn), the cycles that prevent one (Tarjan), and ancestry.

Edges are linked to drafts while the compiler reads `needs`, `edges` and switch targets; each
frozen `NodePlan` is built afterwards from its draft with its edges complete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentrun.engine.plan import EdgePlan

__all__ = ["Ancestry", "Draft", "link", "run_order"]


@dataclass(slots=True, eq=False)
class Draft:
    """A node while edges are linked to it (never part of a plan)."""

    id: str
    index: int
    # The file word of its kind (`pass`), None when it names none (reported).
    kind: str | None
    path: str
    # The node's stored form (`spec_to_dict`), and its message (None when `compile_node`
    # reads none); `bare`: it sets no field but its id, needs and kind.
    doc: dict[str, Any]
    msg: Any = None
    bare: bool = False
    incoming: list[EdgePlan] = field(default_factory=list)
    outgoing: list[EdgePlan] = field(default_factory=list)


def link(nodes: dict[str, Draft], edge: EdgePlan) -> None:
    nodes[edge.source].outgoing.append(edge)
    nodes[edge.target].incoming.append(edge)


def run_order(
    nodes: dict[str, Draft], error: Callable[[str, str], None]
) -> tuple[list[str] | None, list[list[str]] | None]:
    """Kahn's algorithm: a run order and the stages (nodes that can run at once, in order); on a
    cycle, reports the nodes on it and what they block through `error` and returns Nones."""
    indegree = {nid: len(p.incoming) for nid, p in nodes.items()}
    level = dict.fromkeys(nodes, 0)
    # The queue is `order` itself, read from the front while it grows. A node's level is final
    # when it joins the queue (after all its sources), so it joins its stage then too.
    order = [nid for nid, d in indegree.items() if not d]
    stages: list[list[str]] = [list(order)] if order else []
    for nid in order:
        below = level[nid] + 1
        for edge in nodes[nid].outgoing:
            t = edge.target
            if level[t] < below:  # noqa: PLR1730 (max() is a call per edge)
                level[t] = below
            left = indegree[t] - 1
            indegree[t] = left
            if not left:
                order.append(t)
                lv = level[t]  # at most len(stages): a source of it is at lv - 1
                if lv == len(stages):
                    stages.append([t])
                else:
                    stages[lv].append(t)
    if len(order) == len(nodes):
        return order, stages
    remaining = {nid for nid, d in indegree.items() if d > 0}
    cycles = _cycles(nodes, remaining)
    for cycle in cycles:
        error(nodes[cycle[0]].path, "cycle: " + " -> ".join(cycle + [cycle[0]]))
    on_cycles = {nid for c in cycles for nid in c}
    for nid in sorted(remaining - on_cycles, key=lambda x: nodes[x].index):
        error(nodes[nid].path, f"node {nid!r} is unreachable from any root (it follows a cycle)")
    return None, None


class Ancestry:
    """Ancestor sets as bitmasks, built on first use (most workflows never need them)."""

    def __init__(self, nodes: dict[str, Draft], order: list[str]) -> None:
        self.nodes = nodes
        self._order = order
        self._masks: dict[str, int] | None = None
        self._bit: dict[str, int] = {}

    def is_ancestor(self, a: str, b: str) -> bool:
        if self._masks is None:
            self._bit = {nid: i for i, nid in enumerate(self._order)}
            masks: dict[str, int] = {}
            for nid in self._order:
                m = 0
                for edge in self.nodes[nid].incoming:
                    m |= masks[edge.source] | (1 << self._bit[edge.source])
                masks[nid] = m
            self._masks = masks
        return bool(self._masks[b] >> self._bit[a] & 1)


def _cycles(nodes: dict[str, Draft], remaining: set[str]) -> list[list[str]]:
    """Strongly connected components (Tarjan, iterative) of the nodes left by Kahn."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(remaining, key=lambda x: nodes[x].index):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            succ = [e.target for e in nodes[v].outgoing if e.target in remaining]
            if i < len(succ):
                work.append((v, i + 1))
                w = succ[i]
                if w not in index:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp, key=lambda x: nodes[x].index))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return out
