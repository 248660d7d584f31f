// Small shared pieces: a state badge, a JSON block, a JSON text field and an async loader hook.
import type { JsonValue } from "@bufbuild/protobuf";
import { useEffect, useState } from "preact/hooks";
import { pretty } from "../format";

export function Badge({ state }: { state: string }) {
  return <span class={`badge state-${state}`}>{state}</span>;
}

export function Json({ value, empty = "—" }: { value: JsonValue | undefined; empty?: string }) {
  if (value === undefined) return <span class="muted">{empty}</span>;
  return <pre class="json">{pretty(value)}</pre>;
}

/** Parses a JSON text field: the value, or the parse error to show beside the field. */
export function parseJson(text: string): { value?: JsonValue; error?: string } {
  if (!text.trim()) return { value: null };
  try {
    return { value: JSON.parse(text) as JsonValue };
  } catch (e) {
    return { error: (e as Error).message };
  }
}

export function JsonField(props: { label: string; value: string; onInput: (v: string) => void; rows?: number; name?: string }) {
  const parsed = parseJson(props.value);
  return (
    <label class="field">
      <span>{props.label}</span>
      <textarea
        name={props.name}
        rows={props.rows ?? 4}
        spellcheck={false}
        value={props.value}
        onInput={(e) => props.onInput((e.target as HTMLTextAreaElement).value)}
      />
      {parsed.error ? <span class="field-error">not JSON: {parsed.error}</span> : null}
    </label>
  );
}

export interface Loaded<T> {
  data?: T;
  error?: unknown;
  loading: boolean;
  reload: () => void;
}

/** Runs `load` when `deps` change; a newer run wins over an older one still in flight. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: unknown; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    load().then(
      (data) => live && setState({ data, loading: false }),
      (error: unknown) => live && setState({ error, loading: false }),
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  return { ...state, reload: () => setTick((t) => t + 1) };
}

/** Calls `reload` every `ms` while the tab is visible: lists without a watch RPC stay current. */
export function usePolling(reload: () => void, ms: number, deps: unknown[]): void {
  useEffect(() => {
    const timer = setInterval(() => document.visibilityState === "visible" && reload(), ms);
    return () => clearInterval(timer);
  }, deps);
}
