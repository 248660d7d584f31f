"""Every example runs, and every YAML (and JSON) block of docs/workflow-format.md loads.

Examples go through the loader and the compiler, then run for real through
`agentrun run --json --memory` with the command line written at the top of each file.
Reference blocks: a block whose first line is `# fragment` is part of a workflow and is
skipped; `# illustrative` marks a complete workflow that names services which do not exist
here (payments.charge), so it is loaded but not compiled; every other block is loaded and
compiled.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from agentrun.cli import main
from agentrun.engine import compile_workflow, load_workflow
from agentrun.integrations import default_agents, default_tools

ROOT = Path(__file__).resolve().parents[1]
# Every workflow file in examples/ (configs are named *_config.yaml).
EXAMPLES = sorted(
    p for p in (ROOT / "examples").glob("*.yaml") if not p.name.endswith("_config.yaml")
)
# The DAG examples, each with an `agentrun run ...` command at the top.
WORKFLOWS = [p for p in EXAMPLES if p.name.endswith("_workflow.yaml")]
REFERENCE = ROOT / "docs" / "workflow-format.md"

# The mock agents the reference's examples name, so that they compile and run offline.
DOC_CONFIG: dict[str, Any] = {
    "mock": {
        "responses": {
            name: [{"text": "ok", "category": "order"}]
            for name in ("classifier", "writer", "small", "triage", "summarizer", "judge")
        }
    }
}


def _command(path: Path) -> list[str]:
    """The first `agentrun run ...` command in the comment block at the top of an example
    (continued over lines that end in a backslash)."""
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    parts: list[str] = []
    for line in header:
        if not parts and "agentrun run " not in line:
            continue
        parts.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            break
    assert parts, f"{path.name}: no `agentrun run ...` command in the leading comment"
    argv = shlex.split(" ".join(parts))
    argv = argv[argv.index("run") :]
    assert argv[1] == f"examples/{path.name}", argv
    return argv


def _config_for(path: Path) -> dict[str, Any]:
    """The config file named by `--config` in the example's leading comment, if any."""
    import yaml

    match = re.search(r"--config (examples/\S+)", path.read_text())
    if match is None:
        return {}
    return yaml.safe_load((ROOT / match.group(1)).read_text())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_compiles(path: Path) -> None:
    config = _config_for(path)
    spec = load_workflow(path.read_text(), filename=str(path))
    if spec.mode == spec.MODE_STATE_MACHINE and not _machines_supported(config):
        pytest.skip("this build has no state-machine runtime")
    tools = default_tools(config)
    plan = compile_workflow(spec, tools=tools, agents=default_agents(config))
    assert plan.stages


def _machines_supported(config: dict[str, Any]) -> bool:
    from agentrun.engine.errors import InvalidWorkflow

    probe = load_workflow("name: p\nmode: state_machine\ninitial: a\nstates: {a: {final: true}}\n")
    try:
        compile_workflow(probe, tools=default_tools(config), agents=default_agents(config))
    except InvalidWorkflow as exc:
        return not any("not supported" in d.message for d in exc.diagnostics)
    return True


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_example_runs_with_its_command(path: Path, monkeypatch, capsys) -> None:
    """The command at the top of each DAG example, as written, ends SUCCEEDED."""
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):  # offline: the mock candidates
        monkeypatch.delenv(name, raising=False)
    _run(path, monkeypatch, capsys)


def _run(path: Path, monkeypatch, capsys) -> dict[str, Any]:
    monkeypatch.chdir(ROOT)
    argv = _command(path)
    capsys.readouterr()
    code = main([*argv, "--json", "--memory"])
    out, err = capsys.readouterr()
    body = json.loads(out)
    assert code == 0, (body, err)
    assert body["execution"]["state"] == "STATE_SUCCEEDED"
    return body


def test_customer_support(monkeypatch, capsys) -> None:
    body = _run(ROOT / "examples" / "customer_support_workflow.yaml", monkeypatch, capsys)
    nodes = _nodes(body)
    assert body["execution"]["output"]["category"] == "order"
    assert body["execution"]["output"]["answer"].startswith("Your order A-1001")
    assert body["execution"]["output"]["approval"] == {"approved": True, "by": "alice"}
    assert nodes["lookup_order"]["output"]["body"]["order_id"] == "A-1001"
    assert [item["sku"] for item in nodes["per_item"]["output"]] == ["KB-101", "MS-202"]
    assert all(n["state"] == "STATE_SUCCEEDED" for n in nodes.values()), nodes


