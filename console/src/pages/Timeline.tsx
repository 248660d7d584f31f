// Gantt-like timeline from GetExecutionTrace: one row per node (map items, compensations and
// fallbacks included), one bar per attempt coloured by its outcome, the scheduler queue wait
// drawn lighter before it, retry delays as gaps. Rows are virtualised.
import type { ExecutionTrace, NodeTrace } from "../gen/agentrun/v1/execution_pb";
import { ms, nodeState, seconds, span } from "../format";
import { VirtualList } from "../ui/VirtualList";

const ROW = 24;
const LABEL = 220;

export function Timeline({ trace, width, onSelect }: { trace: ExecutionTrace; width: number; onSelect: (id: string) => void }) {
  const ex = trace.execution;
  const starts = trace.nodes.flatMap((n) => n.attempts.map((a) => ms(a.startTime) ?? Infinity));
  const t0 = Math.min(ms(ex?.startTime) ?? Infinity, ms(ex?.createTime) ?? Infinity, ...starts);
  const now = Date.now();
  const ends = trace.nodes.flatMap((n) => n.attempts.map((a) => ms(a.endTime) ?? now));
  const t1 = Math.max(ms(ex?.endTime) ?? 0, ...ends, t0 + 1);
  const plot = Math.max(width - LABEL - 20, 100);
  const x = (t: number): number => ((t - t0) / (t1 - t0)) * plot;
  const row = (n: NodeTrace) => (
    <div class="tl-row" onClick={() => onSelect(n.nodeId)} data-trace-node={n.nodeId}>
      <span class="tl-label" style={{ width: `${LABEL}px` }} title={n.nodeId}>
        {n.nodeId} <span class={`dot state-${nodeState(n.state)}`} />
      </span>
      <span class="tl-plot" style={{ width: `${plot}px` }}>
        {n.attempts.map((a) => {
          const start = ms(a.startTime);
          if (start === undefined) return null;
          const end = ms(a.endTime) ?? now;
          const queue = seconds(a.queueDuration) * 1000;
          const title = `${n.nodeId} attempt ${a.attempt}: ${nodeState(a.outcome) || "running"}, ${span(end - start)}${
            queue ? `, queued ${span(queue)}` : ""
          }${a.rateLimited ? ", rate limited" : ""}${a.error ? `\n${a.error.type}: ${a.error.message}` : ""}`;
          return (
            <>
              {queue ? (
                <span class="tl-queue" style={{ left: `${x(start - queue)}px`, width: `${Math.max(x(start) - x(start - queue), 1)}px` }} />
              ) : null}
              <span
                class={`tl-bar state-${a.endTime ? nodeState(a.outcome) : "running"}`}
                style={{ left: `${x(start)}px`, width: `${Math.max(x(end) - x(start), 2)}px` }}
                title={title}
              >
                {a.attempt > 1 ? a.attempt : ""}
              </span>
            </>
          );
        })}
      </span>
    </div>
  );
  return (
    <div class="timeline">
      <div class="tl-axis muted" style={{ marginLeft: `${LABEL}px`, width: `${plot}px` }}>
        {[0, 0.25, 0.5, 0.75, 1].map((f) => (
          <span class="tl-tick" style={{ left: `${f * plot}px` }}>
            {f ? `+${span((t1 - t0) * f)}` : new Date(t0).toISOString().slice(11, 19)}
          </span>
        ))}
      </div>
      <div class="muted tl-usage">
        {Object.keys(trace.usage).length
          ? ` · usage: ${Object.entries(trace.usage)
              .map(([k, v]) => `${k} ${Math.round(v * 1000) / 1000}`)
              .join(", ")}`
          : ""}
      </div>
      <VirtualList items={trace.nodes} rowHeight={ROW} height={Math.min(480, trace.nodes.length * ROW + 2)} row={row} />
    </div>
  );
}
