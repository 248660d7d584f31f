"""Console benchmark: page load of an execution with 1,000 nodes in headless Chromium.

    python benchmarks/console.py [--nodes 1000] [--runs 3]

Starts `agentrun serve --http-listen` (SQLite in a temp dir), stores a 1,000-node layered DAG
(50 nodes a layer, each needing one or two nodes of the layer above), runs it to the end, then
opens `/#/executions/ID` in Debian's Chromium and reads the page's performance marks, from
navigation start:

- graph rendered: the first painted frame of the graph with its nodes coloured by state (for
  a graph this large, the preview placement, or ELK's layout from the session cache); only
  the nodes in view are in the DOM ("drawn", all green once the execution succeeded);
- ELK layout: the frame with elkjs's layered layout, computed in its web worker.

"cold" is a new browser with an empty profile (no HTTP cache, no layout cache); "reload" is
the same tab reloaded (assets cached, ELK's layout in sessionStorage). The machine is shared:
the figures move with its load (`uptime` is printed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

# benchmarks/grpc.py would shadow grpcio: keep this directory off the path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
ROOT = _HERE.parent
sys.path.insert(0, str(ROOT))

from tests.console.browser import ConsoleServer, start_chromium, wait_for  # noqa: E402

LAYER = 50


def big_workflow(nodes: int) -> str:
    lines = ["name: big-dag", "description: a layered DAG for benchmarks/console.py", "nodes:"]
    for i in range(nodes):
        lines.append(f"  - id: n{i}")
        if i >= LAYER:
            above = i - LAYER
            needs = sorted({above, (i - LAYER) - (i % LAYER) + (i * 7) % LAYER})
            lines.append(f"    needs: [{', '.join(f'n{n}' for n in needs)}]")
        lines.append(f"    pass: {{value: {i}}}")
    return "\n".join(lines) + "\n"


def marks(browser: Any) -> dict[str, float]:
    wait_for(
        lambda: browser.execute_script(
            "return performance.getEntriesByName('agentrun:layout-done').length"
        ),
        300,
        "ELK's layout",
    )
    return browser.execute_script(
        "const m = n => performance.getEntriesByName(n)[0]?.startTime;"
        "return {graph: m('agentrun:graph-rendered'), elk: m('agentrun:layout-done'),"
        " script: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd,"
        " execution: m('agentrun:execution-loaded'), workflow: m('agentrun:workflow-loaded'),"
        " nodes: Number(document.querySelector('svg.graph-svg').dataset.nodes),"
        " drawn: document.querySelectorAll('g[data-node-id][data-state=succeeded]').length}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ConsoleServer(Path(tmp)).start()
        try:
            server.create_workflow(big_workflow(args.nodes))
            ident = server.start_execution("big-dag")
            wait_for(
                lambda: server.execution(ident)["state"] == "STATE_SUCCEEDED",
                600,
                "the execution to succeed",
            )
            url = f"{server.url}/#/executions/{ident}"
            rows: list[tuple[str, dict[str, float]]] = []
            for run in range(args.runs):
                browser = start_chromium(Path(tmp) / f"profile-{run}")
                try:
                    browser.get(url)
                    rows.append(("cold", marks(browser)))
                    browser.refresh()
                    rows.append(("reload", marks(browser)))
                finally:
                    browser.quit()
        finally:
            server.stop()
    print(f"execution page, {args.nodes} nodes, headless Chromium; load average {os.getloadavg()[0]:.1f}")
    print(
        f"{'load':8} {'app ready':>10} {'execution':>10} {'workflow':>9}"
        f" {'graph rendered':>15} {'ELK layout':>11} {'nodes':>6} {'drawn':>6}   (ms)"
    )
    for kind, m in rows:
        print(
            f"{kind:8} {m['script']:>10.0f} {m['execution']:>10.0f} {m['workflow']:>9.0f}"
            f" {m['graph']:>15.0f} {m['elk']:>11.0f} {m['nodes']:>6} {m['drawn']:>6}"
        )
    for kind in ("cold", "reload"):
        graph = [m["graph"] for k, m in rows if k == kind]
        elk = [m["elk"] for k, m in rows if k == kind]
        print(
            f"{kind} median: graph rendered {statistics.median(graph):.0f} ms,"
            f" ELK layout {statistics.median(elk):.0f} ms"
        )


if __name__ == "__main__":
    main()
