// Previous / next over a server-paged list: the page tokens seen so far are a stack.
import type { ComponentChildren } from "preact";

export function Pager(props: { tokens: string[]; next?: string; onChange: (tokens: string[]) => void; children?: ComponentChildren }) {
  const { tokens, next, onChange } = props;
  return (
    <div class="pager">
      <button type="button" name="previous" disabled={!tokens.length} onClick={() => onChange(tokens.slice(0, -1))}>
        ← previous
      </button>
      {props.children}
      <button type="button" name="next" disabled={!next} onClick={() => next && onChange([...tokens, next])}>
        next →
      </button>
    </div>
  );
}
