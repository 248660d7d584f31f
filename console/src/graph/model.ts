// The graph a workflow definition describes, before layout: DAG nodes and their edges
// (`needs`, full-form `edges`, switch cases), or a state machine's states and transitions.
import type { WorkflowSpec, Node } from "../gen/agentrun/v1/workflow_pb";
import { WorkflowSpec_Mode } from "../gen/agentrun/v1/workflow_pb";

export interface GraphNode {
  id: string;
  // `tool`, `agent`, `map`, ... for DAG nodes; `state` / `final` for machines.
  kind: string;
  // A short description: the tool or model called, the signal waited for.
  detail: string;
}

export interface GraphEdge {
  from: string;
  to: string;
  // A condition or an event name; empty for an unconditional dependency.
  label: string;
}

export interface Graph {
  nodes: GraphNode[];
  edges: GraphEdge[];
}

/** The node's kind as the workflow format spells it (`switch`, not the proto's `switchNode`). */
function kindName(node: Node): string {
  return (node.kind.case ?? "node").replace(/Node$/, "");
}

function nodeDetail(node: Node): string {
  const k = node.kind;
  switch (k.case) {
    case "tool":
      return k.value.name;
    case "agent":
      return k.value.model;
    case "map": {
      const body = k.value.node?.kind;
      const target = body?.case === "tool" ? body.value.name : body?.case === "agent" ? body.value.model : "";
      return target ? `each: ${target}` : k.value.workflow ? `each: ${k.value.workflow.name}` : "";
    }
    case "wait":
      return k.value.signal ? `signal ${k.value.signal}` : k.value.until ? "until" : "timer";
    case "workflow":
      return k.value.name;
    case "aggregate":
      return "";
    default:
      return "";
  }
}

/** `${{ output.ok }}` -> `output.ok`: an edge label. */
function expression(text: string): string {
  return text.replace(/^\$\{\{\s*|\s*\}\}$/g, "");
}

export function dagGraph(spec: WorkflowSpec): Graph {
  const nodes = spec.nodes.map((n) => ({ id: n.id, kind: kindName(n), detail: nodeDetail(n) }));
  const known = new Set(nodes.map((n) => n.id));
  const edges: GraphEdge[] = [];
  const seen = new Set<string>();
  const add = (from: string, to: string, label: string): void => {
    const key = `${from}\u0000${to}\u0000${label}`;
    if (seen.has(key) || !known.has(from) || !known.has(to)) return;
    seen.add(key);
    edges.push({ from, to, label });
  };
  for (const n of spec.nodes) {
    for (const need of n.needs) add(need, n.id, "");
    if (n.kind.case === "switchNode") {
      for (const c of n.kind.value.cases) add(n.id, c.target, expression(c.when));
      if (n.kind.value.defaultTarget) add(n.id, n.kind.value.defaultTarget, "default");
    }
  }
  for (const e of spec.edges) add(e.fromNode, e.to, expression(e.when));
  return { nodes, edges };
}

export function machineGraph(spec: WorkflowSpec): Graph {
  const names = Object.keys(spec.states).sort();
  const nodes: GraphNode[] = names.map((name) => {
    const s = spec.states[name];
    const detail = [name === spec.initial ? "initial" : "", s.invoke ? `invokes ${s.invoke.name}` : ""]
      .filter(Boolean)
      .join(" · ");
    return { id: name, kind: s.isFinal ? "final" : "state", detail };
  });
  const edges: GraphEdge[] = [];
  for (const name of names) {
    const s = spec.states[name];
    for (const event of Object.keys(s.on).sort()) {
      for (const t of s.on[event].transitions) {
        edges.push({ from: name, to: t.target || name, label: t.guard ? `${event} [guard]` : event });
      }
    }
    for (const a of s.after) {
      const delay = a.delay ? `${Number(a.delay.seconds)}s` : "";
      edges.push({ from: name, to: a.target || name, label: `after ${delay}` });
    }
    if (s.onDone?.target) edges.push({ from: name, to: s.onDone.target, label: "invoke:done" });
    if (s.onError?.target) edges.push({ from: name, to: s.onError.target, label: "invoke:error" });
  }
  return { nodes, edges: edges.filter((e) => spec.states[e.to] !== undefined) };
}

export function specGraph(spec: WorkflowSpec): Graph {
  return spec.mode === WorkflowSpec_Mode.STATE_MACHINE ? machineGraph(spec) : dagGraph(spec);
}

/** `fetch[3]` -> `fetch`; the map node a map item belongs to. */
export function baseNodeId(nodeId: string): string {
  const bracket = nodeId.indexOf("[");
  return bracket < 0 ? nodeId : nodeId.slice(0, bracket);
}
