// Display helpers: enum names without their prefix, times, durations and JSON values.
import { toJson, type JsonValue } from "@bufbuild/protobuf";
import {
  ValueSchema,
  timestampMs,
  type Duration,
  type Timestamp,
  type Value,
} from "@bufbuild/protobuf/wkt";
import { Execution_State, NodeExecution_State } from "./gen/agentrun/v1/execution_pb";
import { StateMachineInstance_State } from "./gen/agentrun/v1/state_machine_pb";

/** `STATE_WAITING` -> `waiting`: the lower-case name used in CSS classes and labels. */
export function enumName(values: Record<number, string>, value: number): string {
  return (values[value] ?? String(value)).replace(/^STATE_/, "").toLowerCase();
}

export const executionState = (s: Execution_State): string => enumName(Execution_State, s);
export const nodeState = (s: NodeExecution_State): string => enumName(NodeExecution_State, s);
export const instanceState = (s: StateMachineInstance_State): string =>
  enumName(StateMachineInstance_State, s);

export const EXECUTION_STATES: string[] = Object.values(Execution_State)
  .filter((v): v is string => typeof v === "string" && v !== "STATE_UNSPECIFIED")
  .map((v) => v.replace(/^STATE_/, "").toLowerCase());

export const ENDED_EXECUTION = new Set([
  "succeeded",
  "failed",
  "cancelled",
  "compensated",
  "compensation_failed",
  "timed_out",
]);

export function ms(t: Timestamp | undefined): number | undefined {
  return t ? timestampMs(t) : undefined;
}

export function time(t: Timestamp | undefined): string {
  if (!t) return "";
  const d = new Date(timestampMs(t));
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function seconds(d: Duration | undefined): number {
  return d ? Number(d.seconds) + d.nanos / 1e9 : 0;
}

/** A duration in the largest sensible unit: `850ms`, `12.4s`, `3m 20s`, `2h 5m`. */
export function span(msValue: number): string {
  if (!Number.isFinite(msValue) || msValue < 0) return "";
  if (msValue < 1000) return `${Math.round(msValue)}ms`;
  const s = msValue / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${Math.round(s % 60)}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

export function json(v: Value | undefined): JsonValue | undefined {
  return v ? toJson(ValueSchema, v) : undefined;
}

export function pretty(v: JsonValue | undefined): string {
  return v === undefined ? "" : JSON.stringify(v, null, 2);
}

/** `executions/abc` -> `abc`. */
export function id(name: string): string {
  return name.slice(name.indexOf("/") + 1);
}
