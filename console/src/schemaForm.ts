// A form from a wait's answer schema (JSON Schema, `Wait.schema`): one field per property of
// an object schema, typed by the property's schema; anything the form cannot express (nested
// objects, arrays, no schema) is a JSON text field. The server checks the answer against the
// schema (AnswerWait: INVALID_ARGUMENT naming the path), so the form only shapes the input.
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";

export type FieldKind = "boolean" | "integer" | "number" | "string" | "enum" | "json";

export interface SchemaField {
  name: string;
  kind: FieldKind;
  required: boolean;
  options: JsonValue[];
  description: string;
  defaultValue?: JsonValue;
}

function isObject(v: JsonValue | undefined): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function kindOf(schema: JsonObject): FieldKind {
  if (Array.isArray(schema.enum)) return "enum";
  if (schema.const !== undefined) return "enum";
  const t = schema.type;
  if (t === "boolean" || t === "integer" || t === "number" || t === "string") return t;
  return "json";
}

/** The fields of an object schema with properties; null when the answer is not such an object
 *  (then the form is raw JSON only). */
export function schemaFields(schema: JsonValue | undefined): SchemaField[] | null {
  if (!isObject(schema) || !isObject(schema.properties)) return null;
  if (schema.type !== undefined && schema.type !== "object") return null;
  const required = new Set(Array.isArray(schema.required) ? schema.required.filter((r) => typeof r === "string") : []);
  return Object.entries(schema.properties).map(([name, sub]) => {
    const prop = isObject(sub) ? sub : {};
    const kind = kindOf(prop);
    return {
      name,
      kind,
      required: required.has(name),
      options: kind === "enum" ? (Array.isArray(prop.enum) ? prop.enum : [prop.const ?? null]) : [],
      description: typeof prop.description === "string" ? prop.description : typeof prop.title === "string" ? prop.title : "",
      defaultValue: prop.default,
    };
  });
}

/** A field's initial text: its default, else false for a required boolean, else empty. */
export function initialText(field: SchemaField): string {
  if (field.defaultValue !== undefined) {
    return field.kind === "string" && typeof field.defaultValue === "string" ? field.defaultValue : JSON.stringify(field.defaultValue);
  }
  return field.kind === "boolean" ? "false" : "";
}

/** The answer from the fields' texts: an empty optional field is left out; a text that does not
 *  read as its type is an error naming the field (the server would refuse it anyway). */
export function answerFrom(fields: SchemaField[], texts: Record<string, string>): { value?: JsonObject; error?: string } {
  const out: JsonObject = {};
  for (const f of fields) {
    const text = texts[f.name] ?? initialText(f);
    if (text.trim() === "" && f.kind !== "string") {
      if (f.required) return { error: `${f.name}: required` };
      continue;
    }
    if (text === "" && f.kind === "string" && !f.required) continue;
    switch (f.kind) {
      case "boolean":
        out[f.name] = text === "true";
        break;
      case "integer":
      case "number": {
        const n = Number(text);
        if (!Number.isFinite(n) || (f.kind === "integer" && !Number.isInteger(n))) return { error: `${f.name}: not ${f.kind === "integer" ? "an integer" : "a number"}` };
        out[f.name] = n;
        break;
      }
      case "string":
        out[f.name] = text;
        break;
      case "enum":
      case "json":
        try {
          out[f.name] = JSON.parse(text) as JsonValue;
        } catch (e) {
          return { error: `${f.name}: not JSON (${(e as Error).message})` };
        }
    }
  }
  return { value: out };
}
