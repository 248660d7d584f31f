// Executions, newest first by default (or oldest first), filtered on the server by workflow,
// states and creation time, paged on the server; the page in view is refreshed every few
// seconds so state changes show without a reload (there is no list-watch RPC).
import { useEffect, useState } from "preact/hooks";
import { executions, workflows } from "../api";
import { timestampFromMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { Execution } from "../gen/agentrun/v1/execution_pb";
import { ExecutionOrder } from "../gen/agentrun/v1/execution_service_pb";
import { EXECUTION_STATES, executionState, id, time } from "../format";
import { activeKey, keys, chooseKey } from "../keys";
import { href, setQuery, type Route } from "../router";
import { ErrorBox } from "../ui/ErrorBox";
import { Pager } from "../ui/Pager";
import { Badge, useLoad, usePolling } from "../ui/misc";
import { VirtualList } from "../ui/VirtualList";

export const REFRESH_MS = 3000;

/** The API filter for a workflow and a set of states (docs/grpc-api.md, ListExecutions). */
export function executionFilter(workflow: string, states: string[]): string {
  const clauses = [];
  if (workflow) clauses.push(`workflow = "${workflow.replace(/"/g, "")}"`);
  if (states.length === 1) clauses.push(`state = ${states[0].toUpperCase()}`);
  else if (states.length > 1) clauses.push(`state IN (${states.map((s) => s.toUpperCase()).join(", ")})`);
  return clauses.join(" AND ");
}

/** The creation-time window of ListExecutions from the page's `from` and `to` (datetime-local
 *  strings in the browser's zone, either may be empty): `from` inclusive, `to` exclusive. */
export function timeBounds(from: string, to: string): { createdAfter?: Timestamp; createdBefore?: Timestamp } {
  const out: { createdAfter?: Timestamp; createdBefore?: Timestamp } = {};
  const lo = from ? Date.parse(from) : NaN;
  const hi = to ? Date.parse(to) : NaN;
  if (Number.isFinite(lo)) out.createdAfter = timestampFromMs(lo);
  if (Number.isFinite(hi)) out.createdBefore = timestampFromMs(hi);
  return out;
}

export function Executions({ route }: { route: Route }) {
  const q = route.query;
  const workflow = q.get("workflow") ?? "";
  const states = (q.get("state") ?? "").split(",").filter(Boolean);
  const from = q.get("from") ?? "";
  const to = q.get("to") ?? "";
  const size = Number(q.get("size") ?? "100");
  const oldest = q.get("order") === "oldest";
  const filter = executionFilter(workflow, states);
  // Everything the page tokens are bound to: a change starts again at the first page.
  const listKey = `${filter}|${from}|${to}|${oldest}|${size}`;
  // Tokens of the pages before the one in view: "previous" pops one.
  const [tokens, setTokens] = useState<string[]>([]);
  const token = tokens[tokens.length - 1] ?? "";
  const names = useLoad(() => workflows.listWorkflows({ pageSize: 1000 }), [activeKey()?.key]);
  const page = useLoad(
    () =>
      executions.listExecutions({
        filter,
        pageSize: size,
        pageToken: token,
        order: oldest ? ExecutionOrder.OLDEST_FIRST : ExecutionOrder.NEWEST_FIRST,
        ...timeBounds(from, to),
      }),
    [listKey, token, activeKey()?.key],
  );
  useEffect(() => setTokens([]), [listKey, activeKey()?.key]);
  usePolling(page.reload, REFRESH_MS, [listKey, token]);
  const rows = page.data?.executions ?? [];
  const toggle = (s: string): void =>
    setQuery(route, { state: (states.includes(s) ? states.filter((x) => x !== s) : [...states, s]).join(",") });

  return (
    <section>
      <h1>Executions</h1>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          workflow{" "}
          <select name="workflow" value={workflow} onChange={(e) => setQuery(route, { workflow: (e.target as HTMLSelectElement).value })}>
            <option value="">any</option>
            {(names.data?.workflows ?? []).map((w) => (
              <option value={id(w.name)}>{id(w.name)}</option>
            ))}
          </select>
        </label>
        <label>
          tenant{" "}
          <select name="tenant" value={String(keys.value.indexOf(activeKey()!))} onChange={(e) => chooseKey(Number((e.target as HTMLSelectElement).value))}>
            {keys.value.length ? keys.value.map((k, i) => <option value={String(i)}>{k.tenant}</option>) : <option value="-1">(no API key)</option>}
          </select>
        </label>
        <label>
          created from <input type="datetime-local" step="1" name="created-from" value={from} onChange={(e) => setQuery(route, { from: (e.target as HTMLInputElement).value })} />
        </label>
        <label>
          before <input type="datetime-local" step="1" name="created-before" value={to} onChange={(e) => setQuery(route, { to: (e.target as HTMLInputElement).value })} />
        </label>
        <label>
          order{" "}
          <select name="order" value={oldest ? "oldest" : "newest"} onChange={(e) => setQuery(route, { order: (e.target as HTMLSelectElement).value === "oldest" ? "oldest" : undefined })}>
            <option value="newest">newest first</option>
            <option value="oldest">oldest first</option>
          </select>
        </label>
        <label>
          page{" "}
          <select value={String(size)} onChange={(e) => setQuery(route, { size: (e.target as HTMLSelectElement).value })}>
            {[50, 100, 500, 1000].map((n) => (
              <option value={String(n)}>{n}</option>
            ))}
          </select>
        </label>
        <div class="states">
          {EXECUTION_STATES.map((s) => (
            <label class={`chip state-${s}`}>
              <input type="checkbox" name={`state-${s}`} checked={states.includes(s)} onChange={() => toggle(s)} /> {s}
            </label>
          ))}
        </div>
      </form>
      <ErrorBox error={page.error} />
      <Pager tokens={tokens} next={page.data?.nextPageToken} onChange={setTokens}>
        <span class="muted">
          page {tokens.length + 1} · {rows.length} shown
          {page.loading ? " · loading…" : ""}
        </span>
      </Pager>
      <div class="table-head exec-row">
        <span>execution</span>
        <span>workflow</span>
        <span>state</span>
        <span>created</span>
        <span>ended</span>
      </div>
      <VirtualList
        items={rows}
        rowHeight={30}
        height={Math.min(600, Math.max(rows.length, 1) * 30 + 2)}
        row={(e: Execution) => (
          <a class="exec-row" href={href(`executions/${id(e.name)}`)} data-execution={id(e.name)}>
            <span class="mono">{id(e.name)}</span>
            <span>
              {id(e.workflow)} v{e.workflowVersion}
            </span>
            <span>
              <Badge state={executionState(e.state)} />
            </span>
            <span>{time(e.createTime)}</span>
            <span>{time(e.endTime)}</span>
          </a>
        )}
      />
      {!page.loading && !rows.length && !page.error ? <p class="muted">No executions match.</p> : null}
    </section>
  );
}
