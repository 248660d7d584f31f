"""The console's Waits and Workers pages and the executions list's order and time window, in
headless Chromium against a real `agentrun serve`: pending approvals are listed from ListWaits
and answered through a form built from each wait's schema (AnswerWait, which checks the answer
on the server); a Python worker process (agentrun.worker) connected to the server shows with its
tools and load; the list shows the newest first and filters by creation time on the server."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.console.browser import ROOT, ConsoleServer, node_state, replace_text, shot, wait_for

pytestmark = pytest.mark.timeout(300)

APPROVALS = """
name: console-approvals
nodes:
  - id: legal
    wait:
      signal: approval
      schema:
        type: object
        required: [approved, amount]
        properties:
          approved: {type: boolean}
          amount: {type: integer, description: in cents}
          level: {enum: [low, high]}
  - id: done
    needs: [legal]
    pass: {value: "${{ nodes.legal.output }}"}
"""


def waits_listed(browser: Any) -> list[str]:
    return [
        r.get_attribute("data-wait") for r in browser.find_elements("css selector", "tr[data-wait]")
    ]


def test_a_pending_wait_is_answered_from_its_schema_form(
    browser: Any, server: ConsoleServer
) -> None:
    server.create_workflow(APPROVALS)
    ident = server.start_execution("console-approvals")
    wait_id = f"{ident}/legal/1"
    wait_for(
        lambda: any(
            w["waitId"] == wait_id
            for w in server.call("ExecutionService", "ListWaits", {}).get("waits", [])
        ),
        60,
        "the wait",
    )
    browser.get(f"{server.url}/#/waits")
    row = wait_for(
        lambda: browser.find_element("css selector", f'tr[data-wait="{wait_id}"]'), 30, "its row"
    )
    assert "approval" in row.text and "console-approvals" in row.text
    row.find_element("css selector", "button[name=open-answer]").click()
    form = wait_for(lambda: row.find_element("css selector", "form.answer-form"), 30, "the form")
    # One typed field per property of the schema.
    assert form.find_element("name", "answer-approved").get_attribute("type") == "checkbox"
    assert form.find_element("name", "answer-amount").get_attribute("type") == "number"
    options = [
        o.text for o in form.find_elements("css selector", "select[name=answer-level] option")
    ]
    assert options == ["—", "low", "high"]
    # A required field left empty is caught before sending.
    assert not form.find_element("css selector", "button[name=answer]").is_enabled()
    assert "amount: required" in form.text

    # Data the schema refuses, through raw JSON: the server's INVALID_ARGUMENT names the path.
    form.find_element("name", "answer-raw").click()
    replace_text(form.find_element("name", "answer-data"), '{"approved": "yes", "amount": 5}')
    form.find_element("css selector", "button[name=answer]").click()
    error = wait_for(lambda: form.find_element("css selector", ".error-box"), 30, "the refusal")
    assert "INVALID_ARGUMENT" in error.text and "data.approved" in error.text, error.text
    assert server.execution(ident)["state"] == "STATE_WAITING"

    form.find_element("name", "answer-raw").click()  # back to the fields
    form.find_element("name", "answer-approved").click()
    replace_text(form.find_element("name", "answer-amount"), "1250")
    form.find_element(
        "css selector", 'select[name=answer-level] option[value="\\"high\\""]'
    ).click()
    shot(browser, "waits-answer")
    form.find_element("css selector", "button[name=answer]").click()
    wait_for(lambda: wait_id not in waits_listed(browser), 30, "the wait gone from the list")
    assert wait_id in browser.find_element("css selector", "[data-answered]").get_attribute(
        "data-answered"
    )
    wait_for(
        lambda: server.execution(ident)["state"] == "STATE_SUCCEEDED", 60, "the execution done"
    )
    output = server.call(
        "ExecutionService", "GetExecution", {"name": f"executions/{ident}", "includeNodes": True}
    )
    legal = next(n for n in output["nodes"] if n["nodeId"] == "legal")
    assert legal["output"] == {"approved": True, "amount": 1250, "level": "high"}


def test_the_execution_page_answers_a_waiting_node_from_its_schema(
    browser: Any, server: ConsoleServer
) -> None:
    """A wait with a schema gets the schema's form in the node panel (by wait id, AnswerWait),
    not the signal form with fields guessed from the workflow's expressions."""
    server.create_workflow(APPROVALS)
    ident = server.start_execution("console-approvals")
    browser.get(f"{server.url}/#/executions/{ident}")
    wait_for(lambda: node_state(browser, "legal") == "waiting", 60, "legal to wait")
    browser.find_element("css selector", 'g[data-node-id="legal"] rect').click()
    form = wait_for(
        lambda: browser.find_element(
            "css selector", f'form.answer-form[data-wait="{ident}/legal/1"]'
        ),
        30,
        "the answer form",
    )
    assert not browser.find_elements("css selector", "form.signal-form[data-signal]")
    form.find_element("name", "answer-approved").click()
    replace_text(form.find_element("name", "answer-amount"), "7")
    form.find_element("css selector", "button[name=answer]").click()
    for node in ("legal", "done"):
        wait_for(
            lambda node=node: node_state(browser, node) == "succeeded", 60, f"{node} to turn green"
        )
    got = server.call(
        "ExecutionService", "GetExecution", {"name": f"executions/{ident}", "includeNodes": True}
    )
    assert next(n for n in got["nodes"] if n["nodeId"] == "legal")["output"] == {
        "approved": True,
        "amount": 7,
    }


