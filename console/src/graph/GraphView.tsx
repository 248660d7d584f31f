// The laid-out graph as SVG: nodes coloured by state (CSS classes `state-*`), a badge for
// attempts and map items, pan by dragging, zoom with the wheel, and a click to select a node.
// Each node is a memoised component, so a live update redraws only the nodes that changed.
import { memo } from "preact/compat";
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import type { Layout, PlacedEdge, PlacedNode } from "./layout";

export interface NodeStatus {
  state: string;
  // A short line under the label: `attempt 3`, `items 7/10`.
  badge?: string;
}

interface Props {
  layout: Layout;
  status?: ReadonlyMap<string, NodeStatus>;
  selected?: string;
  onSelect?: (id: string) => void;
  // The node to bring into view when the graph first renders (a waiting or failed one).
  focus?: string;
}

interface View {
  x: number;
  y: number;
  scale: number;
}

// Below this zoom, labels are unreadable: nodes are drawn as coloured boxes only.
const LABEL_SCALE = 0.35;
// Graphs with more nodes than this open zoomed in rather than fitted.
const LARGE_VIEW = 60;
const READABLE = 0.8;
// Drawn beyond the visible area, in screen pixels, so a small pan shows no gap.
const MARGIN = 300;

const NodeBox = memo(function NodeBox(props: {
  node: PlacedNode;
  status?: NodeStatus;
  selected: boolean;
  labels: boolean;
}) {
  const { node, status, selected, labels } = props;
  const state = status?.state ?? "none";
  const sub = [node.kind, node.detail, status?.badge].filter(Boolean).join(" · ");
  return (
    <g
      class={`node state-${state}${selected ? " selected" : ""}`}
      transform={`translate(${node.x},${node.y})`}
      data-node-id={node.id}
      data-state={state}
    >
      <rect width={node.width} height={node.height} rx={6} />
      {labels ? (
        <>
          <text x={10} y={19} class="label">
            {node.id.length > 22 ? `${node.id.slice(0, 21)}…` : node.id}
          </text>
          <text x={10} y={36} class="sub">
            {sub.length > 30 ? `${sub.slice(0, 29)}…` : sub}
          </text>
        </>
      ) : null}
    </g>
  );
});

/** All edges as one path of lines and one of arrowheads: two elements for any graph. */
function edgePaths(edges: PlacedEdge[]): { lines: string; heads: string } {
  const lines: string[] = [];
  const heads: string[] = [];
  for (const e of edges) {
    if (e.points.length < 2) continue;
    lines.push(e.points.map((p, i) => `${i ? "L" : "M"}${p.x},${p.y}`).join(""));
    const a = e.points[e.points.length - 2];
    const b = e.points[e.points.length - 1];
    const len = Math.hypot(b.x - a.x, b.y - a.y) || 1;
    const ux = (b.x - a.x) / len;
    const uy = (b.y - a.y) / len;
    const bx = b.x - ux * 7;
    const by = b.y - uy * 7;
    heads.push(`M${b.x},${b.y}L${bx - uy * 3.5},${by + ux * 3.5}L${bx + uy * 3.5},${by - ux * 3.5}Z`);
  }
  return { lines: lines.join(""), heads: heads.join("") };
}

const Edges = memo(function Edges(props: { edges: PlacedEdge[]; labels: boolean }) {
  const { lines, heads } = edgePaths(props.edges);
  return (
    <g class="edges">
      <path d={lines} />
      <path d={heads} class="heads" />
      {props.labels
        ? props.edges.map((e) => {
            const mid = e.points[Math.floor(e.points.length / 2)];
            return e.label && mid ? (
              <text x={mid.x + 4} y={mid.y - 4} class="edge-label">
                {e.label.length > 28 ? `${e.label.slice(0, 27)}…` : e.label}
              </text>
            ) : null;
          })
        : null}
    </g>
  );
});

/** A small graph's box fits it; a large one gets a fixed viewport to pan in. */
function graphHeight(layout: Layout): number {
  return layout.nodes.length > LARGE_VIEW ? 560 : Math.max(260, Math.min(560, layout.height + 70));
}

