// Whether each service answers on this port with the key in use: one cheap call per
// service, with its latency and the error it gave.
import { useEffect, useState } from "preact/hooks";
import { executions, machines, workflows } from "../api";
import { describe } from "../errors";
import { activeKey } from "../keys";

interface Probe {
  service: string;
  ok?: boolean;
  ms?: number;
  error?: string;
}

/**
 * grpc.health.v1.Health/Check over Connect JSON. The health protos are not agentrun's, so
 * this one call is made with fetch rather than a generated client; NOT_SERVING (draining)
 * counts as a failure.
 */
async function healthCheck(service: string): Promise<void> {
  const res = await fetch(`${location.origin}/grpc.health.v1.Health/Check`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ service }),
  });
  const body = (await res.json()) as { status?: string; code?: string; message?: string };
  if (!res.ok) throw new Error(`${body.code ?? res.status}: ${body.message ?? ""}`);
  if (body.status !== "SERVING") throw new Error(body.status ?? "no status");
}

const PROBES: [string, () => Promise<unknown>][] = [
  ["health (grpc.health.v1)", () => healthCheck("")],
  ["WorkflowService", () => workflows.listWorkflows({ pageSize: 1 })],
  ["ExecutionService", () => executions.listExecutions({ pageSize: 1 })],
  ["StateMachineService", () => machines.listInstances({ pageSize: 1 })],
  ["tools", () => workflows.listTools({ pageSize: 1 })],
];

export function HealthPage() {
  const [probes, setProbes] = useState<Probe[]>(PROBES.map(([service]) => ({ service })));
  const [tick, setTick] = useState(0);
  useEffect(() => {
    PROBES.forEach(([service, call], i) => {
      const t0 = performance.now();
      call().then(
        () => setProbes((p) => p.map((x, j) => (j === i ? { service, ok: true, ms: performance.now() - t0 } : x))),
        (e: unknown) => {
          const d = describe(e);
          setProbes((p) => p.map((x, j) => (j === i ? { service, ok: false, ms: performance.now() - t0, error: `${d.code}: ${d.message}` } : x)));
        },
      );
    });
  }, [tick]);
  return (
    <section>
      <h1>
        Health <button type="button" onClick={() => setTick(tick + 1)}>check again</button>
      </h1>
      <p class="muted">
        server {location.host} · {activeKey() ? `API key for tenant ${activeKey()!.tenant}` : "no API key"}
      </p>
      <table class="list">
        <tbody>
          {probes.map((p) => (
            <tr data-probe={p.service} data-ok={String(p.ok)}>
              <td>{p.service}</td>
              <td>{p.ok === undefined ? "…" : p.ok ? "✓ serving" : "✗"}</td>
              <td>{p.ms !== undefined ? `${Math.round(p.ms)} ms` : ""}</td>
              <td>{p.error}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
