// Operator actions on one execution: pause, resume, cancel (optionally compensating), rerun
// from a node, and the signal form for a waiting or escalated node. Each shows the API's
// error as given.
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { useState } from "preact/hooks";
import { executions } from "../api";
import type { Execution } from "../gen/agentrun/v1/execution_pb";
import type { WorkflowSpec } from "../gen/agentrun/v1/workflow_pb";
import { ENDED_EXECUTION, executionState, id } from "../format";
import { go } from "../router";
import { formData, signalFields } from "../signals";
import { ErrorBox } from "../ui/ErrorBox";
import { JsonField, parseJson } from "../ui/misc";

function useAction(): [unknown, boolean, (run: () => Promise<unknown>) => Promise<void>] {
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const run = async (call: () => Promise<unknown>): Promise<void> => {
    setBusy(true);
    setError(undefined);
    try {
      await call();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return [error, busy, run];
}

export function Controls({ execution, nodeIds, selected, onChanged }: {
  execution: Execution;
  nodeIds: string[];
  selected?: string;
  onChanged: (e: Execution) => void;
}) {
  const [error, busy, run] = useAction();
  const [compensate, setCompensate] = useState(false);
  const [from, setFrom] = useState("");
  const [signalling, setSignalling] = useState(false);
  const [suggest, setSuggest] = useState(false);
  const state = executionState(execution.state);
  const ended = ENDED_EXECUTION.has(state);
  const name = execution.name;
  return (
    <div class="controls">
      <button type="button" name="pause" disabled={busy || ended || state === "paused"} onClick={() => run(async () => onChanged((await executions.pauseExecution({ name })).execution!))}>
        pause
      </button>
      <button type="button" name="resume" disabled={busy || state !== "paused"} onClick={() => run(async () => onChanged((await executions.resumeExecution({ name })).execution!))}>
        resume
      </button>
      <span class="group">
        <button
          type="button"
          name="cancel"
          disabled={busy || ended}
          onClick={() =>
            confirm(`Cancel ${id(name)}${compensate ? " and run its compensations" : ""}?`) &&
            run(async () => onChanged((await executions.cancelExecution({ name, compensate })).execution!))
          }
        >
          cancel
        </button>
        <label>
          <input type="checkbox" name="compensate" checked={compensate} onChange={() => setCompensate(!compensate)} /> with compensation
        </label>
      </span>
      <span class="group">
        <button
          type="button"
          name="rerun"
          disabled={busy || !ended}
          title="Start a new execution reusing the outputs outside the chosen node and its descendants"
          onClick={() =>
            run(async () => {
              const res = await executions.rerunExecution({ name, fromNodeId: from || (selected ?? "").replace(/\[.*$/, "") });
              go(`executions/${id(res.execution!.name)}`);
            })
          }
        >
          rerun from
        </button>
        {/* A field with suggestions rather than a select: a 1,000-node workflow's ids become
            options only once the field is used. */}
        <input
          name="rerun-from"
          list="rerun-nodes"
          value={from}
          placeholder={selected ? `selected (${selected.replace(/\[.*$/, "")})` : "where it failed"}
          onFocus={() => setSuggest(true)}
          onInput={(e) => setFrom((e.target as HTMLInputElement).value)}
        />
        {suggest ? (
          <datalist id="rerun-nodes">
            {nodeIds.map((n) => (
              <option value={n} />
            ))}
          </datalist>
        ) : null}
      </span>
      <button type="button" name="signal" disabled={ended} onClick={() => setSignalling(!signalling)}>
        signal…
      </button>
      <ErrorBox error={error} />
      {signalling && !ended ? <SignalForm execution={execution} onChanged={onChanged} /> : null}
    </div>
  );
}

/**
 * The signal form: fields the workflow reads from the wait's output, or raw JSON. Without a
 * node it sends any signal by name (buffered until a wait for it is reached).
 */
export function SignalForm({ execution, spec, nodeId, signal: waited, onChanged }: {
  execution: Execution;
  spec?: WorkflowSpec;
  nodeId?: string;
  signal?: string;
  onChanged: (e: Execution) => void;
}) {
  const [named, setNamed] = useState("");
  const signal = waited ?? named;
  const escalation = signal === "escalation";
  const inferred = spec && nodeId && !escalation ? signalFields(spec, nodeId) : [];
  const [values, setValues] = useState<Record<string, string>>({});
  const [raw, setRaw] = useState(inferred.length === 0);
  const [text, setText] = useState(escalation ? JSON.stringify({ action: "retry", node: nodeId }, null, 1) : "{}");
  const [signalId, setSignalId] = useState("");
  const [sent, setSent] = useState("");
  const [error, busy, run] = useAction();
  const data: { value?: JsonValue; error?: string } = raw ? parseJson(text) : { value: formData(values) };
  const submit = (e: Event): void => {
    e.preventDefault();
    if (data.error) return;
    void run(async () => {
      const res = await executions.signalExecution({
        name: execution.name,
        signal,
        data: fromJson(ValueSchema, data.value ?? null),
        signalId,
      });
      setSent(`sent ${signal}`);
      onChanged(res.execution!);
    });
  };
  return (
    <form class="signal-form" onSubmit={submit} data-signal={waited ?? ""}>
      {waited ? (
        <h3>
          {escalation ? "Answer the escalation" : `Signal `}
          {escalation ? null : <code>{signal}</code>}
        </h3>
      ) : (
        <label class="field">
          <span>signal name</span>
          <input name="signal-name" value={named} onInput={(e) => setNamed((e.target as HTMLInputElement).value)} />
        </label>
      )}
      {escalation ? (
        <p class="muted">
          <code>action</code>: retry, skip or fail; <code>output</code>: the output of a skip.
        </p>
      ) : null}
      {!raw
        ? inferred.map((f) => (
            <label class="field">
              <span>{f}</span>
              <input
                name={`signal-${f}`}
                value={values[f] ?? ""}
                placeholder="true, 3, text or JSON"
                onInput={(e) => setValues({ ...values, [f]: (e.target as HTMLInputElement).value })}
              />
            </label>
          ))
        : null}
      {raw ? <JsonField label="data (JSON)" name="signal-data" value={text} onInput={setText} /> : null}
      {inferred.length ? (
        <label class="muted">
          <input type="checkbox" checked={raw} onChange={() => setRaw(!raw)} /> raw JSON
        </label>
      ) : null}
      <label class="field">
        <span>signal id (optional: applied once)</span>
        <input name="signal-id" value={signalId} onInput={(e) => setSignalId((e.target as HTMLInputElement).value)} />
      </label>
      <button type="submit" name="send-signal" disabled={busy || Boolean(data.error) || !signal}>
        {escalation ? "answer" : signal.startsWith("approv") ? "approve" : "send"}
      </button>{" "}
      <span class="muted">{sent}</span>
      <ErrorBox error={error} />
    </form>
  );
}
