"""The console in a real browser (headless Chromium) against a real `agentrun serve`.

A person opens an execution that waits for approval, sees the graph with the waiting node,
approves through the form and watches the graph turn green without reloading; a failing
node shows its error; a running execution is cancelled from its page; with API keys on, the
console asks for a key and keeps it for the session. Screenshots go to artifacts/console/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.console.browser import ConsoleServer, node_state, replace_text, shot, wait_for

pytestmark = pytest.mark.timeout(300)

APPROVAL = """
name: approval-demo
description: Prepares an order, waits for a person's approval, then ships it
nodes:
  - id: prepare
    pass: {value: {order: "${{ input.order }}"}}
  - id: items
    needs: [prepare]
    map:
      items: "${{ [1, 2, 3] }}"
      node: {pass: {value: "${{ item * 2 }}"}}
  - id: approval
    needs: [items]
    wait: {signal: approval, timeout: 1h}
  - id: ship
    needs: [approval]
    when: "${{ nodes.approval.output.approved }}"
    pass: {value: {shipped: true, by: "${{ nodes.approval.output.by }}"}}
  - id: notify
    needs: [ship]
    pass: {value: done}
"""

FAILING = """
name: failing-demo
nodes:
  - id: fetch
    pass: {value: 1}
  - id: charge
    needs: [fetch]
    tool: {name: core.fail, args: {type: payments.declined, message: card declined}}
    retry: {max_attempts: 2, backoff: fixed, initial_interval: 100ms}
  - id: after
    needs: [charge]
    pass: {value: 2}
"""

SLOW = """
name: slow-demo
nodes:
  - id: start
    pass: {value: 1}
  - id: work
    needs: [start]
    tool: {name: core.sleep, args: {seconds: 600}}
  - id: finish
    needs: [work]
    pass: {value: 2}
