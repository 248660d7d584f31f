// The tools workflows may call on this server (ListTools), with their schemas and effects.
import { useState } from "preact/hooks";
import { workflows } from "../api";
import { Tool_Effect } from "../gen/agentrun/v1/workflow_service_pb";
import { enumName } from "../format";
import { ErrorBox } from "../ui/ErrorBox";
import { Json, useLoad } from "../ui/misc";

export function ToolsPage() {
  const [prefix, setPrefix] = useState("");
  const tools = useLoad(async () => {
    const all = [];
    let token = "";
    do {
      const page = await workflows.listTools({ pageSize: 1000, pageToken: token, filter: prefix });
      all.push(...page.tools);
      token = page.nextPageToken;
    } while (token);
    return all;
  }, [prefix]);
  return (
    <section>
      <h1>Tools</h1>
      <label>
        name prefix <input value={prefix} onInput={(e) => setPrefix((e.target as HTMLInputElement).value)} placeholder="http." />
      </label>
      <ErrorBox error={tools.error} />
      <table class="list">
        <thead>
          <tr>
            <th>name</th>
            <th>effect</th>
            <th>description</th>
            <th>arguments</th>
          </tr>
        </thead>
        <tbody>
          {(tools.data ?? []).map((t) => (
            <tr data-tool={t.name}>
              <td class="mono">{t.name}</td>
              <td>{enumName(Tool_Effect, t.effect).replace(/^effect_/, "")}</td>
              <td>{t.description}</td>
              <td>
                <details>
                  <summary>schema</summary>
                  <Json value={t.argsSchema} empty="any" />
                  {t.resultSchema ? (
                    <>
                      result: <Json value={t.resultSchema} />
                    </>
                  ) : null}
                </details>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
