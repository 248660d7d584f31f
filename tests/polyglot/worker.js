#!/usr/bin/env node
// A Node.js agentrun worker (docs/workers.md), from worker_service.proto alone: loaded at run
// time with @grpc/proto-loader, nothing generated. It serves one tool, `node.reverse` by
// default: {text, sleep_ms?} -> {reversed, worker: "node", pid}.
// Usage: node worker.js HOST:PORT[,HOST:PORT...] [--slots N] [--tool NAME] [--labels k=v,...]
// ($AGENTRUN_API_KEY authenticates). One JSON line per event on stdout (registered, call,
// answered, cancel, refused, drained). SIGTERM drains: no more calls, the running ones answer,
// then the stream closes and the process exits 0. A broken stream connects to the next address.
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_ROOT = path.resolve(__dirname, "..", "..", "proto");
const definition = protoLoader.loadSync(["agentrun/v1/worker_service.proto"], {
  includeDirs: [PROTO_ROOT], keepCase: true, longs: String, enums: String, defaults: false, oneofs: true,
});
const v1 = grpc.loadPackageDefinition(definition).agentrun.v1;

// google.protobuf.Value <-> plain JS values (the bundled well-known types are camelCase).
function toValue(x) {
  if (x === null || x === undefined) return { nullValue: "NULL_VALUE" };
  if (typeof x === "boolean") return { boolValue: x };
  if (typeof x === "number") return { numberValue: x };
  if (typeof x === "string") return { stringValue: x };
  if (Array.isArray(x)) return { listValue: { values: x.map(toValue) } };
  return { structValue: toStruct(x) };
}
function toStruct(o) {
  const fields = {};
  for (const [k, v] of Object.entries(o)) fields[k] = toValue(v);
  return { fields };
}
function fromValue(v) {
  if (!v) return null;
  switch (v.kind) {
    case "numberValue": return v.numberValue;
    case "stringValue": return v.stringValue;
    case "boolValue": return v.boolValue;
    case "structValue": return Object.fromEntries(Object.entries(v.structValue.fields || {}).map(([k, x]) => [k, fromValue(x)]));
    case "listValue": return (v.listValue.values || []).map(fromValue);
    default: return null;
  }
}
const say = (event) => console.log(JSON.stringify(event));

const argv = process.argv.slice(2);
const option = (name, fallback) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : fallback; };
const addresses = (argv[0] || "").split(",").filter(Boolean);
if (!addresses.length) { console.error("usage: node worker.js HOST:PORT[,HOST:PORT] [--slots N] [--tool NAME]"); process.exit(2); }
const slots = Number(option("--slots", "4"));
const toolName = option("--tool", "node.reverse");
const labels = Object.fromEntries((option("--labels", "") || "").split(",").filter(Boolean).map((kv) => kv.split("=")));

const metadata = new grpc.Metadata();
if (process.env.AGENTRUN_API_KEY) metadata.set("authorization", `Bearer ${process.env.AGENTRUN_API_KEY}`);

let draining = false;
let stream = null;
const running = new Set();

async function reverse(args) {
  if (args.sleep_ms) await new Promise((r) => setTimeout(r, args.sleep_ms));
  return { reversed: String(args.text || "").split("").reverse().join(""), worker: "node", pid: process.pid };
}

function connect(turn) {
  const address = addresses[turn % addresses.length];
  const client = new v1.WorkerService(address, grpc.credentials.createInsecure());
  const call = client.Connect(metadata);
  stream = call;
  let heartbeat = null;
  call.write({
    register: {
      display_name: `node:${process.pid}`, max_concurrent_calls: slots, labels, version: "1.0",
      tools: [{
        name: toolName, description: "Reverses text (a Node.js worker)", idempotent: true,
        args_schema: toStruct({ type: "object", required: ["text"], properties: { text: { type: "string" } } }),
        result_schema: toStruct({ type: "object", required: ["reversed"] }),
      }],
    },
  });
  const closeIfIdle = () => { if (draining && running.size === 0) call.end(); };
  call.on("data", async (message) => {
    if (message.kind === "registered") {
      const d = message.registered.heartbeat_interval || {};
      const ms = Number(d.seconds || 0) * 1000 + Number(d.nanos || 0) / 1e6 || 1000;
      heartbeat = setInterval(() => call.write({ heartbeat: {} }), ms / 2);
      say({ event: "registered", name: message.registered.name, address });
      if (draining) { call.write({ drain: {} }); closeIfIdle(); }
    } else if (message.kind === "call") {
      const c = message.call;
      running.add(c.call_id);
      say({ event: "call", call_id: c.call_id, key: c.idempotency_key, attempt: c.attempt, running: running.size });
      let answer;
      try {
        answer = { call_id: c.call_id, result: toValue(await reverse(fromValue(c.arguments))) };
      } catch (err) {
        answer = { call_id: c.call_id, error: { type: "tool_error", message: String(err), retryable: true } };
      }
      running.delete(c.call_id);
      if (stream === call) { call.write({ result: answer }); say({ event: "answered", call_id: c.call_id }); }
      closeIfIdle();
    } else if (message.kind === "cancel") {
      say({ event: "cancel", call_id: message.cancel.call_id, reason: message.cancel.reason });
    } else if (message.kind === "refused") {
      say({ event: "refused", call_id: message.refused.call_id, reason: message.refused.reason });
    }
  });
  call.on("error", (err) => {
    clearInterval(heartbeat);
    if (err.code === grpc.status.INVALID_ARGUMENT || err.code === grpc.status.UNAUTHENTICATED) {
      console.error(`refused: ${grpc.status[err.code]}: ${err.details}`);
      process.exit(3);
    }
    if (!draining) setTimeout(() => connect(turn + 1), 200);
  });
  call.on("end", () => {
    clearInterval(heartbeat);
    if (draining) { say({ event: "drained" }); process.exit(0); }
  });
}

process.on("SIGTERM", () => {
  draining = true;
  if (stream) { stream.write({ drain: {} }); if (running.size === 0) stream.end(); }
});
connect(0);
