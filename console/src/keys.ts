// API keys, entered once and kept for the browser session (sessionStorage, never localStorage):
// each key belongs to one tenant on the server, so choosing a key is choosing the tenant.
import { signal } from "@preact/signals";

export interface ApiKey {
  // The tenant the key belongs to, as the user names it (the server knows it from the key).
  tenant: string;
  key: string;
}

const STORE = "agentrun.console.keys";
const ACTIVE = "agentrun.console.active";

// Absent outside a browser (unit tests): nothing is kept then.
const store: Pick<Storage, "getItem" | "setItem"> =
  typeof sessionStorage === "undefined" ? { getItem: () => null, setItem: () => undefined } : sessionStorage;

function load(): ApiKey[] {
  try {
    const parsed: unknown = JSON.parse(store.getItem(STORE) ?? "[]");
    return Array.isArray(parsed)
      ? parsed.filter((k): k is ApiKey => typeof k?.key === "string" && typeof k?.tenant === "string")
      : [];
  } catch {
    return [];
  }
}

export const keys = signal<ApiKey[]>(load());
export const active = signal<number>(Number(store.getItem(ACTIVE) ?? "0") || 0);

function save(): void {
  store.setItem(STORE, JSON.stringify(keys.value));
  store.setItem(ACTIVE, String(active.value));
}

export function activeKey(): ApiKey | undefined {
  return keys.value[active.value];
}

export function addKey(tenant: string, key: string): void {
  const rest = keys.value.filter((k) => k.tenant !== tenant);
  keys.value = [...rest, { tenant: tenant || "default", key }];
  active.value = keys.value.length - 1;
  save();
}

export function removeKey(index: number): void {
  keys.value = keys.value.filter((_, i) => i !== index);
  active.value = Math.min(active.value, Math.max(keys.value.length - 1, 0));
  save();
}

export function chooseKey(index: number): void {
  active.value = index;
  save();
}
