import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { describe as describeError } from "../src/errors";
import { DurationSchema } from "@bufbuild/protobuf/wkt";

function errorInfo(reason: string, metadata: Record<string, string>): Uint8Array {
  const w = new BinaryWriter().uint32(10).string(reason).uint32(18).string("agentrun");
  for (const [k, v] of Object.entries(metadata)) {
    w.uint32(26).bytes(new BinaryWriter().uint32(10).string(k).uint32(18).string(v).finish());
  }
  return w.finish();
}

function badRequest(violations: [string, string][]): Uint8Array {
  const w = new BinaryWriter();
  for (const [f, d] of violations) w.uint32(10).bytes(new BinaryWriter().uint32(10).string(f).uint32(18).string(d).finish());
  return w.finish();
}

describe("API errors", () => {
  it("decodes the code, reason, metadata and field violations as sent", () => {
    const err = new ConnectError("workflow is invalid", Code.InvalidArgument, undefined, [
      { type: "google.rpc.ErrorInfo", value: errorInfo("INVALID_WORKFLOW", { workflow: "w" }) },
      { type: "google.rpc.BadRequest", value: badRequest([["nodes[2].when", "not a boolean expression"]]) },
      { type: "google.rpc.RetryInfo", value: new BinaryWriter().uint32(10).bytes(toBinary(DurationSchema, create(DurationSchema, { seconds: 2n, nanos: 500_000_000 }))).finish() },
      { type: "some.Unknown", value: new Uint8Array([1, 2, 3]) },
    ]);
    const view = describeError(err);
    expect(view.code).toBe("INVALID_ARGUMENT");
    expect(view.message).toBe("workflow is invalid");
    expect(view.reason).toBe("INVALID_WORKFLOW");
    expect(view.metadata).toEqual({ workflow: "w" });
    expect(view.violations).toEqual([{ field: "nodes[2].when", description: "not a boolean expression" }]);
    expect(view.retryDelay).toBe("2.5s");
  });

  it("shows any thrown value as UNKNOWN with its message", () => {
    expect(describeError(new Error("network down"))).toMatchObject({ code: "UNKNOWN", message: "network down" });
    expect(describeError(new ConnectError("x", Code.FailedPrecondition)).code).toBe("FAILED_PRECONDITION");
  });
});
