// State machine instances: the list (filtered, paged on the server) and one instance with its
// machine's graph (current state highlighted), its history kept live by WatchInstance, the
// events its state accepts with a send form, and cancel.
import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { useEffect, useMemo, useState } from "preact/hooks";
import { machines, workflows } from "../api";
import {
  InstanceTransition_Kind,
  StateMachineInstance_State,
  type InstanceTransition,
  type StateMachineInstance,
} from "../gen/agentrun/v1/state_machine_pb";
import { enumName, id, instanceState, json, time } from "../format";
import { GraphView, type NodeStatus } from "../graph/GraphView";
import { layoutInto, type Layout } from "../graph/layout";
import { machineGraph } from "../graph/model";
import { href, setQuery, type Route } from "../router";
import { ErrorBox } from "../ui/ErrorBox";
import { Pager } from "../ui/Pager";
import { Badge, Json, JsonField, parseJson, useLoad, usePolling } from "../ui/misc";
import { VirtualList } from "../ui/VirtualList";
import { REFRESH_MS } from "./Executions";

const INSTANCE_STATES = ["active", "completed", "failed", "cancelled"];

export function instanceFilter(workflow: string, state: string, current: string): string {
  const clauses = [];
  if (workflow) clauses.push(`workflow = "${workflow.replace(/"/g, "")}"`);
  if (state) clauses.push(`state = ${state.toUpperCase()}`);
  if (current) clauses.push(`current_state = "${current.replace(/"/g, "")}"`);
  return clauses.join(" AND ");
}

export function InstanceList({ route }: { route: Route }) {
  const q = route.query;
  const filter = instanceFilter(q.get("workflow") ?? "", q.get("state") ?? "", q.get("current") ?? "");
  const [tokens, setTokens] = useState<string[]>([]);
  const page = useLoad(() => machines.listInstances({ filter, pageSize: 200, pageToken: tokens[tokens.length - 1] ?? "" }), [filter, tokens]);
  useEffect(() => setTokens([]), [filter]);
  usePolling(page.reload, REFRESH_MS, [filter, tokens]);
  const field = (key: string) => (e: Event) => setQuery(route, { [key]: (e.target as HTMLInputElement).value });
  const rows = page.data?.instances ?? [];
  return (
    <section>
      <h1>State machine instances</h1>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <label>workflow <input name="workflow" value={q.get("workflow") ?? ""} onChange={field("workflow")} /></label>
        <label>
          state{" "}
          <select name="state" value={q.get("state") ?? ""} onChange={field("state")}>
            <option value="">any</option>
            {INSTANCE_STATES.map((s) => <option value={s}>{s}</option>)}
          </select>
        </label>
        <label>current state <input name="current" value={q.get("current") ?? ""} onChange={field("current")} /></label>
      </form>
      <ErrorBox error={page.error} />
      <div class="table-head inst-row"><span>instance</span><span>workflow</span><span>state</span><span>current</span><span>updated</span></div>
      <VirtualList
        items={rows}
        rowHeight={30}
        height={Math.min(600, Math.max(rows.length, 1) * 30 + 2)}
        row={(i: StateMachineInstance) => (
          <a class="inst-row" href={href(`instances/${id(i.name)}`)}>
            <span class="mono">{id(i.name)}</span>
            <span>{id(i.workflow)} v{i.workflowVersion}</span>
            <span><Badge state={instanceState(i.state)} /></span>
            <span>{i.currentState}</span>
            <span>{time(i.updateTime)}</span>
          </a>
        )}
      />
      <Pager tokens={tokens} next={page.data?.nextPageToken} onChange={setTokens} />
    </section>
  );
}