def test_the_waits_page_shows_one_executions_waits_from_its_page(
    browser: Any, server: ConsoleServer
) -> None:
    """`#/waits?execution=ID` is ListWaits' `parent`: a waiting execution's page links to it,
    and only that execution's wait is listed while another one waits too."""
    server.create_workflow(APPROVALS)
    mine, other = (
        server.start_execution("console-approvals"),
        server.start_execution("console-approvals"),
    )
    for ident in (mine, other):
        wait_for(
            lambda ident=ident: server.execution(ident)["state"] == "STATE_WAITING", 60, "waiting"
        )
    browser.get(f"{server.url}/#/executions/{mine}")
    wait_for(
        lambda: browser.find_element("css selector", "a.execution-waits"), 60, "the link"
    ).click()
    wait_for(lambda: waits_listed(browser) == [f"{mine}/legal/1"], 30, "only its wait")
    assert browser.find_element("name", "wait-execution").get_attribute("value") == mine
    replace_text(browser.find_element("name", "wait-execution"), "")
    browser.find_element("name", "wait-execution").send_keys("\t")  # change: the filter is cleared
    wait_for(
        lambda: {f"{mine}/legal/1", f"{other}/legal/1"} <= set(waits_listed(browser)),
        30,
        "every wait",
    )


WORKER = """
import sys
from agentrun.worker import Worker

worker = Worker(sys.argv[1], max_concurrent_calls=3, labels={"region": "eu"}, display_name="console-test")

@worker.tool(
    "console.echo",
    description="returns its arguments",
    args_schema={"type": "object", "properties": {"text": {"type": "string"}}},
)
def echo(args: dict) -> dict:
    return args

worker.run_forever()
"""


@pytest.fixture
def worker_process(server: ConsoleServer, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(script), server.process.address],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_the_workers_page_shows_a_connected_worker_and_its_tools(
    browser: Any, server: ConsoleServer, worker_process: subprocess.Popen[bytes]
) -> None:
    browser.get(f"{server.url}/#/workers")
    row = wait_for(
        lambda: browser.find_element("css selector", "tr[data-worker]"), 60, "the worker's row"
    )
    assert worker_process.poll() is None
    text = row.text
    assert "console-test" in text and "serving" in text and "region=eu" in text, text
    assert row.find_element("css selector", ".load-text").text == "0/3"
    tool = row.find_element("css selector", 'details[data-tool="console.echo"]')
    tool.find_element("css selector", "summary").click()
    assert "returns its arguments" in tool.text and '"text"' in tool.text
    shot(browser, "workers")
    # The tool filter is ListWorkers' `tool = "NAME"`.
    replace_text(browser.find_element("name", "worker-tool"), "nobody.serves")
    wait_for(lambda: "No workers connected" in browser.page_source, 30, "no worker for that tool")
    replace_text(browser.find_element("name", "worker-tool"), "console.echo")
    wait_for(
        lambda: browser.find_elements("css selector", "tr[data-worker]"), 30, "the worker again"
    )
    # Stopped, it leaves the list (the page polls).
    worker_process.terminate()
    worker_process.wait(timeout=30)
    wait_for(
        lambda: not browser.find_elements("css selector", "tr[data-worker]"), 90, "the worker gone"
    )


ONE = """
name: order-demo
nodes:
  - id: only
    pass: {value: 1}
"""


def listed(browser: Any) -> list[str]:
    return [
        r.get_attribute("data-execution")
        for r in browser.find_elements("css selector", "a[data-execution]")
    ]


def test_the_executions_list_is_newest_first_and_filters_by_creation_time(
    browser: Any, server: ConsoleServer
) -> None:
    server.create_workflow(ONE)
    first = [server.start_execution("order-demo") for _ in range(3)]
    # A whole second after the first three were created (datetime-local has seconds at most),
    # and the later two created after it.
    created = max(
        datetime.fromisoformat(server.execution(i)["createTime"]).timestamp() for i in first
    )
    cut = math.floor(created) + 1
    wait_for(lambda: time.time() > cut + 0.1, 10, "the cut to pass")
    later = [server.start_execution("order-demo") for _ in range(2)]
    every = first + later
    browser.get(f"{server.url}/#/executions?workflow=order-demo&size=50")
    wait_for(lambda: listed(browser) == every[::-1], 30, "the newest first")
    browser.find_element("css selector", 'select[name=order] option[value="oldest"]').click()
    wait_for(lambda: listed(browser) == every, 30, "the oldest first")
    browser.find_element("css selector", 'select[name=order] option[value="newest"]').click()
    wait_for(lambda: listed(browser) == every[::-1], 30, "the newest first again")
    # The cut as the browser's local time, typed into the fields as a person would.
    local = browser.execute_script(
        "const d = new Date(arguments[0]); const p = (n) => String(n).padStart(2, '0');"
        "return [d.getFullYear(), p(d.getMonth() + 1), p(d.getDate()), p(d.getHours()), p(d.getMinutes()), p(d.getSeconds())];",
        cut * 1000,
    )
    browser.get(
        f"{server.url}/#/executions?workflow=order-demo&size=2&to={local[0]}-{local[1]}-{local[2]}T{local[3]}:{local[4]}:{local[5]}"
    )
    # Before the cut: the first three, newest first, over two pages of the server's window.
    wait_for(lambda: listed(browser) == first[:0:-1], 30, "the window's first page")
    browser.find_element("css selector", "button[name=next]").click()
    wait_for(lambda: listed(browser) == first[:1], 30, "the window's second page")
    assert not browser.find_element("css selector", "button[name=next]").is_enabled()
    browser.get(
        f"{server.url}/#/executions?workflow=order-demo&size=50&from={local[0]}-{local[1]}-{local[2]}T{local[3]}:{local[4]}:{local[5]}"
    )
    wait_for(lambda: listed(browser) == later[::-1], 30, "from the cut on")
    shot(browser, "executions-window")
