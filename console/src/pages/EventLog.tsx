// The execution's event log: every stored event (ListExecutionEvents, paged), with the live
// ones from the page's watch appended; virtualised.
import { useState } from "preact/hooks";
import type { ExecutionEvent } from "../gen/agentrun/v1/execution_pb";
import { time } from "../format";
import { VirtualList } from "../ui/VirtualList";

export function EventLog({ events, onSelect }: { events: ExecutionEvent[]; onSelect: (id: string) => void }) {
  const [open, setOpen] = useState<ExecutionEvent | undefined>();
  return (
    <div class="events">
      <VirtualList
        items={events}
        rowHeight={24}
        height={Math.min(420, events.length * 24 + 2)}
        follow
        row={(ev: ExecutionEvent) => (
          <div class={`ev-row${open === ev ? " open" : ""}`} onClick={() => setOpen(ev)} data-event-type={ev.type}>
            <span class="mono">#{String(ev.sequence)}</span>
            <span class="muted">{time(ev.time)}</span>
            <span class="ev-type">{ev.type}</span>
            <span>
              {ev.nodeId ? (
                <a
                  href="#"
                  onClick={(e) => {
                    e.preventDefault();
                    onSelect(ev.nodeId);
                  }}
                >
                  {ev.nodeId}
                </a>
              ) : null}
            </span>
          </div>
        )}
      />
      {open ? (
        <pre class="json">{JSON.stringify(open.data ?? {}, null, 2)}</pre>
      ) : (
        <p class="muted">{events.length} events; click one for its data.</p>
      )}
    </div>
  );
}
