#!/usr/bin/env node
// A Node.js client of agentrun: loads the .proto files at run time with @grpc/proto-loader
// (nothing generated), creates a workflow, starts an execution and watches it to the end.
// Usage: node client.js HOST:PORT [API_KEY]
// Prints one JSON line: {execution, state, output, sequences, types}; exit 0 when the
// execution SUCCEEDED and the stream delivered sequences 1..N in order.
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_ROOT = path.resolve(__dirname, "..", "..", "proto");
const definition = protoLoader.loadSync(
  ["agentrun/v1/workflow_service.proto", "agentrun/v1/execution_service.proto"],
  { includeDirs: [PROTO_ROOT], keepCase: true, longs: String, enums: String, defaults: false, oneofs: true },
);
const v1 = grpc.loadPackageDefinition(definition).agentrun.v1;

// google.protobuf.Value <-> plain JS values (protobufjs's bundled well-known types use
// camelCase field names even with keepCase).
function toValue(x) {
  if (x === null || x === undefined) return { nullValue: "NULL_VALUE" };
  if (typeof x === "boolean") return { boolValue: x };
  if (typeof x === "number") return { numberValue: x };
  if (typeof x === "string") return { stringValue: x };
  if (Array.isArray(x)) return { listValue: { values: x.map(toValue) } };
  const fields = {};
  for (const [k, v] of Object.entries(x)) fields[k] = toValue(v);
  return { structValue: { fields } };
}

function fromValue(v) {
  if (!v) return null;
  switch (v.kind) {
    case "numberValue": return v.numberValue;
    case "stringValue": return v.stringValue;
    case "boolValue": return v.boolValue;
    case "structValue": return fromStruct(v.structValue);
    case "listValue": return (v.listValue.values || []).map(fromValue);
    default: return null;
  }
}

function fromStruct(s) {
  const out = {};
  for (const [k, v] of Object.entries((s && s.fields) || {})) out[k] = fromValue(v);
  return out;
}

function unary(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + 10000 }, (err, response) =>
      err ? reject(err) : resolve(response));
  });
}

async function main() {
  const [address, apiKey] = process.argv.slice(2);
  if (!address) throw new Error("usage: node client.js HOST:PORT [API_KEY]");
  const metadata = new grpc.Metadata();
  if (apiKey) metadata.set("authorization", `Bearer ${apiKey}`);
  const creds = grpc.credentials.createInsecure();
  const workflows = new v1.WorkflowService(address, creds);
  const executions = new v1.ExecutionService(address, creds);

  const source = JSON.stringify({
    name: "polyglot",
    nodes: [
      { id: "greet", pass: { value: { greeting: "hello ${{ input.who }}" } } },
      { id: "echo", needs: ["greet"], tool: { name: "core.echo", args: { said: "${{ nodes.greet.output.greeting }}" } } },
    ],
  });
  await unary(workflows, "CreateWorkflow", { source }, metadata);
  const started = await unary(executions, "StartExecution", {
    workflow: "workflows/polyglot",
    input: toValue({ who: "node" }),
    request_id: `node-${process.pid}-${Date.now()}`,
  }, metadata);
  const name = started.execution.name;

  const sequences = [];
  const types = [];
  await new Promise((resolve, reject) => {
    const call = executions.WatchExecution({ name, after_sequence: "0" }, metadata);
    call.on("data", (response) => {
      sequences.push(Number(response.event.sequence));
      types.push(response.event.type);
    });
    call.on("error", reject);
    call.on("end", resolve);
  });

  const got = await unary(executions, "GetExecution", { name }, metadata);
  const result = {
    execution: name,
    state: got.execution.state,
    output: fromValue(got.execution.output),
    input: fromValue(got.execution.input),
    error: got.execution.error || null,
    sequences,
    types,
  };
  console.log(JSON.stringify(result));
  workflows.close();
  executions.close();
  const inOrder = sequences.every((s, i) => s === i + 1);
  process.exit(result.state === "STATE_SUCCEEDED" && inOrder && types[types.length - 1] === "execution.succeeded" ? 0 : 1);
}

main().catch((err) => {
  console.error(`error: ${err.code !== undefined ? `${grpc.status[err.code]}: ` : ""}${err.details || err.message}`);
  process.exit(2);
});
