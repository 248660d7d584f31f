"""`agentrun run`: the --json result, exit codes, signals, progress."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

HELLO = """
name: hello
input_schema: {type: object, required: [who], properties: {who: {type: string}}}
nodes:
  - {id: greet, pass: {value: "Hello, ${{ input.who }}!"}}
  - {id: shout, needs: [greet], tool: {name: core.echo, args: {text: "${{ nodes.greet.output }}"}}}
output: "${{ nodes.shout.output.text }}"
"""

FAILING = """
name: failing
nodes:
  - {id: ok, pass: {value: 1}}
  - id: boom
    needs: [ok]
    tool: {name: core.fail, args: {type: tool_error, message: kaboom}}
"""

WAITING = """
name: waiting
nodes:
  - {id: approve, wait: {signal: approval}}
  - {id: after, needs: [approve], pass: {value: "${{ nodes.approve.output.ok }}"}}
output: "${{ nodes.after.output }}"
"""


def nodes(body: dict) -> dict[str, dict]:
    """run --json's nodes (a list, in the workflow's order) by node id."""
    return {node["node_id"]: node for node in body["nodes"]}


def test_json_shape_on_success(cli, write) -> None:
    result = cli(
        "run", write("hello.yaml", HELLO), "--memory", "--json", "--input", '{"who": "Ada"}'
    )
    assert result.code == 0, result.err
    body = result.json()
    # GetExecution's answer with include_nodes, in the protobuf JSON mapping.
    assert set(body) == {"execution", "nodes"}
    execution = body["execution"]
    assert execution["state"] == "STATE_SUCCEEDED"
    assert execution["output"] == "Hello, Ada!"
    assert "error" not in execution
    assert execution["name"].startswith("executions/") and len(execution["name"]) > 11
    assert execution["end_time"].endswith("Z") and execution["workflow"] == "workflows/hello"
    greet = nodes(body)["greet"]
    assert {k: greet[k] for k in ("state", "attempt", "output")} == {
        "state": "STATE_SUCCEEDED",
        "attempt": 1,
        "output": "Hello, Ada!",
    }
    assert nodes(body)["shout"]["output"] == {"text": "Hello, Ada!"}


def test_failed_execution_exits_1(cli, write) -> None:
    result = cli("run", write("failing.yaml", FAILING), "--memory", "--json")
    assert result.code == 1
    body = result.json()
    assert body["execution"]["state"] == "STATE_FAILED"
    assert nodes(body)["boom"]["state"] == "STATE_FAILED"
    assert nodes(body)["ok"]["state"] == "STATE_SUCCEEDED"
    assert body["execution"]["error"]["type"] == "tool_error"
    assert "Traceback" not in result.err


def test_invalid_input_exits_2(cli, write) -> None:
    result = cli("run", write("hello.yaml", HELLO), "--memory", "--json", "--input", '{"who": 3}')
    assert result.code == 2
    body = result.json()  # still exactly one JSON object on stdout
    assert set(body) == {"error"}
    assert body["error"]["type"] == "invalid_input"
    assert "invalid input" in result.err


def test_invalid_workflow_exits_2_with_diagnostics_on_stderr(cli, write) -> None:
    path = write("bad.yaml", "name: bad\nnodes:\n  - {id: a, tool: {name: no.such.tool}}\n")
    result = cli("run", path, "--memory", "--json")
    assert result.code == 2
    assert "nodes[0].tool" in result.err
    assert result.json()["error"]["type"] == "invalid_workflow"


@pytest.mark.parametrize(
    "extra",
    [
        ["--input", "{not json"],
        ["--signal", "no-equals-sign"],
        ["--signal", "approval={bad"],
        ["--config", "missing-config.yaml"],
        ["--timeout", "soon"],
    ],
)
def test_bad_arguments_exit_2(cli, write, extra) -> None:
    result = cli("run", write("hello.yaml", HELLO), "--memory", "--input", '{"who": "x"}', *extra)
    assert result.code == 2
    assert result.err.startswith("agentrun: ")
    assert "Traceback" not in result.err


def test_config_with_bad_limits_exits_2(cli, write) -> None:
    config = write("config.yaml", "limits: {max_running_nodez: 1}\n")
    result = cli(
        "run", write("hello.yaml", HELLO), "--memory", "--config", config, "--input", '{"who": "x"}'
    )
    assert result.code == 2
    assert "max_running_nodez" in result.err


def test_config_limits_and_mock_responses(cli, write) -> None:
    config = write(
        "config.yaml",
        "mock: {responses: {oracle: [{text: sure}, {text: never}]}}\n"
        "limits: {max_running_nodes: 1, rate_limits: {slow: {rate: 100, per: 1s, burst: 1}}}\n",
    )
    flow = write(
        "oracle.yaml",
        "name: oracle\nnodes:\n"
        "  - {id: a, agent: {model: mock/oracle, prompt: q}, rate_limit: slow}\n"
        "  - {id: b, agent: {model: mock/oracle, prompt: q}, rate_limit: slow}\n"
        'output: "${{ [nodes.a.output.text, nodes.b.output.text] }}"\n',
    )
    result = cli("run", flow, "--memory", "--json", "--config", config)
    assert result.code == 0, result.out + result.err
    assert sorted(result.json()["execution"]["output"]) == ["never", "sure"]


def test_signal_is_delivered(cli, write) -> None:
    result = cli(
        "run", write("w.yaml", WAITING), "--memory", "--json", "--signal", 'approval={"ok": true}'
    )
    assert result.code == 0, result.out + result.err
    body = result.json()
    assert body["execution"]["output"] is True
    assert nodes(body)["approve"]["output"] == {"ok": True}


def test_signals_for_other_names_do_not_satisfy_a_wait(cli, write) -> None:
    # Nothing in this process can send `approval` later: run reports the wait, exit 1.
    result = cli(
        "run", write("w.yaml", WAITING), "--memory", "--json", "--signal", 'other={"ok": true}'
    )
    assert result.code == 1
    body = result.json()
    assert body["execution"]["state"] == "STATE_WAITING"
    assert nodes(body)["approve"]["state"] == "STATE_WAITING"
    assert "approve" in body["note"]


def test_a_wait_with_a_long_timeout_is_reported_not_waited_out(cli, write) -> None:
    text = WAITING.replace("wait: {signal: approval}", "wait: {signal: approval, timeout: 24h}")
    result = cli("run", write("w.yaml", "timeout: 1h\n" + text), "--memory", "--json")
    assert result.code == 1
    body = result.json()
    assert body["execution"]["state"] == "STATE_WAITING"
    assert "--signal" in body["note"]


def test_short_timers_are_waited_out(cli, write) -> None:
    text = WAITING.replace("wait: {signal: approval}", "wait: {signal: approval, timeout: 200ms}")
    result = cli("run", write("w.yaml", text), "--memory", "--json")
    assert result.code == 1
    body = result.json()
    assert body["execution"]["state"] == "STATE_FAILED"
    assert nodes(body)["approve"]["error"]["type"] == "timeout"


def test_human_output(cli, write) -> None:
    result = cli("run", write("hello.yaml", HELLO), "--memory", "--input", '{"who": "Ada"}')
    assert result.code == 0
    first, *rest = result.out.splitlines()
    assert first.startswith("SUCCEEDED  execution ")
    assert rest == ['"Hello, Ada!"']


def test_progress_when_asked(cli, write) -> None:
    result = cli(
        "run",
        write("hello.yaml", HELLO),
        "--memory",
        "--progress",
        "always",
        "--input",
        '{"who": "Ada"}',
    )
    assert result.code == 0
    lines = result.err.splitlines()
    assert any(" greet " in line and "succeeded" in line for line in lines), lines
    assert any(" shout " in line and "running" in line for line in lines), lines
    assert "\033[" not in result.err  # no colour when stderr is not a terminal


def test_default_store_is_sqlite_in_dot_agentrun(cli, write, tmp_path) -> None:
    result = cli("run", write("hello.yaml", HELLO), "--json", "--input", '{"who": "Ada"}')
    assert result.code == 0, result.err
    assert (tmp_path / ".agentrun").is_dir()
    assert any((tmp_path / ".agentrun").iterdir())


def test_subprocess_exit_codes_and_single_json_object(tmp_path) -> None:
    """The real entry point, in a fresh interpreter: stdout holds exactly one JSON object."""
    import json

    (tmp_path / "failing.yaml").write_text(FAILING)
    env = {
        k: v for k, v in os.environ.items() if k not in ("AGENTRUN_DEBUG", "AGENTRUN_DATABASE_URL")
    }
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from agentrun.cli import main; sys.exit(main())",
            "run",
            "failing.yaml",
            "--memory",
            "--json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["execution"]["state"] == "STATE_FAILED"
    assert "Traceback" not in proc.stderr


def test_unexpected_errors_keep_the_json_promise(cli, write, monkeypatch) -> None:
    from agentrun.cli import run as run_command

    async def broken(request):
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(run_command, "run_in_process", broken)
    path = write("hello.yaml", HELLO)
    result = cli("run", path, "--memory", "--json", "--input", '{"who": "x"}')
    assert result.code == 1
    assert result.json()["error"] == {
        "type": "internal",
        "message": "RuntimeError: engine exploded",
    }
    assert "Traceback" not in result.err

    result = cli("run", path, "--memory", "--input", '{"who": "x"}')
    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith("agentrun: internal error: RuntimeError: engine exploded\n")


def test_nodes_in_workflow_order(cli, write) -> None:
    flow = "name: order\nnodes:\n" + "".join(
        f"  - {{id: {name}, pass: {{value: 1}}}}\n" for name in ("zeta", "alpha", "mid", "beta")
    )
    result = cli("run", write("order.yaml", flow), "--memory", "--json")
    assert list(nodes(result.json())) == ["zeta", "alpha", "mid", "beta"]


@pytest.mark.parametrize("name,text", [("in.json", '{"who": "File"}'), ("in.yaml", "who: File\n")])
def test_input_file(cli, write, name, text) -> None:
    result = cli(
        "run", write("hello.yaml", HELLO), "--memory", "--json", "--input-file", write(name, text)
    )
    assert result.code == 0, result.err
    assert result.json()["execution"]["output"] == "Hello, File!"


def test_input_and_input_file_are_exclusive(cli, write) -> None:
    result = cli("run", write("hello.yaml", HELLO), "--input", "{}", "--input-file", "x.json")
    assert result.code == 2


def test_db_url(cli, write, tmp_path) -> None:
    db = tmp_path / "elsewhere" / "runs.db"
    result = cli(
        "run",
        write("hello.yaml", HELLO),
        "--json",
        "--db",
        f"sqlite:///{db}",
        "--input",
        '{"who": "db"}',
    )
    assert result.code == 0, result.err
    assert db.exists()
    assert not (tmp_path / ".agentrun").exists()


def test_bad_db_url_exits_2(cli, write) -> None:
    result = cli("run", write("hello.yaml", HELLO), "--db", "not a url", "--input", '{"who": "x"}')
    assert result.code == 2
    assert result.err.startswith("agentrun: --db not a url: ")


def test_secrets_from_config_and_environment(cli, write, monkeypatch) -> None:
    monkeypatch.setenv("TEST_AGENTRUN_TOKEN", "t0ken")
    config = write("c.yaml", "secrets: {plain: abcd, token: {env: TEST_AGENTRUN_TOKEN}}\n")
    flow = write(
        "s.yaml",
        "name: s\nnodes:\n"
        '  - {id: a, tool: {name: core.echo, args: {p: "${{ secrets.plain }}", t: "${{ secrets.token }}"}}}\n',
    )
    result = cli("run", flow, "--memory", "--json", "--config", config)
    assert result.code == 0, result.out + result.err
    # Both resolved (only a secret's value is masked), and neither is stored.
    assert result.json()["execution"]["output"] == {"a": {"p": "[REDACTED]", "t": "[REDACTED]"}}


def test_missing_secret_variable_exits_2(cli, write) -> None:
    config = write("c.yaml", "secrets: {token: {env: TEST_AGENTRUN_UNSET_VARIABLE}}\n")
    result = cli(
        "run", write("hello.yaml", HELLO), "--memory", "--config", config, "--input", '{"who": "x"}'
    )
    assert result.code == 2
    assert "TEST_AGENTRUN_UNSET_VARIABLE" in result.err


CHILD = """
name: child
nodes:
  - {id: double, pass: {value: "${{ input.n * 2 }}"}}