"""


def open_execution(browser: Any, server: ConsoleServer, ident: str) -> None:
    browser.get(f"{server.url}/#/executions/{ident}")
    wait_for(
        lambda: browser.find_elements("css selector", "svg.graph-svg[data-rendered]"),
        60,
        "the execution graph",
    )


def test_approve_through_the_form_turns_the_graph_green_live(
    browser: Any, server: ConsoleServer
) -> None:
    server.create_workflow(APPROVAL)
    ident = server.start_execution("approval-demo", {"order": 42})
    open_execution(browser, server, ident)
    wait_for(lambda: node_state(browser, "approval") == "waiting", 60, "approval to wait")
    assert {n: node_state(browser, n) for n in ("prepare", "items")} == {
        "prepare": "succeeded",
        "items": "succeeded",
    }
    # The map node shows its items.
    assert "items 3/3" in browser.find_element("css selector", 'g[data-node-id="items"]').text
    assert node_state(browser, "ship") in ("none", "pending")

    browser.find_element("css selector", 'g[data-node-id="approval"] rect').click()
    form = wait_for(
        lambda: browser.find_element("css selector", 'form.signal-form[data-signal="approval"]'),
        30,
        "the signal form",
    )
    shot(browser, "execution-waiting")
    # The form asks for the fields the workflow reads from the wait's output.
    form.find_element("name", "signal-approved").send_keys("true")
    form.find_element("name", "signal-by").send_keys("alice")
    browser.execute_script("window.__sameDocument = true")
    form.find_element("css selector", "button[name=send-signal]").click()

    for node in ("approval", "ship", "notify"):
        wait_for(
            lambda node=node: node_state(browser, node) == "succeeded", 60, f"{node} to turn green"
        )
    wait_for(
        lambda: browser.find_elements("css selector", 'section[data-execution-state="succeeded"]'),
        60,
        "the execution to show SUCCEEDED",
    )
    # Live: the page was never reloaded.
    assert browser.execute_script("return window.__sameDocument") is True
    shot(browser, "execution-approved")

    # The API agrees with what the page shows.
    got = server.call(
        "ExecutionService", "GetExecution", {"name": f"executions/{ident}", "includeNodes": True}
    )
    assert got["execution"]["state"] == "STATE_SUCCEEDED"
    ship = next(n for n in got["nodes"] if n["nodeId"] == "ship")
    assert ship["output"] == {"shipped": True, "by": "alice"}


def test_a_failing_node_shows_its_error(browser: Any, server: ConsoleServer) -> None:
    server.create_workflow(FAILING)
    ident = server.start_execution("failing-demo")
    open_execution(browser, server, ident)
    wait_for(lambda: node_state(browser, "charge") == "failed", 60, "charge to fail")
    header = wait_for(
        lambda: browser.find_element("css selector", ".exec-error").text,
        60,
        "the execution's error",
    )
    assert "payments.declined" in header and "card declined" in header and "charge" in header
    browser.find_element("css selector", 'g[data-node-id="charge"] rect').click()
    panel = wait_for(
        lambda: browser.find_element("css selector", '[data-panel-node="charge"] .node-error'),
        30,
        "the node's error",
    )
    assert "payments.declined" in panel.text and "card declined" in panel.text
    # Both attempts, from the trace.
    wait_for(
        lambda: (
            len(
                browser.find_elements(
                    "css selector", '[data-panel-node="charge"] table.attempts tbody tr'
                )
            )
            == 2
        ),
        30,
        "two attempts in the node panel",
    )
    assert "attempt 2" in browser.find_element("css selector", 'g[data-node-id="charge"]').text
    assert node_state(browser, "after") in ("none", "pending")
    shot(browser, "execution-failed")

    # Rerun from the failed node: the console opens the new execution, which names the old one.
    browser.find_element("css selector", "button[name=rerun]").click()
    wait_for(lambda: ident not in browser.current_url, 30, "the rerun's page")
    rerun = browser.current_url.rsplit("/", 1)[-1].split("?")[0]
    wait_for(lambda: node_state(browser, "charge") == "failed", 60, "the rerun to fail again")
    assert browser.find_element("css selector", f'a[href="#/executions/{ident}"]').text == ident
    assert server.execution(rerun)["labels"]["rerun_of"].removeprefix("executions/") == ident


def execution_state(browser: Any, state: str) -> Any:
    return browser.find_elements("css selector", f'section[data-execution-state="{state}"]')


def test_a_running_execution_is_paused_resumed_and_cancelled_from_its_page(
    browser: Any, server: ConsoleServer
) -> None:
    server.create_workflow(SLOW)
    ident = server.start_execution("slow-demo")
    open_execution(browser, server, ident)
    wait_for(lambda: node_state(browser, "work") == "running", 60, "work to run")
    shot(browser, "execution-running")
    browser.find_element("css selector", "button[name=pause]").click()
    wait_for(lambda: execution_state(browser, "paused"), 60, "PAUSED")
    assert server.execution(ident)["state"] == "STATE_PAUSED"
    browser.find_element("css selector", "button[name=resume]").click()
    wait_for(lambda: execution_state(browser, "running"), 60, "RUNNING again")
    browser.find_element("css selector", "button[name=cancel]").click()
    wait_for(lambda: browser.switch_to.alert, 10, "the confirmation").accept()
    wait_for(
        lambda: browser.find_elements("css selector", 'section[data-execution-state="cancelled"]'),
        60,
        "the execution to show CANCELLED",
    )
    wait_for(lambda: node_state(browser, "work") == "cancelled", 60, "work to show cancelled")
    assert server.execution(ident)["state"] == "STATE_CANCELLED"


def test_with_api_keys_the_console_asks_for_one_and_keeps_it_for_the_session(
    browser: Any, tmp_path: Path
) -> None:
    served = ConsoleServer(tmp_path, env={"AGENTRUN_API_KEYS": "console-key:acme"}).start()
    try:
        served.key = "console-key"
        served.create_workflow(FAILING)
        ident = served.start_execution("failing-demo")
        browser.get(f"{served.url}/#/executions")
        error = wait_for(lambda: browser.find_element("css selector", ".error-box"), 30, "an error")
        assert "UNAUTHENTICATED" in error.text
        browser.find_element("css selector", "button[name=api-key]").click()
        browser.find_element("name", "tenant").send_keys("acme")
        browser.find_element("name", "key").send_keys("console-key")
        browser.find_element("css selector", ".keyform button[type=submit]").click()
        wait_for(
            lambda: browser.find_elements("css selector", f'[data-execution="{ident}"]'),
            30,
            "the tenant's execution in the list",
        )
        assert not browser.find_elements("css selector", ".error-box")
        stored = browser.execute_script("return sessionStorage.getItem('agentrun.console.keys')")
        assert "console-key" in stored
        assert browser.execute_script("return localStorage.length") == 0
    finally:
        browser.execute_script("sessionStorage.clear()")
        served.stop()


SAGA = """
name: saga-demo
nodes:
  - id: book
    tool: {name: core.echo, args: {booked: true}}
    compensate: {tool: {name: core.echo, args: {cancelled: true}}}
  - id: pay
    needs: [book]
    tool: {name: core.sleep, args: {seconds: 600}}
