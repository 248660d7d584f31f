// Remote workers connected to any replica for this tenant (WorkerService.ListWorkers): state,
// tools with their schemas, labels, load (calls held / slots), replica and last heartbeat.
// Fetched again every few seconds, as the other lists.
import { useState } from "preact/hooks";
import { workers } from "../api";
import { Worker_State, type Worker } from "../gen/agentrun/v1/worker_service_pb";
import { enumName, id, time } from "../format";
import { activeKey } from "../keys";
import { ErrorBox } from "../ui/ErrorBox";
import { Json, useLoad, usePolling } from "../ui/misc";
import { REFRESH_MS } from "./Executions";

/** The ListWorkers filter for a tool name (empty: every worker). */
export function workerFilter(tool: string): string {
  const name = tool.trim().replace(/"/g, "");
  return name ? `tool = "${name}"` : "";
}

function Load({ worker }: { worker: Worker }) {
  const max = Math.max(worker.maxConcurrentCalls, 1);
  const pct = Math.min(100, Math.round((100 * worker.activeCalls) / max));
  return (
    <span class="load" title={`${worker.activeCalls} of ${worker.maxConcurrentCalls} slots in use`}>
      <span class="load-bar">
        <span style={{ width: `${pct}%` }} />
      </span>{" "}
      <span class="load-text">
        {worker.activeCalls}/{worker.maxConcurrentCalls}
      </span>
    </span>
  );
}

export function WorkersPage() {
  const [tool, setTool] = useState("");
  const filter = workerFilter(tool);
  const list = useLoad(async () => {
    const all: Worker[] = [];
    let token = "";
    do {
      const page = await workers.listWorkers({ pageSize: 1000, pageToken: token, filter });
      all.push(...page.workers);
      token = page.nextPageToken;
    } while (token);
    return all;
  }, [filter, activeKey()?.key]);
  usePolling(list.reload, REFRESH_MS, [filter]);
  const rows = list.data ?? [];
  return (
    <section>
      <h1>Workers</h1>
      <p class="muted">
        Processes serving tools over <code>WorkerService.Connect</code>, on any replica (docs/workers.md). Load is the calls a worker holds
        over its slots.
      </p>
      <label>
        serving tool <input name="worker-tool" value={tool} placeholder="billing.refund" onInput={(e) => setTool((e.target as HTMLInputElement).value)} />
      </label>
      <ErrorBox error={list.error} />
      <table class="list workers">
        <thead>
          <tr>
            <th>worker</th>
            <th>state</th>
            <th>load</th>
            <th>tools</th>
            <th>labels</th>
            <th>version</th>
            <th>replica</th>
            <th>connected</th>
            <th>last heartbeat</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((w) => (
            <tr data-worker={id(w.name)} key={w.name}>
              <td>
                <span class="mono">{id(w.name)}</span>
                {w.displayName ? <div class="muted">{w.displayName}</div> : null}
              </td>
              <td>
                <span class={`badge worker-${enumName(Worker_State, w.state)}`}>{enumName(Worker_State, w.state)}</span>
              </td>
              <td>
                <Load worker={w} />
              </td>
              <td>
                {w.tools.map((t) => (
                  <details data-tool={t.name}>
                    <summary class="mono">{t.name}</summary>
                    {t.description ? <div>{t.description}</div> : null}
                    args: <Json value={t.argsSchema} empty="any" />
                    {t.resultSchema ? (
                      <>
                        result: <Json value={t.resultSchema} />
                      </>
                    ) : null}
                  </details>
                ))}
              </td>
              <td class="mono">
                {Object.entries(w.labels)
                  .map(([k, v]) => `${k}=${v}`)
                  .join(", ")}
              </td>
              <td>{w.version}</td>
              <td class="mono">{w.replica}</td>
              <td>{time(w.connectTime)}</td>
              <td>{time(w.heartbeatTime)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {!list.loading && !rows.length && !list.error ? <p class="muted">No workers connected.</p> : null}
    </section>
  );
}
