// An API error as the server sent it: code, reason, message, field violations, metadata.
import { describe } from "../errors";

export function ErrorBox({ error }: { error: unknown }) {
  if (!error) return null;
  const e = describe(error);
  const meta = Object.entries(e.metadata);
  return (
    <div class="error-box" role="alert">
      <div>
        <b class="code">{e.code}</b>
        {e.reason ? <span class="reason"> {e.reason}</span> : null}: <span class="message">{e.message}</span>
      </div>
      {e.violations.length ? (
        <ul class="violations">
          {e.violations.map((v) => (
            <li>
              <code>{v.field || "(document)"}</code> {v.description}
            </li>
          ))}
        </ul>
      ) : null}
      {meta.length ? (
        <div class="muted">
          {meta.map(([k, v]) => (
            <span>
              {k}={v}{" "}
            </span>
          ))}
        </div>
      ) : null}
      {e.retryDelay ? <div class="muted">retry after {e.retryDelay}</div> : null}
    </div>
  );
}
