"""The console's other pages in headless Chromium against a real server: the executions list
(server-side paging, filters, live state changes), validate-as-you-type, and a state machine
instance driven through its send-event form."""

from __future__ import annotations

from typing import Any

import pytest

from tests.console.browser import ROOT, ConsoleServer, node_state, replace_text, shot, wait_for

pytestmark = pytest.mark.timeout(300)

ONE_NODE = """
name: list-demo
nodes:
  - id: only
    pass: {value: 1}
"""

SLOW = """
name: slow-list-demo
nodes:
  - id: work
    tool: {name: core.sleep, args: {seconds: 600}}
"""


def listed(browser: Any) -> list[str]:
    return [
        row.get_attribute("data-execution")
        for row in browser.find_elements("css selector", "a[data-execution]")
    ]


def test_the_executions_list_pages_on_the_server_and_filters(
    browser: Any, server: ConsoleServer
) -> None:
    server.create_workflow(ONE_NODE)
    started = {server.start_execution("list-demo") for _ in range(5)}
    for ident in started:
        wait_for(
            lambda ident=ident: server.execution(ident)["state"] == "STATE_SUCCEEDED", 60, "a run"
        )
    browser.get(f"{server.url}/#/executions?workflow=list-demo&size=2")
    seen: list[str] = []
    for expected in (2, 2, 1):
        page = wait_for(
            lambda expected=expected: len(listed(browser)) == expected and listed(browser),
            30,
            "a page",
        )
        assert not set(page) & set(seen), "a page repeats rows of an earlier one"
        seen += page
        button = browser.find_element("css selector", "button[name=next]")
        if expected == 1:
            assert not button.is_enabled()
        else:
            button.click()
            wait_for(lambda page=page: set(listed(browser)).isdisjoint(page), 30, "the next page")
    assert set(seen) == started
    browser.find_element("css selector", "button[name=previous]").click()
    wait_for(lambda: len(listed(browser)) == 2, 30, "the previous page")

    browser.get(f"{server.url}/#/executions?workflow=list-demo&state=succeeded&size=50")
    wait_for(lambda: set(listed(browser)) == started, 30, "the succeeded executions")
    browser.find_element("css selector", "input[name=state-failed]").click()  # succeeded OR failed
    browser.find_element("css selector", "input[name=state-succeeded]").click()  # failed only
    wait_for(lambda: "No executions match" in browser.page_source, 30, "an empty list")


def test_the_executions_list_shows_state_changes_live(browser: Any, server: ConsoleServer) -> None:
    server.create_workflow(SLOW)
    ident = server.start_execution("slow-list-demo")
    browser.get(f"{server.url}/#/executions?workflow=slow-list-demo")
    row = f'a[data-execution="{ident}"] .badge'
    wait_for(lambda: browser.find_element("css selector", row).text == "running", 60, "running")
    browser.execute_script("window.__sameDocument = true")
    server.call("ExecutionService", "CancelExecution", {"name": f"executions/{ident}"})
    wait_for(lambda: browser.find_element("css selector", row).text == "cancelled", 60, "cancelled")
    assert browser.execute_script("return window.__sameDocument") is True


def test_validate_as_you_type_shows_diagnostics_by_field(
    browser: Any, server: ConsoleServer
) -> None:
    browser.get(f"{server.url}/#/validate")
    source = wait_for(lambda: browser.find_element("name", "source"), 30, "the editor")
    replace_text(
        source,
        "name: draft\nnodes:\n  - id: a\n    pass: {value: 1}\n  - id: b\n    needs: [ghost]\n    pass: {value: 2}\n",
    )
    wait_for(lambda: browser.find_elements("css selector", '[data-valid="false"]'), 30, "invalid")
    diagnostic = browser.find_element("css selector", ".diag-error").text
    assert "nodes[1].needs[0]" in diagnostic and "ghost" in diagnostic
    shot(browser, "validate-invalid")
    replace_text(
        source,
        "name: draft\nnodes:\n  - id: a\n    pass: {value: 1}\n  - id: b\n    needs: [a]\n    pass: {value: 2}\n",
    )
    wait_for(lambda: browser.find_elements("css selector", '[data-valid="true"]'), 30, "valid")
    stages = [li.text for li in browser.find_elements("css selector", ".stages li")]
    assert stages == ["a", "b"]
    browser.find_element("css selector", "button[name=create]").click()
    wait_for(lambda: "#/workflows/draft" in browser.current_url, 30, "the new workflow's page")
    wait_for(lambda: browser.find_elements("css selector", 'g[data-node-id="b"]'), 60, "its graph")


