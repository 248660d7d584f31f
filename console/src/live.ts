// What the execution page knows about each node, built from GetExecution's nodes and kept
// current by the events WatchExecution streams (each applied once, in sequence order).
import type { Value } from "@bufbuild/protobuf/wkt";
import type { ExecutionError, ExecutionEvent, NodeExecution } from "./gen/agentrun/v1/execution_pb";
import { nodeState } from "./format";
import { baseNodeId } from "./graph/model";
import type { NodeStatus } from "./graph/GraphView";

export interface NodeView {
  id: string;
  state: string;
  attempt: number;
  input?: Value;
  output?: Value;
  error?: ExecutionError;
  skipReason?: string;
}

export interface LiveState {
  // By node id; map items under `ID[INDEX]`.
  nodes: Map<string, NodeView>;
  // The highest event sequence applied.
  sequence: bigint;
  executionState?: string;
}

export function fromNodes(nodes: NodeExecution[], sequence: bigint): LiveState {
  const map = new Map<string, NodeView>();
  for (const n of nodes) {
    map.set(n.nodeId, {
      id: n.nodeId,
      state: nodeState(n.state),
      attempt: n.attempt,
      input: n.input,
      output: n.output,
      error: n.error,
      skipReason: n.skipReason || undefined,
    });
  }
  return { nodes: map, sequence };
}

/** The state after one event; events at or below the applied sequence change nothing. */
export function applyEvent(live: LiveState, ev: ExecutionEvent): LiveState {
  if (ev.sequence <= live.sequence) return live;
  const next: LiveState = { ...live, sequence: ev.sequence };
  if (ev.type.startsWith("execution.")) {
    next.executionState = ev.type.slice("execution.".length);
    return next;
  }
  if (!ev.type.startsWith("node.") || !ev.nodeId) return next;
  const prev = live.nodes.get(ev.nodeId) ?? { id: ev.nodeId, state: "pending", attempt: 0 };
  const node: NodeView = { ...prev, state: ev.type.slice("node.".length) };
  const p = ev.payload;
  switch (p.case) {
    case "nodeStarted":
      node.attempt = p.value.attempt;
      node.input = p.value.input ?? node.input;
      node.error = undefined;
      break;
    case "nodeSucceeded":
      node.attempt = p.value.attempt || node.attempt;
      node.output = p.value.output;
      node.error = undefined;
      break;
    case "nodeFailed":
      node.attempt = p.value.attempt || node.attempt;
      node.error = p.value.error;
      break;
    case "nodeRetrying":
      node.attempt = p.value.attempt || node.attempt;
      node.error = p.value.error;
      break;
    case "nodeSkipped":
      node.skipReason = p.value.skipReason;
      node.output = p.value.output;
      break;
    case "nodeStateChanged":
      node.attempt = p.value.attempt || node.attempt;
      break;
  }
  next.nodes = new Map(live.nodes);
  next.nodes.set(ev.nodeId, node);
  return next;
}

/** The map items of a node (`ID[0]`, `ID[1]`, ...), by index. */
export function itemsOf(live: LiveState, nodeId: string): NodeView[] {
  const items: [number, NodeView][] = [];
  for (const [key, view] of live.nodes) {
    if (key.length > nodeId.length && key.startsWith(`${nodeId}[`) && baseNodeId(key) === nodeId) {
      items.push([Number.parseInt(key.slice(nodeId.length + 1), 10), view]);
    }
  }
  return items.sort((a, b) => a[0] - b[0]).map(([, v]) => v);
}

/**
 * The colour state and badge of each graph node: attempts after the first, map item counts.
 * Entries equal to `prev`'s are `prev`'s objects, so unchanged nodes are not redrawn.
 */
export function statuses(live: LiveState, prev?: ReadonlyMap<string, NodeStatus>): Map<string, NodeStatus> {
  const out = new Map<string, NodeStatus>();
  const items = new Map<string, { done: number; failed: number; total: number }>();
  for (const [key, view] of live.nodes) {
    const base = baseNodeId(key);
    if (base !== key) {
      const c = items.get(base) ?? { done: 0, failed: 0, total: 0 };
      c.total += 1;
      if (view.state === "succeeded" || view.state === "skipped") c.done += 1;
      if (view.state === "failed") c.failed += 1;
      items.set(base, c);
      continue;
    }
    out.set(key, { state: view.state, badge: view.attempt > 1 ? `attempt ${view.attempt}` : undefined });
  }
  for (const [base, c] of items) {
    const status = out.get(base) ?? { state: "running" };
    const text = `items ${c.done}/${c.total}${c.failed ? `, ${c.failed} failed` : ""}`;
    out.set(base, { ...status, badge: status.badge ? `${status.badge}, ${text}` : text });
  }
  if (prev) {
    for (const [key, status] of out) {
      const old = prev.get(key);
      if (old && old.state === status.state && old.badge === status.badge) out.set(key, old);
    }
  }
  return out;
}
