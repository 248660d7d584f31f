"""docs/grafana/agentrun.json is a Grafana dashboard whose every query names a metric the
server exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from agentrun.server.observability import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "agentrun.json"
METRIC = re.compile(r"\bagentrun_[a-z0-9_]+\b")


def test_dashboard_has_what_grafana_needs() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"]
    assert dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["title"]
        assert panel["type"] in ("timeseries", "stat", "gauge", "table", "bargauge")
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"] and target["refId"]
            assert target["datasource"]["type"] == "prometheus"


def test_every_query_names_an_exported_metric() -> None:
    exported = Metrics().names()
    dashboard = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names = set(METRIC.findall(target["expr"]))
            assert names, f"{panel['title']}: {target['expr']} names no agentrun metric"
            unknown = names - exported
            assert not unknown, f"{panel['title']}: {sorted(unknown)} are not exported"
            used |= names
    # The dashboard covers executions, errors, latencies, queue and tokens.
    for needed in (
        "agentrun_executions_finished_total",
        "agentrun_rpc_duration_seconds_bucket",
        "agentrun_scheduler_queue_depth",
        "agentrun_llm_tokens_total",
        "agentrun_node_duration_seconds_bucket",
    ):
        assert needed in used