def test_a_state_machine_instance_takes_events_from_its_form(
    browser: Any, server: ConsoleServer
) -> None:
    server.create_workflow((ROOT / "examples" / "order_state_machine.yaml").read_text())
    created = server.call(
        "StateMachineService",
        "CreateInstance",
        {"workflow": "order", "input": {"id": "o-1", "total": 30}},
    )
    ident = created["instance"]["name"].removeprefix("instances/")
    browser.get(f"{server.url}/#/instances/{ident}")
    current = "[data-current-state]"
    wait_for(lambda: browser.find_element("css selector", current).text == "pending", 60, "pending")
    wait_for(
        lambda: browser.find_elements("css selector", 'g[data-node-id="pending"]'), 60, "the graph"
    )

    def send(event: str, data: str) -> None:
        form = browser.find_element("css selector", "form.send-event")
        wait_for(lambda: event in form.find_element("name", "event").text, 30, f"{event} offered")
        form.find_element("css selector", f'select[name=event] option[value="{event}"]').click()
        replace_text(form.find_element("name", "event-data"), data)
        form.find_element("css selector", "button[name=send-event]").click()

    send("PAY", '{"amount": 10}')  # underpaid: stays pending, counts the attempt
    wait_for(
        lambda: len(browser.find_elements("css selector", ".hist-row")) == 2,
        30,
        "PAY in the history",
    )
    assert '"attempts": 1' in browser.find_element("css selector", ".node-panel .json").text
    send("CANCEL", "{}")
    wait_for(
        lambda: browser.find_element("css selector", current).text == "cancelled", 30, "cancelled"
    )
    assert "completed" in browser.find_element("css selector", "h1 .badge").text
    assert len(browser.find_elements("css selector", ".hist-row")) == 3
    shot(browser, "instance-cancelled")
    got = server.call("StateMachineService", "GetInstance", {"name": f"instances/{ident}"})[
        "instance"
    ]
    assert got["currentState"] == "cancelled" and got["state"] == "STATE_COMPLETED"


TYPED_INPUT = """
name: typed-input
input_schema:
  type: object
  required: [order]
  properties:
    order: {type: integer}
nodes:
  - id: only
    pass: {value: "${{ input.order }}"}
"""


def test_an_api_error_shows_its_code_reason_and_field(browser: Any, server: ConsoleServer) -> None:
    server.create_workflow(TYPED_INPUT)
    browser.get(f"{server.url}/#/workflows/typed-input")
    field = wait_for(lambda: browser.find_element("name", "start-input"), 30, "the start form")
    replace_text(field, '{"order": "not a number"}')
    browser.find_element("css selector", "button[name=start]").click()
    error = wait_for(
        lambda: browser.find_element("css selector", ".start-form .error-box"), 30, "the error"
    )
    text = error.text
    assert "INVALID_ARGUMENT" in text and "INVALID_INPUT" in text, text
    violations = [li.text for li in error.find_elements("css selector", ".violations li")]
    assert violations and any("order" in v for v in violations), violations
    replace_text(field, '{"order": 7}')
    browser.find_element("css selector", "button[name=start]").click()
    wait_for(lambda: "#/executions/" in browser.current_url, 30, "the new execution's page")


GATES = """
name: gates-demo
nodes:
  - id: go
    wait: {signal: go}
  - id: approval
    needs: [go]
    wait: {signal: approval}
  - id: done
    needs: [approval]
    pass: {value: "${{ nodes.approval.output }}"}
"""


def test_a_signal_sent_before_its_wait_is_buffered(browser: Any, server: ConsoleServer) -> None:
    server.create_workflow(GATES)
    ident = server.start_execution("gates-demo")
    browser.get(f"{server.url}/#/executions/{ident}")
    wait_for(lambda: node_state(browser, "go") == "waiting", 60, "go to wait")

    def send(name: str, data: str) -> None:
        browser.find_element("css selector", "button[name=signal]").click()
        form = wait_for(
            lambda: browser.find_element("css selector", ".controls .signal-form"), 30, "the form"
        )
        form.find_element("name", "signal-name").send_keys(name)
        replace_text(form.find_element("name", "signal-data"), data)
        form.find_element("css selector", "button[name=send-signal]").click()

    send("approval", '{"approved": true}')
    wait_for(
        lambda: (
            "sent approval" in browser.find_element("css selector", ".controls .signal-form").text
        ),
        30,
        "approval sent",
    )
    browser.find_element("css selector", "button[name=signal]").click()  # closes the form
    events = server.call(
        "ExecutionService", "ListExecutionEvents", {"parent": f"executions/{ident}"}
    )
    assert any(e["type"] == "signal.received" for e in events["events"])
    assert node_state(browser, "go") == "waiting"
    assert node_state(browser, "approval") in ("none", "pending")
    send("go", "{}")
    # A path route names the same page as the hash route.
    browser.get(f"{server.url}/executions/{ident}")
    wait_for(lambda: f"#/executions/{ident}" in browser.current_url, 30, "the hash route")
    for node in ("go", "approval", "done"):
        wait_for(
            lambda node=node: node_state(browser, node) == "succeeded", 60, f"{node} to succeed"
        )
    got = server.call(
        "ExecutionService", "GetExecution", {"name": f"executions/{ident}", "includeNodes": True}
    )
    assert next(n for n in got["nodes"] if n["nodeId"] == "done")["output"] == {"approved": True}
