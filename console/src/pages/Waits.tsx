// Pending approvals: the waits for a signal of the tenant (ListWaits), each answerable by its
// id through AnswerWait with a form built from its answer schema (src/schemaForm.ts). The list
// is fetched again every few seconds (there is no watch of waits); a row keeps its form's
// input across refreshes (rows are keyed by wait id).
import type { ComponentChildren } from "preact";
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { useEffect, useState } from "preact/hooks";
import { executions } from "../api";
import type { Execution, Wait } from "../gen/agentrun/v1/execution_pb";
import { id, time } from "../format";
import { activeKey } from "../keys";
import { href, setQuery, type Route } from "../router";
import { answerFrom, initialText, schemaFields, type SchemaField } from "../schemaForm";
import { ErrorBox } from "../ui/ErrorBox";
import { Pager } from "../ui/Pager";
import { Json, JsonField, parseJson, useLoad, usePolling } from "../ui/misc";
import { REFRESH_MS } from "./Executions";

function Field({ field, text, onInput }: { field: SchemaField; text: string; onInput: (v: string) => void }) {
  const name = `answer-${field.name}`;
  let input;
  if (field.kind === "boolean") {
    input = <input type="checkbox" name={name} checked={text === "true"} onChange={(e) => onInput(String((e.target as HTMLInputElement).checked))} />;
  } else if (field.kind === "enum") {
    input = (
      <select name={name} value={text} onChange={(e) => onInput((e.target as HTMLSelectElement).value)}>
        {field.required ? null : <option value="">—</option>}
        {field.options.map((o) => (
          <option value={JSON.stringify(o)}>{typeof o === "string" ? o : JSON.stringify(o)}</option>
        ))}
      </select>
    );
  } else if (field.kind === "json") {
    return <JsonField label={`${field.name}${field.required ? " *" : ""} (JSON)`} name={name} value={text} rows={2} onInput={onInput} />;
  } else {
    input = (
      <input
        name={name}
        type={field.kind === "string" ? "text" : "number"}
        step={field.kind === "integer" ? "1" : "any"}
        value={text}
        onInput={(e) => onInput((e.target as HTMLInputElement).value)}
      />
    );
  }
  return (
    <label class="field">
      <span>
        {field.name}
        {field.required ? " *" : ""} {field.description ? <span class="muted">{field.description}</span> : null}
      </span>
      {input}
    </label>
  );
}

/** The answer form of one wait: its schema's fields, or raw JSON (always available). */
export function AnswerForm({ wait, onAnswered }: { wait: Wait; onAnswered: (e?: Execution) => void }) {
  const fields = schemaFields(wait.schema);
  const [texts, setTexts] = useState<Record<string, string>>(() =>
    Object.fromEntries((fields ?? []).map((f) => [f.name, initialText(f)])),
  );
  const [raw, setRaw] = useState(fields === null);
  const [text, setText] = useState("{}");
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const data: { value?: JsonValue; error?: string } = raw || !fields ? parseJson(text) : answerFrom(fields, texts);
  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    if (data.error) return;
    setBusy(true);
    setError(undefined);
    try {
      const res = await executions.answerWait({ target: { case: "waitId", value: wait.waitId }, data: fromJson(ValueSchema, data.value ?? null) });
      onAnswered(res.execution);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="answer-form" data-wait={wait.waitId} onSubmit={submit}>
      {!raw && fields ? fields.map((f) => <Field field={f} text={texts[f.name] ?? ""} onInput={(v) => setTexts({ ...texts, [f.name]: v })} />) : null}
      {raw || !fields ? <JsonField label="answer (JSON)" name="answer-data" value={text} onInput={setText} /> : null}
      {fields ? (
        <label class="muted">
          <input type="checkbox" name="answer-raw" checked={raw} onChange={() => setRaw(!raw)} /> raw JSON
        </label>
      ) : null}
      {!raw && data.error ? <span class="field-error">{data.error}</span> : null}{" "}
      <button type="submit" name="answer" disabled={busy || Boolean(data.error)}>
        answer
      </button>
      <ErrorBox error={error} />
    </form>
  );
}

/** The pending wait of one node (or map item, `ID[INDEX]`) of an execution, if any. */
export function waitOf(waits: Wait[], nodeKey: string): Wait | undefined {
  return waits.find((w) => (w.mapIndex !== undefined ? `${w.nodeId}[${w.mapIndex}]` : w.nodeId) === nodeKey);
}

/** On an execution's page: the answer form of the selected node's wait when the wait declares
 *  a schema (else `fallback`, the signal form with fields inferred from the workflow). */
