import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  ExecutionEventSchema,
  NodeExecutionSchema,
  NodeExecution_State,
  type ExecutionEvent,
} from "../src/gen/agentrun/v1/execution_pb";
import { applyEvent, fromNodes, itemsOf, statuses } from "../src/live";

const ev = (sequence: number, type: string, nodeId: string, payload?: ExecutionEvent["payload"]): ExecutionEvent =>
  create(ExecutionEventSchema, { sequence: BigInt(sequence), type, nodeId, payload });

describe("live state", () => {
  const start = fromNodes(
    [create(NodeExecutionSchema, { nodeId: "approve", state: NodeExecution_State.WAITING, attempt: 1 })],
    5n,
  );

  it("applies node events in order and ignores ones already applied", () => {
    let s = applyEvent(start, ev(4, "node.succeeded", "approve"));
    expect(s).toBe(start);
    s = applyEvent(s, ev(6, "node.succeeded", "approve", { case: "nodeSucceeded", value: { attempt: 1 } as never }));
    expect(s.nodes.get("approve")?.state).toBe("succeeded");
    expect(s.sequence).toBe(6n);
    expect(start.nodes.get("approve")?.state).toBe("waiting");
    s = applyEvent(s, ev(7, "execution.succeeded", ""));
    expect(s.executionState).toBe("succeeded");
  });

  it("keeps a failure's error and the attempt count of retries", () => {
    let s = applyEvent(start, ev(6, "node.retrying", "call", { case: "nodeRetrying", value: { attempt: 1, error: { type: "tool_error", message: "boom" } } as never }));
    s = applyEvent(s, ev(7, "node.running", "call", { case: "nodeStarted", value: { attempt: 2 } as never }));
    s = applyEvent(s, ev(8, "node.failed", "call", { case: "nodeFailed", value: { attempt: 2, error: { type: "tool_error", message: "boom again" } } as never }));
    const call = s.nodes.get("call")!;
    expect(call.state).toBe("failed");
    expect(call.attempt).toBe(2);
    expect(call.error?.message).toBe("boom again");
    expect(statuses(s).get("call")).toEqual({ state: "failed", badge: "attempt 2" });
  });

  it("counts map items on their node and lists them by index", () => {
    let s = applyEvent(start, ev(6, "node.running", "each", { case: "nodeStarted", value: { attempt: 1 } as never }));
    s = applyEvent(s, ev(7, "node.succeeded", "each[10]"));
    s = applyEvent(s, ev(8, "node.failed", "each[2]"));
    s = applyEvent(s, ev(9, "node.running", "each[1]"));
    s = applyEvent(s, ev(10, "node.running", "eachother[0]"));
    expect(itemsOf(s, "each").map((i) => i.id)).toEqual(["each[1]", "each[2]", "each[10]"]);
    expect(statuses(s).get("each")).toEqual({ state: "running", badge: "items 1/3, 1 failed" });
  });

  it("reuses unchanged status objects so unchanged nodes are not redrawn", () => {
    const first = statuses(start);
    const s = applyEvent(start, ev(6, "node.running", "other"));
    const second = statuses(s, first);
    expect(second.get("approve")).toBe(first.get("approve"));
    expect(second.get("other")).toEqual({ state: "running", badge: undefined });
  });
});