output: "${{ nodes.double.output }}"
"""

PARENT = """
name: parent
nodes:
  - {id: call, workflow: {name: child, input: {n: 21}}}
output: "${{ nodes.call.output }}"
"""


def test_with_creates_child_workflows(cli, write) -> None:
    parent, child = write("parent.yaml", PARENT), write("child.yaml", CHILD)
    result = cli("run", parent, "--memory", "--json", "--with", child)
    assert result.code == 0, result.out + result.err
    assert result.json()["execution"]["output"] == 42
    # Without it, the child is missing: the workflow node fails.
    result = cli("run", parent, "--memory", "--json")
    assert result.code == 1
    assert result.json()["execution"]["state"] == "STATE_FAILED"


def test_with_an_invalid_child_exits_2(cli, write) -> None:
    bad = write("bad.yaml", "name: child\nnodes: [{id: x, tool: {name: nope}}]\n")
    result = cli("run", write("parent.yaml", PARENT), "--memory", "--json", "--with", bad)
    assert result.code == 2
    assert result.json()["error"]["type"] == "invalid_workflow"


def test_json_lists_every_node_a_node_never_reached_is_pending(cli, write) -> None:
    # `after` is never reached: the run stops at the wait nobody answers.
    result = cli("run", write("w.yaml", WAITING), "--memory", "--json")
    assert result.code == 1
    body = result.json()
    assert [n["node_id"] for n in body["nodes"]] == ["approve", "after"]
    assert nodes(body)["after"]["state"] == "STATE_PENDING"
    assert nodes(body)["approve"]["state"] == "STATE_WAITING"


def test_running_an_unchanged_file_adds_no_version(cli, write, tmp_path) -> None:
    import sqlite3

    path = write("hello.yaml", HELLO)
    for _ in range(2):
        result = cli("run", path, "--json", "--input", '{"who": "Ada"}')
        assert result.code == 0, result.err
        assert result.json()["execution"]["workflow_version"] == 1
    write("hello.yaml", HELLO.replace("Hello", "Hi"))
    result = cli("run", path, "--json", "--input", '{"who": "Ada"}')
    assert result.json()["execution"]["workflow_version"] == 2
    assert result.json()["execution"]["output"] == "Hi, Ada!"
    with sqlite3.connect(tmp_path / ".agentrun" / "agentrun.db") as db:
        versions = db.execute("select version from workflows where name = 'hello'").fetchall()
    assert sorted(v for (v,) in versions) == [1, 2]
