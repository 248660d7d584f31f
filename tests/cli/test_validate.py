"""`agentrun validate`: stages of a good workflow, every problem of a bad one."""

from __future__ import annotations

GOOD = """
name: good
nodes:
  - {id: a, pass: {value: 1}}
  - {id: b, needs: [a], tool: {name: core.echo, args: {x: "${{ nodes.a.output }}"}}}
  - {id: c, needs: [a], agent: {model: mock/echo, prompt: hi}}
  - {id: d, needs: [b, c], aggregate: {strategy: first}}
"""

# Three problems the compiler must all report, each with its field path.
BAD = """
name: bad
nodes:
  - {id: a, pass: {value: 1}}
  - {id: b, needs: [a, ghost], pass: {value: 2}}
  - {id: c, needs: [a], tool: {name: no.such.tool}}
  - {id: d, needs: [a], when: "${{ nodes.a.output + }}", pass: {value: 3}}
"""


def test_good_file_prints_stages(cli, write) -> None:
    result = cli("validate", write("good.yaml", GOOD))
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["stage 1: a", "stage 2: b, c", "stage 3: d"]
    assert result.err == ""


def test_good_file_json(cli, write) -> None:
    path = write("good.yaml", GOOD)
    result = cli("validate", path, "--json")
    assert result.code == 0
    body = result.json()
    assert body["valid"] is True
    assert body["name"] == "good"
    assert body["stages"] == [["a"], ["b", "c"], ["d"]]
    assert body["diagnostics"] == []


def test_bad_file_prints_every_problem_with_its_path(cli, write) -> None:
    result = cli("validate", write("bad.yaml", BAD))
    assert result.code == 2
    lines = result.out.splitlines()
    assert len(lines) >= 3, result.out
    assert any(line.startswith("nodes[1].needs") and "ghost" in line for line in lines), lines
    assert any(line.startswith("nodes[2].tool") and "no.such.tool" in line for line in lines), lines
    assert any(line.startswith("nodes[3].when") for line in lines), lines
    assert "Traceback" not in result.out + result.err


def test_bad_file_json(cli, write) -> None:
    result = cli("validate", write("bad.yaml", BAD), "--json")
    assert result.code == 2
    body = result.json()
    assert body["valid"] is False
    paths = [d["path"] for d in body["diagnostics"]]
    assert any(p.startswith("nodes[1].needs") for p in paths), paths
    assert any(p.startswith("nodes[2].tool") for p in paths), paths
    assert any(p.startswith("nodes[3].when") for p in paths), paths


def test_loader_errors_have_paths(cli, write) -> None:
    result = cli(
        "validate", write("typo.yaml", "name: typo\nnodes:\n  - {id: a, pas: {value: 1}}\n")
    )
    assert result.code == 2
    assert result.out.startswith("nodes[0]"), result.out


def test_unreadable_file(cli) -> None:
    result = cli("validate", "missing.yaml")
    assert result.code == 2
    assert result.err == "agentrun: missing.yaml: no such file\n"


def test_no_command_prints_usage(cli) -> None:
    result = cli()
    assert result.code == 2
    assert "usage: agentrun" in result.err


def test_version(cli) -> None:
    from importlib.metadata import version

    result = cli("--version")
    assert result.code == 0
    assert result.out == f"agentrun {version('agentrun')}\n"


def test_unknown_option_is_a_usage_error(cli) -> None:
    result = cli("validate", "--bogus", "x.yaml")
    assert result.code == 2


def test_stdin(cli, monkeypatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(GOOD))
    result = cli("validate", "-")
    assert result.code == 0
    assert result.out.startswith("stage 1: a\n")


def test_mock_models_need_the_config(cli, write) -> None:
    flow = write("m.yaml", "name: m\nnodes:\n  - {id: a, agent: {model: mock/oracle, prompt: q}}\n")
    result = cli("validate", flow)
    assert result.code == 2
    assert result.out.startswith("nodes[0].agent.model: ")
    assert result.err.startswith("hint: ") and "--config" in result.err  # what to do about it
    assert "--config" in cli("validate", flow, "--json").json()["hint"]
    config = write("c.yaml", "mock: {responses: {oracle: {text: hi}}}\n")
    assert cli("validate", flow, "--config", config).code == 0
    # With a config given, the problem is the config's, not a missing flag: no hint.
    bare = write("bare.yaml", "limits: {}\n")
    result = cli("validate", flow, "--config", bare)
    assert result.code == 2 and "hint" not in result.err


def test_warnings_are_printed(cli, write) -> None:
    flow = write(
        "w.yaml",
        "name: w\nnodes:\n"
        "  - {id: a, pass: {value: 1}, export: {k: '${{ output }}'}}\n"
        "  - {id: b, pass: {value: 2}, export: {k: '${{ output }}'}}\n",
    )
    result = cli("validate", flow)
    assert result.code == 0
    assert result.out.splitlines()[0] == "stage 1: a, b"
    assert result.out.splitlines()[1].startswith("warning: nodes[1].export.k: ")


MACHINE = """
name: door
mode: state_machine
initial: closed
states:
  closed: {on: {OPEN: {target: open}}}
  open: {on: {CLOSE: {target: done}}}
  done: {final: true}
"""


def test_state_machine(cli, write) -> None:
    path = write("door.yaml", MACHINE)
    result = cli("validate", path)
    if result.code == 2:  # a build without the state-machine runtime says so
        assert result.out == "mode: state machine workflows are not supported by this build\n"
    else:
        assert result.code == 0
        assert result.out.splitlines() == [
            "state machine, initial state closed",
            "stage 1: closed",
            "stage 2: open",
            "stage 3: done",
        ]
    # `run` is for DAGs either way.
    result = cli("run", path, "--memory", "--json")
    assert result.code == 2
    assert result.json()["error"]["type"] == "invalid_workflow"
