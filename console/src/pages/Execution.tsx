// One execution: its DAG laid out by ELK and coloured live from WatchExecution, the node panel,
// the controls, and tabs for the timeline (GetExecutionTrace), the event log and the data.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { executions, workflows } from "../api";
import type { Execution, ExecutionEvent, ExecutionTrace } from "../gen/agentrun/v1/execution_pb";
import type { WorkflowSpec } from "../gen/agentrun/v1/workflow_pb";
import { ENDED_EXECUTION, executionState, id, json, time } from "../format";
import { GraphView, type NodeStatus } from "../graph/GraphView";
import { afterPaint, elk, layoutInto, type Layout } from "../graph/layout";
import { specGraph } from "../graph/model";
import { applyEvent, fromNodes, statuses, type LiveState } from "../live";
import { href, setQuery, type Route } from "../router";
import { ErrorBox } from "../ui/ErrorBox";
import { Badge, Json } from "../ui/misc";
import { Controls } from "./Actions";
import { EventLog } from "./EventLog";
import { NodePanel } from "./NodePanel";
import { Timeline } from "./Timeline";

type WatchStatus = "connecting" | "live" | "reconnecting" | "ended";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Streams the events after `after`, reconnecting from the last one seen until the execution
 * ends (the stream closes after the terminal event).
 */
async function watch(
  name: string,
  after: bigint,
  signal: AbortSignal,
  onEvents: (evs: ExecutionEvent[]) => void,
  onStatus: (s: WatchStatus) => void,
): Promise<void> {
  let seq = after;
  let ended = false;
  let buffer: ExecutionEvent[] = [];
  let scheduled = false;
  const flush = (): void => {
    scheduled = false;
    const evs = buffer;
    buffer = [];
    if (evs.length) onEvents(evs);
  };
  while (!signal.aborted && !ended) {
    try {
      const stream = executions.watchExecution({ name, afterSequence: seq }, { signal });
      onStatus("live");
      for await (const res of stream) {
        const ev = res.event;
        if (!ev) continue;
        seq = ev.sequence;
        if (ev.type.startsWith("execution.") && ENDED_EXECUTION.has(ev.type.slice(10))) ended = true;
        buffer.push(ev);
        if (!scheduled) {
          scheduled = true;
          requestAnimationFrame(flush);
        }
      }
      if (!ended) await sleep(500);
    } catch {
      if (signal.aborted) return;
      onStatus("reconnecting");
      await sleep(1000);
    }
  }
  flush();
  if (!signal.aborted) onStatus("ended");
}

