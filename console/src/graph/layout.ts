// Layout with elkjs's layered algorithm, run in a web worker so a 1,000-node graph does not
// freeze the page. Large graphs get ELK's cheaper strategies (one crossing-minimisation sweep,
// simple node placement, polyline edges); small ones the thorough defaults.
import ElkApi, { type ELK, type ElkExtendedEdge, type ElkNode } from "elkjs/lib/elk-api";
import workerUrl from "elkjs/lib/elk-worker.min.js?url";
import type { Graph } from "./model";
import { previewLayout } from "./preview";

export interface PlacedNode {
  id: string;
  kind: string;
  detail: string;
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface PlacedEdge {
  from: string;
  to: string;
  label: string;
  points: { x: number; y: number }[];
}

export interface Layout {
  nodes: PlacedNode[];
  edges: PlacedEdge[];
  width: number;
  height: number;
  // A preview placement shown while ELK works (preview.ts), not ELK's layout.
  preview?: boolean;
}

export const NODE_WIDTH = 172;
export const NODE_HEIGHT = 46;
// From this many nodes on, layout trades some crossings for speed.
export const LARGE_GRAPH = 150;

export function layoutOptions(nodeCount: number): Record<string, string> {
  const base: Record<string, string> = {
    "elk.algorithm": "layered",
    "elk.direction": "DOWN",
    "elk.spacing.nodeNode": "24",
    "elk.layered.spacing.nodeNodeBetweenLayers": "44",
    "elk.spacing.edgeNode": "12",
  };
  if (nodeCount < LARGE_GRAPH) {
    return { ...base, "elk.edgeRouting": "ORTHOGONAL", "elk.layered.nodePlacement.strategy": "BRANDES_KOEPF" };
  }
  return {
    ...base,
    "elk.edgeRouting": "POLYLINE",
    "elk.layered.thoroughness": "1",
    "elk.layered.nodePlacement.strategy": "SIMPLE",
    "elk.layered.crossingMinimization.strategy": "LAYER_SWEEP",
    "elk.layered.compaction.postCompaction.strategy": "NONE",
    "elk.separateConnectedComponents": "false",
  };
}

function elkGraph(graph: Graph): ElkNode {
  return {
    id: "root",
    layoutOptions: layoutOptions(graph.nodes.length),
    children: graph.nodes.map((n) => ({ id: n.id, width: NODE_WIDTH, height: NODE_HEIGHT })),
    edges: graph.edges.map((e, i) => ({ id: `e${i}`, sources: [e.from], targets: [e.to] })),
  };
}

export async function layoutWith(elk: ELK, graph: Graph): Promise<Layout> {
  const out = await elk.layout(elkGraph(graph));
  const byId = new Map((out.children ?? []).map((c) => [c.id, c]));
  const nodes = graph.nodes.map((n) => {
    const c = byId.get(n.id);
    return { ...n, x: c?.x ?? 0, y: c?.y ?? 0, width: c?.width ?? NODE_WIDTH, height: c?.height ?? NODE_HEIGHT };
  });
  const edges = ((out.edges ?? []) as ElkExtendedEdge[]).map((e, i) => {
    const points = (e.sections ?? []).flatMap((s) => [s.startPoint, ...(s.bendPoints ?? []), s.endPoint]);
    return { ...graph.edges[i], points };
  });
  return { nodes, edges, width: out.width ?? 0, height: out.height ?? 0 };
}

/** Resolves once the next frame has been painted. */
export function afterPaint(): Promise<void> {
  return new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve)));
}

let shared: ELK | undefined;

/** One ELK per page; its worker starts on the first call, which pages make early (warm-up). */
export function elk(): ELK {
  shared ??= new ElkApi({ workerUrl });
  return shared;
}

export function layout(graph: Graph): Promise<Layout> {
  return layoutWith(elk(), graph);
}

// ELK's layouts by workflow version (versions never change), for this browser session.
const CACHE = "agentrun.console.layout:";
const memory = new Map<string, Layout>();

function cached(key: string, graph: Graph): Layout | undefined {
  const hit = memory.get(key);
  if (hit) return hit;
  try {
    const text = sessionStorage.getItem(CACHE + key);
    const parsed = text ? (JSON.parse(text) as Layout) : undefined;
    // A stored layout of other nodes (the console changed how it builds graphs) is ignored.
    if (parsed && parsed.nodes.length === graph.nodes.length && parsed.nodes.every((n, i) => n.id === graph.nodes[i].id)) {
      memory.set(key, parsed);
      return parsed;
    }
  } catch {
    // Unreadable entry: lay out again.
  }
  return undefined;
}

function remember(key: string, laid: Layout): void {
  memory.set(key, laid);
  try {
    sessionStorage.setItem(CACHE + key, JSON.stringify(laid));
  } catch {
    // Over the storage quota: the in-memory copy still serves this page.
  }
}

/**
 * Shows the graph as soon as possible: ELK's layout from the session cache, else (for a
 * large graph) a preview, then ELK's layout when the worker returns it.
 * `key` names the immutable definition, such as `workflows/order@3`.
 */
export async function layoutInto(key: string, graph: Graph, show: (l: Layout) => void): Promise<void> {
  const hit = cached(key, graph);
  if (hit) return show(hit);
  if (graph.nodes.length >= LARGE_GRAPH) {
    show(previewLayout(graph, NODE_WIDTH, NODE_HEIGHT));
    // Let the preview paint before ELK's worker competes for the CPU.
    await afterPaint();
  }
  const laid = await layout(graph);
  remember(key, laid);
  show(laid);
}
