import { create } from "@bufbuild/protobuf";
import ELK from "elkjs/lib/elk.bundled.js";
import { describe, expect, it } from "vitest";
import { WorkflowSpecSchema, WorkflowSpec_Mode } from "../src/gen/agentrun/v1/workflow_pb";
import { LARGE_GRAPH, layoutOptions, layoutWith } from "../src/graph/layout";
import { baseNodeId, dagGraph, machineGraph, specGraph } from "../src/graph/model";

const dag = create(WorkflowSpecSchema, {
  name: "demo",
  nodes: [
    { id: "fetch", kind: { case: "tool", value: { name: "http.get" } } },
    { id: "route", needs: ["fetch"], kind: { case: "switchNode", value: { cases: [{ when: "${{ output.ok }}", target: "approve" }], defaultTarget: "reject" } } },
    { id: "approve", kind: { case: "wait", value: { signal: "approval" } } },
    { id: "reject", kind: { case: "passNode", value: {} } },
    { id: "done", needs: ["approve", "ghost"], kind: { case: "passNode", value: {} } },
  ],
  edges: [{ fromNode: "reject", to: "done", when: "${{ true }}" }],
});

describe("dagGraph", () => {
  it("has needs, switch cases, defaults and full-form edges, and drops unknown ids", () => {
    const g = dagGraph(dag);
    expect(g.nodes.map((n) => `${n.id}:${n.kind}:${n.detail}`)).toEqual([
      "fetch:tool:http.get",
      "route:switch:",
      "approve:wait:signal approval",
      "reject:pass:",
      "done:pass:",
    ]);
    expect(g.edges).toEqual([
      { from: "fetch", to: "route", label: "" },
      { from: "route", to: "approve", label: "output.ok" },
      { from: "route", to: "reject", label: "default" },
      { from: "approve", to: "done", label: "" },
      { from: "reject", to: "done", label: "true" },
    ]);
  });
});

describe("machineGraph", () => {
  it("has one node per state and an edge per transition, timer and invoke outcome", () => {
    const spec = create(WorkflowSpecSchema, {
      mode: WorkflowSpec_Mode.STATE_MACHINE,
      initial: "open",
      states: {
        open: { on: { pay: { transitions: [{ target: "paid", guard: "${{ event.data.ok }}" }, { target: "open" }] } }, after: [{ delay: { seconds: 30n }, target: "closed" }] },
        paid: { invoke: { name: "ship" }, onDone: { target: "closed" }, onError: { target: "open" } },
        closed: { isFinal: true },
      },
    });
    const g = specGraph(spec);
    expect(g).toEqual(machineGraph(spec));
    expect(g.nodes.map((n) => `${n.id}:${n.kind}:${n.detail}`)).toEqual(["closed:final:", "open:state:initial", "paid:state:invokes ship"]);
    expect(g.edges.map((e) => `${e.from}>${e.to}:${e.label}`)).toEqual([
      "open>paid:pay [guard]",
      "open>open:pay",
      "open>closed:after 30s",
      "paid>closed:invoke:done",
      "paid>open:invoke:error",
    ]);
  });
});

describe("layout", () => {
  it("places every node without overlaps and routes every edge", async () => {
    const g = dagGraph(dag);
    const out = await layoutWith(new ELK(), g);
    expect(out.nodes).toHaveLength(g.nodes.length);
    expect(out.edges.every((e) => e.points.length >= 2)).toBe(true);
    for (const a of out.nodes) {
      for (const b of out.nodes) {
        if (a === b) continue;
        const apart = a.x + a.width <= b.x || b.x + b.width <= a.x || a.y + a.height <= b.y || b.y + b.height <= a.y;
        expect(apart, `${a.id} overlaps ${b.id}`).toBe(true);
      }
    }
    // A dependency is drawn below the node it depends on (direction DOWN).
    const y = Object.fromEntries(out.nodes.map((n) => [n.id, n.y]));
    expect(y.fetch).toBeLessThan(y.route);
    expect(y.approve).toBeLessThan(y.done);
  });

  it("uses the fast options from LARGE_GRAPH nodes on", () => {
    expect(layoutOptions(LARGE_GRAPH - 1)["elk.layered.thoroughness"]).toBeUndefined();
    expect(layoutOptions(LARGE_GRAPH)["elk.layered.thoroughness"]).toBe("1");
  });

  it("lays out 1,000 nodes", async () => {
    const nodes = Array.from({ length: 1000 }, (_, i) => ({ id: `n${i}`, kind: "pass", detail: "" }));
    const edges = nodes.slice(1).map((n, i) => ({ from: `n${Math.floor(i / 3)}`, to: n.id, label: "" }));
    const out = await layoutWith(new ELK(), { nodes, edges });
    expect(new Set(out.nodes.map((n) => `${n.x},${n.y}`)).size).toBe(1000);
  }, 120_000);
});

describe("baseNodeId", () => {
  it("strips a map item index", () => {
    expect(baseNodeId("fetch[12]")).toBe("fetch");
    expect(baseNodeId("fetch")).toBe("fetch");
  });
});

describe("previewLayout", () => {
  it("puts each node below everything it depends on, one slot per node", async () => {
    const { previewLayout } = await import("../src/graph/preview");
    const nodes = Array.from({ length: 300 }, (_, i) => ({ id: `n${i}`, kind: "pass", detail: "" }));
    const edges = nodes.slice(1).map((n, i) => ({ from: `n${Math.floor(i / 2)}`, to: n.id, label: "" }));
    edges.push({ from: "n299", to: "n0", label: "" }); // a cycle must not hang or drop nodes
    const out = previewLayout({ nodes, edges }, 100, 40);
    expect(out.preview).toBe(true);
    expect(new Set(out.nodes.map((n) => `${n.x},${n.y}`)).size).toBe(300);
    const y = new Map(out.nodes.map((n) => [n.id, n.y]));
    for (const e of edges.slice(0, -1)) expect(y.get(e.from)!).toBeLessThan(y.get(e.to)!);
    expect(out.edges).toHaveLength(edges.length);
  });
});