def test_fan_out(monkeypatch, capsys) -> None:
    body = _run(ROOT / "examples" / "fan_out_workflow.yaml", monkeypatch, capsys)
    output = body["execution"]["output"]
    assert output["count"] == 4
    assert output["summaries"][1] == "Summarise: beta gamma"
    assert output["sizes"] == [
        {"index": 0, "chars": 5},
        {"index": 1, "chars": 10},
        {"index": 2, "chars": 18},
        {"index": 3, "chars": 3},
    ]
    assert output["combined"] == 8


def test_retries(monkeypatch, capsys) -> None:
    body = _run(ROOT / "examples" / "retry_workflow.yaml", monkeypatch, capsys)
    nodes = _nodes(body)
    assert nodes["flaky"]["state"] == "STATE_SUCCEEDED"
    assert nodes["flaky"]["attempt"] == 3
    assert nodes["flaky"]["output"] == {"attempt": 3}
    assert nodes["charge"]["state"] == "STATE_SKIPPED"
    assert nodes["charge"]["attempt"] == 1  # non_retryable: tried once
    assert nodes["charge"]["error"]["type"] == "payments.declined"
    assert nodes["charge"]["skip_reason"] == "handler"
    assert body["execution"]["output"] == {
        "flaky_attempts": 3,
        "charge": {"charged": False, "reason": "declined"},
    }


# --------------------------------------------------------------------------- named paths

# A path in the project, as docs and example headers name them (not part of a URL).
_PROJECT_PATH = re.compile(
    r"(?<![\w/.:-])((?:examples|docs|tests|proto|scripts|benchmarks|agentrun)/[\w./-]*[\w/])"
)
# Any file name in an example's leading comment: it must be in the project too.
_FILE_NAME = re.compile(r"(?<![\w/.:-])([\w./-]+\.(?:ya?ml|json|md|py|proto))\b")


def _header(path: Path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#") and not line.startswith('"""') and lines:
            break
        lines.append(line)
    return "\n".join(lines)


def _named_paths() -> list[tuple[str, str]]:
    named = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        named += [(doc.name, m) for m in _PROJECT_PATH.findall(doc.read_text())]
    for example in sorted((ROOT / "examples").iterdir()):
        header = _header(example)
        named += [(example.name, m) for m in _PROJECT_PATH.findall(header)]
        named += [(example.name, m) for m in _FILE_NAME.findall(header) if "/" not in m]
    return named


def test_every_path_named_in_docs_and_example_headers_exists() -> None:
    named = _named_paths()
    assert len(named) > 20
    missing = [
        f"{where}: {path}"
        for where, path in named
        if not any((base / path.rstrip("/.")).exists() for base in (ROOT, ROOT / "examples"))
    ]
    assert missing == []


# --------------------------------------------------------------------------- the reference


def _blocks() -> list[tuple[int, str]]:
    text = REFERENCE.read_text()
    blocks = []
    for match in re.finditer(r"^```(?:ya?ml|json)\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        line = text.count("\n", 0, match.start()) + 1
        blocks.append((line, match.group(1)))
    return blocks


BLOCKS = _blocks()


def test_reference_has_blocks() -> None:
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("line,block", BLOCKS, ids=[f"line{n}" for n, _ in BLOCKS])
def test_reference_block(line: int, block: str) -> None:
    first = block.splitlines()[0].strip() if block.strip() else ""
    if first.startswith("# fragment"):
        pytest.skip("a fragment of a workflow")
    spec = load_workflow(block, filename=f"workflow-format.md:{line}")
    if first.startswith("# illustrative"):
        return
    compile_workflow(spec, tools=default_tools(DOC_CONFIG), agents=default_agents(DOC_CONFIG))


def _nodes(body: dict) -> dict[str, dict]:
    """`run --json` lists the nodes in the workflow's order; by node id here."""
    return {node["node_id"]: node for node in body["nodes"]}