export function InstancePage({ route }: { route: Route }) {
  const name = `instances/${route.parts[1]}`;
  const [instance, setInstance] = useState<StateMachineInstance>();
  const [graph, setGraph] = useState<Layout>();
  const [history, setHistory] = useState<InstanceTransition[]>([]);
  const [error, setError] = useState<unknown>();
  const [tick, setTick] = useState(0);
  useEffect(() => {
    const ac = new AbortController();
    setHistory([]);
    void (async () => {
      try {
        const got = (await machines.getInstance({ name })).instance!;
        setInstance(got);
        const wf = await workflows.getWorkflow({ name: got.workflow, version: got.workflowVersion });
        void layoutInto(`${got.workflow}@${got.workflowVersion}`, machineGraph(wf.workflow!.spec!), (l) => !ac.signal.aborted && setGraph(l));
        const all: InstanceTransition[] = [];
        let token = "";
        do {
          const page = await machines.listInstanceHistory({ parent: name, pageSize: 1000, pageToken: token });
          all.push(...page.transitions);
          token = page.nextPageToken;
        } while (token);
        setHistory(all);
        let seq = all.length ? all[all.length - 1].sequence : 0n;
        while (!ac.signal.aborted) {
          try {
            for await (const res of machines.watchInstance({ name, afterSequence: seq }, { signal: ac.signal })) {
              const t = res.transition!;
              seq = t.sequence;
              setHistory((h) => [...h, t]);
              setTick((x) => x + 1);
            }
            break;
          } catch {
            if (ac.signal.aborted) return;
            await new Promise((r) => setTimeout(r, 1000));
          }
        }
      } catch (e) {
        if (!ac.signal.aborted) setError(e);
      }
    })();
    return () => ac.abort();
  }, [name]);
  useEffect(() => {
    if (tick) void machines.getInstance({ name }).then((r) => setInstance(r.instance), setError);
  }, [tick]);
  const status = useMemo(() => {
    const m = new Map<string, NodeStatus>();
    if (instance) m.set(instance.currentState, { state: instanceState(instance.state) === "active" ? "current" : instanceState(instance.state), badge: "current" });
    return m;
  }, [instance?.currentState, instance?.state]);
  if (error && !instance) return <ErrorBox error={error} />;
  if (!instance) return <p class="muted">loading…</p>;
  return (
    <section>
      <h1>
        <span class="mono">{id(instance.name)}</span> <Badge state={instanceState(instance.state)} /> in <code data-current-state={instance.currentState}>{instance.currentState}</code>
      </h1>
      <p class="muted">
        <a href={href(`workflows/${id(instance.workflow)}`, { version: String(instance.workflowVersion) })}>{id(instance.workflow)} v{instance.workflowVersion}</a> · created {time(instance.createTime)}
        {instance.invokedExecution ? <> · invoked <a href={href(`executions/${id(instance.invokedExecution)}`)}>{id(instance.invokedExecution)}</a></> : null}
      </p>
      {instance.error ? <div class="error-box"><b>{instance.error.type}</b> in {instance.error.state}: {instance.error.message}</div> : null}
      <ErrorBox error={error} />
      <div class="exec-body">
        {graph ? <GraphView layout={graph} status={status} selected={instance.currentState} /> : <div class="graph muted">laying out…</div>}
        <aside class="node-panel">
          <SendEvent instance={instance} onSent={(i) => (setInstance(i), setTick((x) => x + 1))} key={`${instance.currentState}:${String(instance.lastSequence)}`} />
          <h3>data</h3>
          <Json value={instance.data} />
        </aside>
      </div>
      <h2>History</h2>
      <VirtualList
        items={history}
        rowHeight={26}
        height={Math.min(400, history.length * 26 + 2)}
        follow
        row={(t: InstanceTransition) => (
          <div class="hist-row" title={t.error ? `${t.error.type}: ${t.error.message}` : JSON.stringify(json(t.eventData) ?? null)}>
            <span class="mono">#{String(t.sequence)}</span>
            <span class="muted">{time(t.time)}</span>
            <span>{enumName(InstanceTransition_Kind, t.kind).replace(/^kind_/, "")}</span>
            <span><b>{t.event}</b></span>
            <span>{t.fromState} → {t.toState}</span>
            <span>{t.actions.map((a) => `${a.phase}:${a.kind}${a.succeeded ? "" : " ✗"}`).join(" ")}{t.error ? ` ✗ ${t.error.message}` : ""}</span>
          </div>
        )}
      />
    </section>
  );
}

function SendEvent({ instance, onSent }: { instance: StateMachineInstance; onSent: (i: StateMachineInstance) => void }) {
  const available = useLoad(() => machines.getAvailableEvents({ name: instance.name }), [instance.name, instance.lastSequence]);
  const [event, setEvent] = useState("");
  const [data, setData] = useState("{}");
  const [error, setError] = useState<unknown>();
  const events = available.data?.events ?? [];
  const chosen = event || events[0] || "";
  const active = instance.state === StateMachineInstance_State.ACTIVE;
  const send = async (e: Event): Promise<void> => {
    e.preventDefault();
    const parsed = parseJson(data);
    if (parsed.error || !chosen) return;
    setError(undefined);
    try {
      const res = await machines.sendEvent({ name: instance.name, event: chosen, data: fromJson(ValueSchema, parsed.value ?? null) });
      onSent(res.instance!);
    } catch (err) {
      setError(err);
    }
  };
  const cancel = async (): Promise<void> => {
    setError(undefined);
    try {
      onSent((await machines.cancelInstance({ name: instance.name, reason: "cancelled from the console" })).instance!);
    } catch (err) {
      setError(err);
    }
  };
  return (
    <form class="send-event" onSubmit={send}>
      <h3>Send an event</h3>
      {events.length ? (
        <label class="field">
          <span>event (accepted in {available.data?.currentState})</span>
          <select name="event" value={chosen} onChange={(e) => setEvent((e.target as HTMLSelectElement).value)}>
            {events.map((ev) => <option value={ev}>{ev}</option>)}
          </select>
        </label>
      ) : (
        <p class="muted">{active ? "this state accepts no events" : "the instance ended"}</p>
      )}
      <JsonField label="data (JSON)" name="event-data" value={data} onInput={setData} rows={3} />
      <button type="submit" name="send-event" disabled={!events.length}>send</button>{" "}
      <button type="button" name="cancel-instance" disabled={!active} onClick={() => confirm("Cancel this instance?") && void cancel()}>cancel instance</button>
      <ErrorBox error={error ?? available.error} />
    </form>
  );
}
