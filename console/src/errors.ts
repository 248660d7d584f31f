// Errors as the API gives them: the Connect code, the message, and the google.rpc details
// agentrun attaches (ErrorInfo reason and metadata, BadRequest field violations,
// PreconditionFailure violations, RetryInfo), decoded from their wire bytes.
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";

export interface ApiErrorView {
  code: string;
  message: string;
  reason?: string;
  metadata: Record<string, string>;
  violations: { field: string; description: string }[];
  retryDelay?: string;
}

// Calls `visit` for each length-delimited field of a message and skips the others.
function fields(bytes: Uint8Array, visit: (field: number, r: BinaryReader) => void): void {
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [field, wireType] = r.tag();
    if (wireType === WireType.LengthDelimited) visit(field, r);
    else r.skip(wireType);
  }
}

function strings(bytes: Uint8Array, names: Record<number, string>): Record<string, string> {
  const out: Record<string, string> = {};
  fields(bytes, (field, r) => {
    const name = names[field];
    if (name) out[name] = r.string();
    else r.skip(WireType.LengthDelimited);
  });
  return out;
}

/** Decodes the detail types agentrun sends; unknown ones are listed by type name. */
export function describe(err: unknown): ApiErrorView {
  const e = ConnectError.from(err);
  const view: ApiErrorView = {
    code: Code[e.code]?.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase() ?? String(e.code),
    message: e.rawMessage,
    metadata: {},
    violations: [],
  };
  for (const d of e.details) {
    if (!("type" in d) || !(d.value instanceof Uint8Array)) continue;
    const value = d.value;
    const type = d.type.replace(/^.*\//, "");
    try {
      if (type === "google.rpc.ErrorInfo") {
        fields(value, (field, r) => {
          if (field === 1) view.reason = r.string();
          else if (field === 3) {
            const entry = strings(r.bytes(), { 1: "key", 2: "value" });
            view.metadata[entry.key ?? ""] = entry.value ?? "";
          } else r.skip(WireType.LengthDelimited);
        });
      } else if (type === "google.rpc.BadRequest") {
        fields(value, (field, r) => {
          if (field !== 1) return void r.skip(WireType.LengthDelimited);
          const v = strings(r.bytes(), { 1: "field", 2: "description" });
          view.violations.push({ field: v.field ?? "", description: v.description ?? "" });
        });
      } else if (type === "google.rpc.PreconditionFailure") {
        fields(value, (field, r) => {
          if (field !== 1) return void r.skip(WireType.LengthDelimited);
          const v = strings(r.bytes(), { 1: "type", 2: "subject", 3: "description" });
          view.violations.push({
            field: [v.type, v.subject].filter(Boolean).join(" "),
            description: v.description ?? "",
          });
        });
      } else if (type === "google.rpc.RetryInfo") {
        fields(value, (field, r) => {
          if (field !== 1) return void r.skip(WireType.LengthDelimited);
          let seconds = 0n;
          let nanos = 0;
          const inner = new BinaryReader(r.bytes());
          while (inner.pos < inner.len) {
            const [f, w] = inner.tag();
            if (f === 1) seconds = BigInt(inner.int64());
            else if (f === 2) nanos = inner.int32();
            else inner.skip(w);
          }
          view.retryDelay = `${Number(seconds) + nanos / 1e9}s`;
        });
      }
    } catch {
      // A detail that does not decode is left out; the code and message still show.
    }
  }
  return view;
}
