import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { WorkflowSpecSchema } from "../src/gen/agentrun/v1/workflow_pb";
import { executionFilter, timeBounds } from "../src/pages/Executions";
import { instanceFilter } from "../src/pages/Instances";
import { fieldValue, formData, signalFields, waitedSignal } from "../src/signals";
import { parse } from "../src/router";
import { answerFrom, schemaFields } from "../src/schemaForm";
import { timestampMs } from "@bufbuild/protobuf/wkt";

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

  it("sends the time range as ListExecutions' created_after and created_before", () => {
    expect(timeBounds("", "")).toEqual({});
    const both = timeBounds("2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z");
    expect(timestampMs(both.createdAfter!)).toBe(Date.parse("2026-01-02T00:00:00Z"));
    expect(timestampMs(both.createdBefore!)).toBe(Date.parse("2026-01-03T00:00:00Z"));
    expect(Object.keys(timeBounds("", "2026-01-01T12:00"))).toEqual(["createdBefore"]);
    expect(timeBounds("not a time", "")).toEqual({});
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

describe("answer forms from a wait's schema", () => {
  const schema = {
    type: "object",
    required: ["approved", "amount"],
    properties: {
      approved: { type: "boolean" },
      amount: { type: "integer", description: "in cents" },
      reason: { type: "string" },
      level: { enum: ["low", "high"] },
      extra: { type: "object" },
    },
  };
  it("has one typed field per property", () => {
    const fields = schemaFields(schema)!;
    expect(fields.map((f) => [f.name, f.kind, f.required])).toEqual([
      ["approved", "boolean", true],
      ["amount", "integer", true],
      ["reason", "string", false],
      ["level", "enum", false],
      ["extra", "json", false],
    ]);
    expect(fields[3].options).toEqual(["low", "high"]);
    expect(schemaFields(undefined)).toBeNull();
    expect(schemaFields({ type: "string" })).toBeNull();
  });
  it("builds the answer, leaving out empty optional fields", () => {
    const fields = schemaFields(schema)!;
    expect(answerFrom(fields, { approved: "true", amount: "300", level: '"high"' })).toEqual({
      value: { approved: true, amount: 300, level: "high" },
    });
    expect(answerFrom(fields, { amount: "1.5" }).error).toBe("amount: not an integer");
    expect(answerFrom(fields, {}).error).toBe("amount: required");
    expect(answerFrom(fields, { amount: "2", extra: "{x" }).error).toMatch(/^extra: not JSON/);
  });
});
