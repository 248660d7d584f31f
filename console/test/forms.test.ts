import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { WorkflowSpecSchema } from "../src/gen/agentrun/v1/workflow_pb";
import { executionFilter, withinTime } from "../src/pages/Executions";
import { instanceFilter } from "../src/pages/Instances";
import { fieldValue, formData, signalFields, waitedSignal } from "../src/signals";
import { parse } from "../src/router";
import { ExecutionSchema } from "../src/gen/agentrun/v1/execution_pb";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";

const spec = create(WorkflowSpecSchema, {
  name: "approval",
  nodes: [
    { id: "approval", kind: { case: "wait", value: { signal: "approve" } } },
    {
      id: "ship",
      needs: ["approval"],
      when: "${{ nodes.approval.output.approved && nodes.approval.output.amount < 100 }}",
      kind: { case: "tool", value: { name: "ship", args: { kind: { case: "stringValue", value: "${{ nodes.approval.output.by }}" } } } },
    },
  ],
});

describe("signal form", () => {
  it("asks for the fields the workflow reads from the wait's output", () => {
    expect(signalFields(spec, "approval")).toEqual(["amount", "approved", "by"]);
    expect(signalFields(spec, "ship")).toEqual([]);
  });

  it("parses values as JSON where they are JSON", () => {
    expect(formData({ approved: "true", amount: "42", by: "alice", note: "" })).toEqual({ approved: true, amount: 42, by: "alice", note: null });
    expect(fieldValue('{"a": 1}')).toEqual({ a: 1 });
  });

  it("knows the signal a node waits for", () => {
    expect(waitedSignal(spec, "approval", "waiting")).toBe("approve");
    expect(waitedSignal(spec, "ship", "escalated")).toBe("escalation");
    expect(waitedSignal(spec, "ship", "running")).toBeUndefined();
  });
});

describe("filters", () => {
  it("builds the ListExecutions filter the server parses", () => {
    expect(executionFilter("", [])).toBe("");
    expect(executionFilter("order", ["running"])).toBe('workflow = "order" AND state = RUNNING');
    expect(executionFilter("", ["failed", "timed_out"])).toBe("state IN (FAILED, TIMED_OUT)");
    expect(instanceFilter("m", "active", "paid")).toBe('workflow = "m" AND state = ACTIVE AND current_state = "paid"');
  });

  it("keeps executions created within the time range", () => {
    const at = (iso: string) => create(ExecutionSchema, { name: iso, createTime: timestampFromMs(Date.parse(iso)) });
    const rows = [at("2026-01-01T10:00:00Z"), at("2026-01-02T10:00:00Z")];
    expect(withinTime(rows, "", "")).toBe(rows);
    expect(withinTime(rows, "2026-01-02T00:00:00Z", "").map((r) => r.name)).toEqual(["2026-01-02T10:00:00Z"]);
    expect(withinTime(rows, "", "2026-01-01T12:00:00Z").map((r) => r.name)).toEqual(["2026-01-01T10:00:00Z"]);
  });
});

describe("router", () => {
  it("parses hash routes with a query", () => {
    const r = parse("#/executions/abc?tab=events&node=x%5B1%5D");
    expect(r.parts).toEqual(["executions", "abc"]);
    expect(r.query.get("node")).toBe("x[1]");
    expect(parse("").parts).toEqual([]);
  });
});
