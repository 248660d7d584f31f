// One node of an execution: state, attempts (from the trace), input, output, error, skip
// reason, its map items, and the signal form when it waits.
import type { Execution, ExecutionTrace } from "../gen/agentrun/v1/execution_pb";
import type { WorkflowSpec } from "../gen/agentrun/v1/workflow_pb";
import { json, nodeState, ms, span, time } from "../format";
import { itemsOf, type LiveState } from "../live";
import { waitedSignal } from "../signals";
import { Badge, Json } from "../ui/misc";
import { SignalForm } from "./Actions";
import { NodeWaitForm } from "./Waits";

export function NodePanel(props: {
  nodeId: string;
  live: LiveState;
  trace?: ExecutionTrace;
  spec?: WorkflowSpec;
  execution: Execution;
  onSelect: (id: string) => void;
  onChanged: (e: Execution) => void;
}) {
  const { nodeId, live, trace, spec, execution } = props;
  const view = live.nodes.get(nodeId);
  const traced = trace?.nodes.find((n) => n.nodeId === nodeId);
  const items = itemsOf(live, nodeId);
  const related = trace?.nodes.filter((n) => n.nodeId.startsWith(`${nodeId}.`)) ?? [];
  const state = view?.state ?? (traced ? nodeState(traced.state) : "pending");
  const signal = spec ? waitedSignal(spec, nodeId, state) : undefined;
  return (
    <aside class="node-panel" data-panel-node={nodeId}>
      <h2>
        {nodeId} <Badge state={state} />
      </h2>
      {view && view.attempt > 1 ? <p>attempt {view.attempt}</p> : null}
      {view?.skipReason ? <p>skipped: {view.skipReason}</p> : null}
      {(state === "waiting" || state === "escalated") && signal ? (
        state === "waiting" ? (
          <NodeWaitForm
            execution={execution}
            nodeKey={nodeId}
            onChanged={props.onChanged}
            fallback={<SignalForm execution={execution} spec={spec} nodeId={nodeId} signal={signal} onChanged={props.onChanged} key={`${nodeId}:${signal}`} />}
          />
        ) : (
          <SignalForm execution={execution} spec={spec} nodeId={nodeId} signal={signal} onChanged={props.onChanged} key={`${nodeId}:${signal}`} />
        )
      ) : null}
      {view?.error ? (
        <div class="node-error">
          <b>{view.error.type}</b>: <span class="message">{view.error.message}</span>
          {view.error.details ? <Json value={view.error.details} empty="" /> : null}
        </div>
      ) : null}
      {traced?.attempts.length ? (
        <table class="attempts">
          <thead>
            <tr>
              <th>#</th>
              <th>started</th>
              <th>took</th>
              <th>outcome</th>
              <th>error</th>
            </tr>
          </thead>
          <tbody>
            {traced.attempts.map((a) => (
              <tr>
                <td>{a.attempt}</td>
                <td>{time(a.startTime)}</td>
                <td>{a.endTime ? span((ms(a.endTime) ?? 0) - (ms(a.startTime) ?? 0)) : "running"}</td>
                <td>{a.endTime ? nodeState(a.outcome) : ""}</td>
                <td>{a.error ? `${a.error.type}: ${a.error.message}` : ""}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      {related.length ? (
        <p>
          {related.map((r) => (
            <a href="#" onClick={(e) => (e.preventDefault(), props.onSelect(r.nodeId))}>
              {r.nodeId} ({nodeState(r.state)}){" "}
            </a>
          ))}
        </p>
      ) : null}
      {items.length ? (
        <div class="items">
          <h3>map items ({items.length})</h3>
          <div class="item-grid">
            {items.map((it) => (
              <a href="#" class={`item state-${it.state}`} title={`${it.id}: ${it.state}`} onClick={(e) => (e.preventDefault(), props.onSelect(it.id))}>
                {it.id.slice(it.id.indexOf("["))}
                {it.attempt > 1 ? `×${it.attempt}` : ""}
              </a>
            ))}
          </div>
        </div>
      ) : null}
      <h3>input</h3>
      <Json value={json(view?.input)} />
      <h3>output</h3>
      <Json value={json(view?.output)} />
    </aside>
  );
}
