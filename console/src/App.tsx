// The shell: navigation, the API key box, and the page the hash route names.
import { useState } from "preact/hooks";
import { active, addKey, keys, removeKey, chooseKey } from "./keys";
import { href, useRoute } from "./router";
import { ExecutionPage } from "./pages/Execution";
import { Executions } from "./pages/Executions";
import { HealthPage } from "./pages/Health";
import { InstanceList, InstancePage } from "./pages/Instances";
import { ToolsPage } from "./pages/Tools";
import { ValidatePage, WorkflowList, WorkflowPage } from "./pages/Workflows";
import { WaitsPage } from "./pages/Waits";
import { WorkersPage } from "./pages/Workers";

function KeyBox() {
  const [open, setOpen] = useState(false);
  const [tenant, setTenant] = useState("");
  const [key, setKey] = useState("");
  const current = keys.value[active.value];
  return (
    <div class="keybox">
      <button type="button" name="api-key" onClick={() => setOpen(!open)}>
        {current ? `key: ${current.tenant}` : "API key"}
      </button>
      {open ? (
        <form
          class="keyform"
          onSubmit={(e) => {
            e.preventDefault();
            if (!key) return;
            addKey(tenant, key);
            setKey("");
            setOpen(false);
            location.reload();
          }}
        >
          <p class="muted">Kept for this browser session only; sent as <code>authorization: Bearer …</code>.</p>
          {keys.value.map((k, i) => (
            <div>
              <label>
                <input type="radio" name="active-key" checked={i === active.value} onChange={() => (chooseKey(i), location.reload())} /> {k.tenant}
              </label>{" "}
              <button type="button" onClick={() => (removeKey(i), location.reload())}>forget</button>
            </div>
          ))}
          <input name="tenant" placeholder="tenant (a label)" value={tenant} onInput={(e) => setTenant((e.target as HTMLInputElement).value)} />
          <input name="key" type="password" placeholder="API key" value={key} onInput={(e) => setKey((e.target as HTMLInputElement).value)} />
          <button type="submit">use</button>
        </form>
      ) : null}
    </div>
  );
}

export function App() {
  const route = useRoute();
  const [section, sub] = route.parts;
  let page;
  if (section === "executions" && sub) page = <ExecutionPage route={route} />;
  else if (section === "workflows" && sub) page = <WorkflowPage route={route} />;
  else if (section === "workflows") page = <WorkflowList />;
  else if (section === "validate") page = <ValidatePage />;
  else if (section === "instances" && sub) page = <InstancePage route={route} />;
  else if (section === "instances") page = <InstanceList route={route} />;
  else if (section === "waits") page = <WaitsPage route={route} />;
  else if (section === "workers") page = <WorkersPage />;
  else if (section === "tools") page = <ToolsPage />;
  else if (section === "health") page = <HealthPage />;
  else page = <Executions route={route} />;
  const nav = (path: string, label: string) => (
    <a href={href(path)} class={(section ?? "executions") === path ? "active" : ""}>
      {label}
    </a>
  );
  return (
    <>
      <header class="top">
        <a class="brand" href={href("executions")}>agentrun</a>
        <nav>
          {nav("executions", "Executions")}
          {nav("workflows", "Workflows")}
          {nav("instances", "State machines")}
          {nav("waits", "Waits")}
          {nav("workers", "Workers")}
          {nav("tools", "Tools")}
          {nav("health", "Health")}
        </nav>
        <KeyBox />
      </header>
      <main>{page}</main>
    </>
  );
}