export function ExecutionPage({ route }: { route: Route }) {
  const execId = route.parts[1];
  const name = `executions/${execId}`;
  const tab = route.query.get("tab") ?? "timeline";
  const selected = route.query.get("node") ?? undefined;
  const [execution, setExecution] = useState<Execution>();
  const [spec, setSpec] = useState<WorkflowSpec>();
  const [graph, setGraph] = useState<Layout>();
  const [live, setLive] = useState<LiveState>();
  const [events, setEvents] = useState<ExecutionEvent[]>([]);
  const [trace, setTrace] = useState<ExecutionTrace>();
  const [error, setError] = useState<unknown>();
  const [watchStatus, setWatchStatus] = useState<WatchStatus>("connecting");
  const [traceTick, setTraceTick] = useState(0);
  const prevStatus = useRef<Map<string, NodeStatus>>();

  useEffect(() => {
    elk(); // the layout worker loads while the API answers
    const ac = new AbortController();
    setExecution(undefined);
    setGraph(undefined);
    setLive(undefined);
    setEvents([]);
    setTrace(undefined);
    setError(undefined);
    void (async () => {
      try {
        const got = await executions.getExecution({ name, includeNodes: true });
        const ex = got.execution!;
        performance.mark("agentrun:execution-loaded");
        setExecution(ex);
        setLive(fromNodes(got.nodes, ex.lastSequence));
        // An execution that already ended has no events to come.
        if (ENDED_EXECUTION.has(executionState(ex.state))) setWatchStatus("ended");
        else void watch(
          name,
          ex.lastSequence,
          ac.signal,
          (evs) => {
            setLive((l) => evs.reduce(applyEvent, l ?? fromNodes([], 0n)));
            setEvents((old) => [...old, ...evs]);
            if (evs.some((e) => e.type.startsWith("execution."))) {
              void executions.getExecution({ name }).then((r) => setExecution(r.execution));
            }
            setTraceTick((t) => t + 1);
          },
          setWatchStatus,
        );
        const wf = await workflows.getWorkflow({ name: ex.workflow, version: ex.workflowVersion });
        const s = wf.workflow!.spec!;
        performance.mark("agentrun:workflow-loaded");
        setSpec(s);
        await layoutInto(`${ex.workflow}@${ex.workflowVersion}`, specGraph(s), (l) => !ac.signal.aborted && setGraph(l));
      } catch (e) {
        if (!ac.signal.aborted) setError(e);
      }
    })();
    return () => ac.abort();
  }, [name]);

  // The trace is recomputed by the server: fetched on load and at most every 1.5 s while
  // events arrive.
  // The first fetch waits for the graph to be on screen: the timeline is below it.
  useEffect(() => {
    if (!execution || !graph) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let on = true;
    void (traceTick ? Promise.resolve() : afterPaint()).then(() => {
      if (!on) return;
      timer = setTimeout(() => {
        executions.getExecutionTrace({ name }).then((r) => setTrace(r.trace), setError);
      }, traceTick ? 1500 : 0);
    });
    return () => {
      on = false;
      clearTimeout(timer);
    };
  }, [execution?.name, Boolean(graph), traceTick]);

  const status = useMemo(() => {
    if (!live) return undefined;
    const s = statuses(live, prevStatus.current);
    prevStatus.current = s;
    return s;
  }, [live]);
  const select = (nodeId: string): void => setQuery(route, { node: nodeId });
  const focus = useMemo(() => {
    if (!live) return undefined;
    for (const want of ["waiting", "escalated", "failed", "running"]) {
      for (const [k, v] of live.nodes) if (v.state === want && !k.includes("[")) return k;
    }
    return undefined;
  }, [graph]);

  if (error && !execution) return <ErrorBox error={error} />;
  if (!execution || !live) return <p class="muted">loading {execId}…</p>;
  const state = executionState(execution.state);
  return (
    <section class="execution" data-execution-state={state}>
      <header class="exec-head">
        <h1>
          <span class="mono">{execId}</span> <Badge state={state} />
        </h1>
        <div class="muted">
          <a href={href(`workflows/${id(execution.workflow)}`, { version: String(execution.workflowVersion) })}>
            {id(execution.workflow)} v{execution.workflowVersion}
          </a>{" "}
          · created {time(execution.createTime)}
          {execution.endTime ? ` · ended ${time(execution.endTime)}` : ""}
          {execution.parent ? (
            <>
              {" "}
              · child of <a href={href(`executions/${id(execution.parent)}`)}>{id(execution.parent)}</a>
            </>
          ) : null}
          {execution.labels.rerun_of ? (
            <>
              {" "}
              · rerun of <a href={href(`executions/${id(execution.labels.rerun_of)}`)}>{id(execution.labels.rerun_of)}</a>
            </>
          ) : null}
          {state === "waiting" ? (
            <>
              {" "}
              · <a class="execution-waits" href={href("waits", { execution: execId })}>its waits</a>
            </>
          ) : null}{" "}
          {watchStatus === "ended" ? null : (
            <>
              · <span class={`watch watch-${watchStatus}`}>{watchStatus === "live" ? "● live" : watchStatus}</span>
            </>
          )}
        </div>
        <Controls
          execution={execution}
          nodeIds={spec?.nodes.map((n) => n.id) ?? []}
          selected={selected}
          onChanged={setExecution}
        />
        {execution.error ? (
          <div class="error-box exec-error">
            <b>{execution.error.type}</b>
            {execution.error.nodeId ? (
              <>
                {" at "}
                <a href="#" onClick={(e) => (e.preventDefault(), select(execution.error!.nodeId))}>
                  {execution.error.nodeId}
                </a>
              </>
            ) : null}
            : <span class="message">{execution.error.message}</span>
          </div>
        ) : null}
        <ErrorBox error={error} />
      </header>
      <div class="exec-body">
        {graph ? (
          <GraphView layout={graph} status={status} selected={selected?.replace(/\[.*$/, "")} onSelect={select} focus={focus} />
        ) : (
          <div class="graph muted">laying out the graph…</div>
        )}
        {selected ? (
          <NodePanel
            nodeId={selected}
            live={live}
            trace={trace}
            spec={spec}
            execution={execution}
            onSelect={select}
            onChanged={setExecution}
          />
        ) : (
          <aside class="node-panel muted">Click a node for its input, output, error and attempts.</aside>
        )}
      </div>
      <nav class="tabs">
        {["timeline", "events", "data"].map((t) => (
          <a href="#" class={t === tab ? "active" : ""} onClick={(e) => (e.preventDefault(), setQuery(route, { tab: t }))}>
            {t}
          </a>
        ))}
      </nav>
      {tab === "timeline" ? (
        trace ? <Timeline trace={trace} width={Math.max(document.body.clientWidth - 40, 600)} onSelect={select} /> : <p class="muted">loading the trace…</p>
      ) : null}
      {tab === "events" ? <StoredEvents name={name} live={events} onSelect={select} /> : null}
      {tab === "data" ? (
        <div class="data-grid">
          <div>
            <h3>input</h3>
            <Json value={json(execution.input)} />
          </div>
          <div>
            <h3>output</h3>
            <Json value={json(execution.output)} />
          </div>
          <div>
            <h3>vars</h3>
            <Json value={execution.vars} />
          </div>
        </div>
      ) : null}
    </section>
  );
}

/** The stored log (all pages), followed by the live events the watch delivered since. */
function StoredEvents({ name, live, onSelect }: { name: string; live: ExecutionEvent[]; onSelect: (id: string) => void }) {
  // Undefined until the first page arrives, so live rows never show before older ones.
  const [stored, setStored] = useState<ExecutionEvent[]>();
  const [error, setError] = useState<unknown>();
  useEffect(() => {
    let on = true;
    void (async () => {
      const all: ExecutionEvent[] = [];
      let token = "";
      try {
        do {
          const page = await executions.listExecutionEvents({ parent: name, pageSize: 1000, pageToken: token });
          all.push(...page.events);
          token = page.nextPageToken;
          if (on) setStored([...all]);
        } while (token && on);
      } catch (e) {
        if (on) setError(e);
      }
    })();
    return () => {
      on = false;
    };
  }, [name]);
  const merged = useMemo(() => {
    if (!stored) return undefined;
    const last = stored.length ? stored[stored.length - 1].sequence : 0n;
    return [...stored, ...live.filter((e) => e.sequence > last)];
  }, [stored, live]);
  return (
    <>
      <ErrorBox error={error} />
      {merged ? <EventLog events={merged} onSelect={onSelect} /> : <p class="muted">loading the event log…</p>}
    </>
  );
}