export function NodeWaitForm({ execution, nodeKey, fallback, onChanged }: {
  execution: Execution;
  nodeKey: string;
  fallback: ComponentChildren;
  onChanged: (e: Execution) => void;
}) {
  const waits = useLoad(() => executions.listWaits({ parent: execution.name, pageSize: 1000 }), [execution.name, nodeKey, execution.state]);
  const wait = waitOf(waits.data?.waits ?? [], nodeKey);
  if (waits.loading && !waits.data) return null;
  if (!wait?.schema) return <>{fallback}</>;
  return (
    <div class="node-wait">
      <h3>
        Answer <code>{wait.signal}</code> <span class="muted">wait {wait.waitId}</span>
      </h3>
      <AnswerForm key={wait.waitId} wait={wait} onAnswered={(e) => (e ? onChanged(e) : waits.reload())} />
    </div>
  );
}

function WaitRow({ wait, onAnswered }: { wait: Wait; onAnswered: (w: Wait) => void }) {
  const [open, setOpen] = useState(false);
  const node = wait.mapIndex !== undefined ? `${wait.nodeId}[${wait.mapIndex}]` : wait.nodeId;
  return (
    <tr data-wait={wait.waitId}>
      <td class="mono">
        <a href={href(`executions/${id(wait.execution)}`, { node })}>{id(wait.execution)}</a>
      </td>
      <td>{wait.workflow}</td>
      <td class="mono">{node}</td>
      <td>{wait.attempt}</td>
      <td class="mono">{wait.signal}</td>
      <td>{time(wait.startTime)}</td>
      <td>{time(wait.timeoutTime) || <span class="muted">none</span>}</td>
      <td>
        <details>
          <summary>{wait.schema ? "schema" : "any value"}</summary>
          <Json value={wait.schema} empty="any value" />
        </details>
      </td>
      <td>
        <button type="button" name="open-answer" onClick={() => setOpen(!open)}>
          {open ? "close" : "answer…"}
        </button>
        {open ? <AnswerForm wait={wait} onAnswered={() => onAnswered(wait)} /> : null}
      </td>
    </tr>
  );
}

export function WaitsPage({ route }: { route: Route }) {
  // `?execution=ID`: that execution's waits only (ListWaits' `parent`).
  const execution = (route.query.get("execution") ?? "").trim();
  const parent = execution ? `executions/${id(execution)}` : "";
  const [tokens, setTokens] = useState<string[]>([]);
  const token = tokens[tokens.length - 1] ?? "";
  const [answered, setAnswered] = useState<string[]>([]);
  const list = useLoad(() => executions.listWaits({ parent, pageSize: 100, pageToken: token }), [parent, token, activeKey()?.key]);
  useEffect(() => setTokens([]), [parent, activeKey()?.key]);
  usePolling(list.reload, REFRESH_MS, [parent, token]);
  const waits = list.data?.waits ?? [];
  return (
    <section>
      <h1>Waits</h1>
      <p class="muted">
        Pending waits for a signal (approvals) of this tenant, oldest execution first. An answer is checked against the wait's schema and
        applied once; a wait that ended meanwhile refuses it (<code>FAILED_PRECONDITION</code>).
      </p>
      <label>
        execution{" "}
        <input
          name="wait-execution"
          value={execution}
          placeholder="any"
          onChange={(e) => setQuery(route, { execution: (e.target as HTMLInputElement).value.trim() || undefined })}
        />
      </label>
      <ErrorBox error={list.error} />
      {answered.length ? (
        <p class="notice" data-answered={answered.join(" ")}>
          answered: {answered.map((w) => <code>{w}</code>)}
        </p>
      ) : null}
      <Pager tokens={tokens} next={list.data?.nextPageToken} onChange={setTokens}>
        <span class="muted">
          page {tokens.length + 1} · {waits.length} pending{list.loading ? " · loading…" : ""}
        </span>
      </Pager>
      <table class="list waits">
        <thead>
          <tr>
            <th>execution</th>
            <th>workflow</th>
            <th>node</th>
            <th>attempt</th>
            <th>signal</th>
            <th>since</th>
            <th>times out</th>
            <th>answer schema</th>
            <th></th>
          </tr>
        </thead>
        <tbody>
          {waits.map((w) => (
            <WaitRow
              key={w.waitId}
              wait={w}
              onAnswered={(done) => {
                setAnswered([...answered, done.waitId]);
                list.reload();
              }}
            />
          ))}
        </tbody>
      </table>
      {!list.loading && !waits.length && !list.error ? <p class="muted">No pending waits.</p> : null}
    </section>
  );
}
