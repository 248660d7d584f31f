// What a signal form asks for. A wait node declares no data schema, so the fields are the
// ones the workflow reads from the wait's output (`nodes.ID.output.FIELD` in its
// expressions); the user can always switch to raw JSON.
import { toJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import type { WorkflowSpec } from "./gen/agentrun/v1/workflow_pb";
import { WorkflowSpecSchema } from "./gen/agentrun/v1/workflow_pb";

export function signalFields(spec: WorkflowSpec, nodeId: string): string[] {
  const text = JSON.stringify(toJson(WorkflowSpecSchema, spec));
  const escaped = nodeId.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const pattern = new RegExp(`nodes\\.${escaped}\\.output\\.([A-Za-z_][A-Za-z0-9_]*)`, "g");
  const fields = new Set<string>();
  for (const m of text.matchAll(pattern)) fields.add(m[1]);
  return [...fields].sort();
}

/** A form value as JSON: `true`, `3`, `{"a": 1}` parse; anything else is a string. */
export function fieldValue(text: string): JsonValue {
  const t = text.trim();
  if (t === "") return null;
  try {
    return JSON.parse(t) as JsonValue;
  } catch {
    return text;
  }
}

export function formData(values: Record<string, string>): JsonObject {
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(values)) out[k] = fieldValue(v);
  return out;
}

/** The signal a node waits for: its `wait.signal`, or `escalation` for an escalated node. */
export function waitedSignal(spec: WorkflowSpec, nodeId: string, state: string): string | undefined {
  if (state === "escalated") return "escalation";
  const node = spec.nodes.find((n) => n.id === nodeId);
  return node?.kind.case === "wait" && node.kind.value.signal ? node.kind.value.signal : undefined;
}