interface Box {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

function edgeBox(e: PlacedEdge): Box {
  const xs = e.points.map((p) => p.x);
  const ys = e.points.map((p) => p.y);
  return { x0: Math.min(...xs), y0: Math.min(...ys), x1: Math.max(...xs), y1: Math.max(...ys) };
}

const overlaps = (a: Box, b: Box): boolean => a.x0 <= b.x1 && b.x0 <= a.x1 && a.y0 <= b.y1 && b.y0 <= a.y1;

export function GraphView({ layout, status, selected, onSelect, focus }: Props) {
  const box = useRef<HTMLDivElement>(null);
  const [view, setView] = useState<View>({ x: 0, y: 0, scale: 1 });
  const drag = useRef<{ x: number; y: number; vx: number; vy: number; moved: boolean } | null>(null);

  const fit = (): void => {
    const el = box.current;
    if (!el) return;
    const w = el.clientWidth || 800;
    const h = el.clientHeight || 500;
    const scale = Math.min(1, (w - 20) / (layout.width || 1), (h - 20) / (layout.height || 1));
    const s = Math.max(scale, 0.05);
    setView({ x: (w - layout.width * s) / 2, y: 10, scale: s });
  };

  useLayoutEffect(() => {
    const el = box.current;
    if (el && layout.nodes.length > LARGE_VIEW) {
      // A large graph opens at a readable scale, centred on the node that needs attention,
      // else at the top (its sources); "fit" shows all of it.
      const w = el.clientWidth || 800;
      const h = el.clientHeight || 500;
      const target = layout.nodes.find((n) => n.id === focus);
      const cx = target ? target.x + target.width / 2 : layout.width / 2;
      const cy = target ? target.y + target.height / 2 : h / 2 / READABLE - 10;
      setView({ x: w / 2 - cx * READABLE, y: h / 2 - cy * READABLE, scale: READABLE });
    } else fit();
    // Read by benchmarks/console.py: the first graph on screen, and the final (ELK) layout,
    // each marked once the frame that shows it has been painted.
    const final = !layout.preview;
    requestAnimationFrame(() =>
      setTimeout(() => {
        if (!performance.getEntriesByName("agentrun:graph-rendered").length) performance.mark("agentrun:graph-rendered");
        if (final && !performance.getEntriesByName("agentrun:layout-done").length) performance.mark("agentrun:layout-done");
      }),
    );
  }, [layout]);

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const wheel = (ev: WheelEvent): void => {
      ev.preventDefault();
      const rect = el.getBoundingClientRect();
      const px = ev.clientX - rect.left;
      const py = ev.clientY - rect.top;
      setView((v) => {
        const scale = Math.min(4, Math.max(0.03, v.scale * Math.exp(-ev.deltaY * 0.0015)));
        return { scale, x: px - ((px - v.x) * scale) / v.scale, y: py - ((py - v.y) * scale) / v.scale };
      });
    };
    el.addEventListener("wheel", wheel, { passive: false });
    return () => el.removeEventListener("wheel", wheel);
  }, []);

  const down = (ev: PointerEvent): void => {
    drag.current = { x: ev.clientX, y: ev.clientY, vx: view.x, vy: view.y, moved: false };
  };
  const move = (ev: PointerEvent): void => {
    const d = drag.current;
    if (!d) return;
    const dx = ev.clientX - d.x;
    const dy = ev.clientY - d.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) d.moved = true;
    if (d.moved) setView((v) => ({ ...v, x: d.vx + dx, y: d.vy + dy }));
  };
  const up = (ev: PointerEvent): void => {
    const d = drag.current;
    drag.current = null;
    if (d?.moved) return;
    const target = (ev.target as Element).closest?.("[data-node-id]");
    const id = target?.getAttribute("data-node-id");
    if (id && onSelect) onSelect(id);
  };

  // Only what is in view (plus a margin) is in the DOM: a 1,000-node graph costs what the
  // screen shows.
  const size = useRef({ w: 800, h: 560 });
  if (box.current) size.current = { w: box.current.clientWidth || 800, h: box.current.clientHeight || 560 };
  const edgeBoxes = useMemo(() => layout.edges.map(edgeBox), [layout]);
  const margin = MARGIN / view.scale;
  const seen: Box = {
    x0: -view.x / view.scale - margin,
    y0: -view.y / view.scale - margin,
    x1: (size.current.w - view.x) / view.scale + margin,
    y1: (size.current.h - view.y) / view.scale + margin,
  };
  const nodes = layout.nodes.filter((n) => overlaps(seen, { x0: n.x, y0: n.y, x1: n.x + n.width, y1: n.y + n.height }));
  const edges = layout.edges.filter((_, i) => overlaps(seen, edgeBoxes[i]));
  const labels = view.scale >= LABEL_SCALE;

  return (
    <div class="graph" ref={box} style={{ height: `${graphHeight(layout)}px` }}>
      <div class="graph-tools">
        <button type="button" onClick={fit} title="Fit the graph in view">fit</button>
        <button type="button" onClick={() => setView((v) => ({ ...v, scale: 1 }))}>1:1</button>
        <span class="muted">
          {layout.nodes.length} nodes{layout.preview ? " · preview placement, ELK layout on its way…" : ""}
        </span>
      </div>
      <svg
        class="graph-svg"
        data-rendered="1"
        data-layout={layout.preview ? "preview" : "elk"}
        data-nodes={layout.nodes.length}
        onPointerDown={down}
        onPointerMove={move}
        onPointerUp={up}
        onPointerLeave={() => (drag.current = null)}
      >
        <g transform={`translate(${view.x},${view.y}) scale(${view.scale})`}>
          <Edges edges={edges} labels={labels} />
          {nodes.map((n) => (
            <NodeBox key={n.id} node={n} status={status?.get(n.id)} selected={n.id === selected} labels={labels} />
          ))}
        </g>
      </svg>
    </div>
  );
}
