"""Every node of an execution's workflow, reached or not: what GetExecution (`include_nodes`)
and `agentrun run --json` show.

The store holds a node's record only once the node was reached (made ready, run, skipped);
a reader asking "where is this execution" wants the whole workflow, with the nodes never
reached as PENDING, in the workflow's order. This is the one place that builds that list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agentrun.storage.records import NodeRecord, NodeState

__all__ = ["every_node", "spec_node_ids"]

_ITEM = re.compile(r"^(?P<node>.+)\[(?P<index>\d+)\]\Z")


def spec_node_ids(spec: Mapping[str, Any]) -> list[str]:
    """The node ids of a stored workflow spec (its protobuf JSON form), in the file's order."""
    return [str(node["id"]) for node in spec.get("nodes") or () if node.get("id")]


def every_node(
    execution_id: str, node_ids: Sequence[str], stored: Iterable[NodeRecord]
) -> list[NodeRecord]:
    """The stored records plus a PENDING record for each workflow node without one.

    Order: the workflow's nodes in `node_ids` order, each followed by its map items (`ID[i]`,
    by index); records of ids the workflow does not name (an older version's) come last.
    """
    by_id = {record.node_id: record for record in stored}
    items: dict[str, list[tuple[int, NodeRecord]]] = {}
    rest: list[NodeRecord] = []
    known = set(node_ids)
    for record in by_id.values():
        match = _ITEM.match(record.node_id)
        if match and match["node"] in known:
            items.setdefault(match["node"], []).append((int(match["index"]), record))
        elif record.node_id not in known:
            rest.append(record)
    result: list[NodeRecord] = []
    for node_id in node_ids:
        result.append(by_id.get(node_id) or NodeRecord(execution_id, node_id, NodeState.PENDING))
        result.extend(record for _, record in sorted(items.get(node_id, ()), key=_index))
    return result + rest


def _index(pair: tuple[int, NodeRecord]) -> int:
    return pair[0]
