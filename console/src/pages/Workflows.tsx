// Workflows: the list (latest version of each), one workflow's versions with the graph of
// each and a start form, and the validate-as-you-type editor.
import { fromJson, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { useEffect, useState } from "preact/hooks";
import { executions, machines, workflows } from "../api";
import { WorkflowSpecSchema, WorkflowSpec_Mode } from "../gen/agentrun/v1/workflow_pb";
import type { ValidateWorkflowResponse } from "../gen/agentrun/v1/workflow_service_pb";
import { id, pretty, time } from "../format";
import { GraphView } from "../graph/GraphView";
import { layoutInto, type Layout } from "../graph/layout";
import { specGraph } from "../graph/model";
import { go, href, setQuery, type Route } from "../router";
import { ErrorBox } from "../ui/ErrorBox";
import { Pager } from "../ui/Pager";
import { JsonField, parseJson, useLoad } from "../ui/misc";

export function WorkflowList() {
  const [tokens, setTokens] = useState<string[]>([]);
  const page = useLoad(() => workflows.listWorkflows({ pageSize: 200, pageToken: tokens[tokens.length - 1] ?? "" }), [tokens]);
  return (
    <section>
      <h1>
        Workflows <a class="button" href={href("validate")}>new / validate</a>
      </h1>
      <ErrorBox error={page.error} />
      <table class="list">
        <thead>
          <tr>
            <th>name</th>
            <th>latest</th>
            <th>mode</th>
            <th>nodes / states</th>
            <th>created</th>
            <th>description</th>
          </tr>
        </thead>
        <tbody>
          {(page.data?.workflows ?? []).map((w) => (
            <tr>
              <td>
                <a href={href(`workflows/${id(w.name)}`)}>{id(w.name)}</a>
              </td>
              <td>v{w.version}</td>
              <td>{w.spec?.mode === WorkflowSpec_Mode.STATE_MACHINE ? "state machine" : "dag"}</td>
              <td>{w.spec?.mode === WorkflowSpec_Mode.STATE_MACHINE ? Object.keys(w.spec.states).length : w.spec?.nodes.length}</td>
              <td>{time(w.createTime)}</td>
              <td>{w.description || w.spec?.description}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <Pager tokens={tokens} next={page.data?.nextPageToken} onChange={setTokens} />
    </section>
  );
}

export function WorkflowPage({ route }: { route: Route }) {
  const name = route.parts[1];
  const latest = useLoad(() => workflows.getWorkflow({ name }), [name]);
  const latestVersion = latest.data?.workflow?.version ?? 0;
  const version = Number(route.query.get("version") ?? "0") || latestVersion;
  const wf = useLoad(() => (version ? workflows.getWorkflow({ name, version }) : Promise.resolve(undefined)), [name, version]);
  const [graph, setGraph] = useState<Layout>();
  const [input, setInput] = useState("{}");
  const [startError, setStartError] = useState<unknown>();
  const spec = wf.data?.workflow?.spec;
  const machine = spec?.mode === WorkflowSpec_Mode.STATE_MACHINE;
  useEffect(() => {
    let on = true;
    setGraph(undefined);
    if (spec) void layoutInto(`workflows/${name}@${version}`, specGraph(spec), (l) => on && setGraph(l));
    return () => {
      on = false;
    };
  }, [spec]);
  const start = async (e: Event): Promise<void> => {
    e.preventDefault();
    const parsed = parseJson(input);
    if (parsed.error) return;
    setStartError(undefined);
    try {
      const value = fromJson(ValueSchema, parsed.value ?? null);
      if (machine) {
        const res = await machines.createInstance({ workflow: name, version, input: value });
        go(`instances/${id(res.instance!.name)}`);
      } else {
        const res = await executions.startExecution({ workflow: name, version, input: value });
        go(`executions/${id(res.execution!.name)}`);
      }
    } catch (err) {
      setStartError(err);
    }
  };
  return (
    <section>
      <h1>
        {name}{" "}
        <select value={String(version)} onChange={(e) => setQuery(route, { version: (e.target as HTMLSelectElement).value })}>
          {Array.from({ length: latestVersion }, (_, i) => latestVersion - i).map((v) => (
            <option value={String(v)}>v{v}{v === latestVersion ? " (latest)" : ""}</option>
          ))}
        </select>{" "}
        <a class="button" href={href(machine ? "instances" : "executions", { workflow: name })}>
          {machine ? "instances" : "executions"}
        </a>
      </h1>
      <ErrorBox error={latest.error ?? wf.error} />
      {wf.data?.workflow ? <p class="muted">created {time(wf.data.workflow.createTime)} · {spec?.description}</p> : null}
      {graph ? <GraphView layout={graph} /> : <div class="graph muted">laying out…</div>}
      <form class="start-form" onSubmit={start}>
        <JsonField label={machine ? "input of a new instance (JSON)" : "input of a new execution (JSON)"} name="start-input" value={input} onInput={setInput} rows={3} />
        <button type="submit" name="start">{machine ? "create instance" : "start execution"}</button>
        <ErrorBox error={startError} />
      </form>
      <details>
        <summary>definition (JSON)</summary>
        <pre class="json">{spec ? pretty(toJson(WorkflowSpecSchema, spec)) : ""}</pre>
      </details>
    </section>
  );
}

const EXAMPLE = `name: hello
nodes:
  - id: greet
    pass: {value: "\${{ 'hello ' + input.who }}"}
`;

/** Pasted YAML or JSON, checked by ValidateWorkflow 300 ms after each edit. */
export function ValidatePage() {
  const [source, setSource] = useState(() => sessionStorage.getItem("agentrun.console.draft") ?? EXAMPLE);
  const [result, setResult] = useState<ValidateWorkflowResponse>();
  const [error, setError] = useState<unknown>();
  const [created, setCreated] = useState<string>();
  useEffect(() => {
    sessionStorage.setItem("agentrun.console.draft", source);
    let on = true;
    const timer = setTimeout(() => {
      workflows.validateWorkflow({ definition: { case: "source", value: source } }).then(
        (r) => on && (setResult(r), setError(undefined)),
        (e: unknown) => on && (setError(e), setResult(undefined)),
      );
    }, 300);
    return () => {
      on = false;
      clearTimeout(timer);
    };
  }, [source]);
  const create = async (): Promise<void> => {
    setError(undefined);
    try {
      const res = await workflows.createWorkflow({ definition: { case: "source", value: source } });
      setCreated(id(res.workflow!.name));
      go(`workflows/${id(res.workflow!.name)}`);
    } catch (e) {
      setError(e);
    }
  };
  return (
    <section class="validate">
      <h1>Validate a workflow</h1>
      <div class="validate-grid">
        <textarea name="source" spellcheck={false} value={source} onInput={(e) => setSource((e.target as HTMLTextAreaElement).value)} />
        <div>
          {result ? (
            <div class={result.valid ? "ok" : "bad"} data-valid={String(result.valid)}>
              <b>{result.valid ? "valid" : "invalid"}</b>
              <ul class="diagnostics">
                {result.errors.map((d) => (
                  <li class="diag-error">
                    <code>{d.field || "(document)"}</code> {d.description}
                  </li>
                ))}
                {result.warnings.map((d) => (
                  <li class="diag-warning">
                    warning <code>{d.field || "(document)"}</code> {d.description}
                  </li>
                ))}
              </ul>
              {result.stages.length ? (
                <ol class="stages">
                  {result.stages.map((s) => (
                    <li>{s.nodeIds.join(", ")}</li>
                  ))}
                </ol>
              ) : null}
              <button type="button" name="create" disabled={!result.valid} onClick={create}>
                store as a new workflow (version)
              </button>
              {created ? <span> stored {created}</span> : null}
            </div>
          ) : (
            <p class="muted">checking…</p>
          )}
          <ErrorBox error={error} />
        </div>
      </div>
    </section>
  );
}