"""


def test_cancel_with_compensation_undoes_the_completed_node(
    browser: Any, server: ConsoleServer
) -> None:
    server.create_workflow(SAGA)
    ident = server.start_execution("saga-demo")
    open_execution(browser, server, ident)
    wait_for(lambda: node_state(browser, "pay") == "running", 60, "pay to run")
    browser.find_element("css selector", "input[name=compensate]").click()
    browser.find_element("css selector", "button[name=cancel]").click()
    alert = wait_for(lambda: browser.switch_to.alert, 10, "the confirmation")
    assert "compensations" in alert.text
    alert.accept()
    wait_for(lambda: execution_state(browser, "compensated"), 60, "COMPENSATED")
    wait_for(lambda: node_state(browser, "book") == "compensated", 60, "book to be undone")
    assert node_state(browser, "pay") == "cancelled"
    browser.find_element("css selector", 'g[data-node-id="book"] rect').click()
    wait_for(
        lambda: (
            "book.compensate (succeeded)"
            in browser.find_element("css selector", '[data-panel-node="book"]').text
        ),
        30,
        "the compensation step in the node panel",
    )
    assert server.execution(ident)["state"] == "STATE_COMPENSATED"


ESCALATING = """
name: escalating-demo
nodes:
  - id: charge
    tool: {name: core.fail, args: {type: payments.declined, message: card declined}}
  - id: receipt
    needs: [charge]
    pass: {value: "${{ nodes.charge.output }}"}
error_handlers:
  - match: {nodes: charge}
    action: escalate
    timeout: 1h
    on_timeout: fail
"""


def test_an_escalated_node_is_answered_through_its_form(
    browser: Any, server: ConsoleServer
) -> None:
    server.create_workflow(ESCALATING)
    ident = server.start_execution("escalating-demo")
    open_execution(browser, server, ident)
    wait_for(lambda: node_state(browser, "charge") == "escalated", 60, "charge to escalate")
    browser.find_element("css selector", 'g[data-node-id="charge"] rect').click()
    form = wait_for(
        lambda: browser.find_element("css selector", 'form.signal-form[data-signal="escalation"]'),
        30,
        "the escalation form",
    )
    replace_text(
        form.find_element("name", "signal-data"),
        '{"action": "skip", "node": "charge", "output": {"charged": false}}',
    )
    form.find_element("css selector", "button[name=send-signal]").click()
    wait_for(lambda: node_state(browser, "charge") == "skipped", 60, "charge to be skipped")
    wait_for(lambda: node_state(browser, "receipt") == "succeeded", 60, "receipt to run")
    wait_for(lambda: execution_state(browser, "succeeded"), 60, "SUCCEEDED")

    # The event log lists the escalation's signal.
    browser.find_element("link text", "events").click()
    row = wait_for(
        lambda: browser.find_element("css selector", '[data-event-type="signal.received"]'),
        30,
        "the signal in the event log",
    )
    row.click()
    assert '"escalation"' in browser.find_element("css selector", ".events pre.json").text
