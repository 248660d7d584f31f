"""docs/architecture.md stays the map of the code: it names every module under agentrun/ (but
the generated agentrun/v1 and the Alembic migrations), every path and code name it mentions
exists, and the import rules it states hold."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PACKAGE = ROOT / "agentrun"
NOT_MAPPED = ("agentrun/v1/", "agentrun/storage/migrations/")
# A path as the doc writes it: agentrun/... ending in .py or /, inside backticks.
PATH = re.compile(r"`(agentrun/[\w/.]*?(?:\.py|/))`")


def _named() -> set[str]:
    return set(PATH.findall(DOC.read_text()))


def _modules() -> list[str]:
    return sorted(
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*.py")
        if not path.relative_to(ROOT).as_posix().startswith(NOT_MAPPED)
    )


def test_every_module_is_on_the_map() -> None:
    missing = [m for m in _modules() if m not in _named()]
    assert missing == [], (
        "modules docs/architecture.md does not name (add a line for each to its module map, "
        f"in the commit that adds or moves the module): {missing}"
    )


def test_every_path_on_the_map_exists() -> None:
    named = _named()
    assert len(named) > 50  # the pattern still finds the map
    gone = sorted(p for p in named if not (ROOT / p).exists())
    assert gone == [], f"docs/architecture.md names paths that do not exist: {gone}"


def _code_names() -> tuple[set[str], dict[str, set[str]]]:
    """Names defined or imported anywhere in agentrun/ (the generated stubs included), and the
    members of each class (methods, nested classes, class fields, `self.` attributes)."""
    names: set[str] = set()
    members: dict[str, set[str]] = {}
    for path in [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.pyi")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.ImportFrom):
                names.update(alias.asname or alias.name for alias in node.names)
            if isinstance(node, ast.ClassDef):
                inside = members.setdefault(node.name, set())
                for child in ast.walk(node):
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        inside.add(child.name)
                    elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                        inside.add(child.id)
                    elif isinstance(child, ast.Attribute) and isinstance(child.ctx, ast.Store):
                        inside.add(child.attr)
    return names, members


def test_every_name_on_the_map_exists() -> None:
    """`Class.member`, `_private`, `function()` and CamelCase names in backticks are code the
    doc points at: each must still be defined (or imported) under agentrun/."""
    names, members = _code_names()
    gone = []
    checked = 0
    for token in sorted(set(re.findall(r"`([^`\n]+)`", DOC.read_text()))):
        member = re.fullmatch(r"([A-Z]\w*)\.(\w+)(?:\(\))?", token)
        if member:
            cls, attr = member.groups()
            checked += 1
            if attr not in members.get(cls, ()):
                gone.append(token)
            continue
        name = re.fullmatch(r"(\w+)(?:\(\))?", token)
        if name and (
            token.startswith("_")
            or token.endswith("()")
            or re.fullmatch(r"[A-Z][a-z]+[A-Z]\w*", token)
        ):
            checked += 1
            if name.group(1) not in names:
                gone.append(token)
    assert checked > 40  # the patterns still find the doc's references
    assert gone == [], f"docs/architecture.md names code that no longer exists: {gone}"


def test_the_map_is_linked() -> None:
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()
    assert "(architecture.md)" in (ROOT / "docs" / "runtime.md").read_text()


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports (at any depth, TYPE_CHECKING included), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


# The import rules of docs/architecture.md ("Layers and import rules"): package -> prefixes
# its modules must not import.
FORBIDDEN = {
    "agentrun/engine/": (
        "grpc",
        "grpc_status",
        "grpc_health",
        "connectrpc",
        "uvicorn",
        "agentrun.server",
        "agentrun.client",
        "agentrun.cli",
        "agentrun.integrations",
    ),
    "agentrun/storage/": (
        "grpc",
        "agentrun.engine",
        "agentrun.server",
        "agentrun.client",
        "agentrun.cli",
        "agentrun.integrations",
    ),
    "agentrun/integrations/": ("agentrun.server", "agentrun.cli"),
    "agentrun/client/": (
        "agentrun.engine",
        "agentrun.storage",
        "agentrun.server",
        "agentrun.integrations",
        "agentrun.cli",
    ),
    "agentrun/server/": ("agentrun.cli", "agentrun.client"),
    "agentrun/worker/": (
        "agentrun.engine",
        "agentrun.storage",
        "agentrun.server",
        "agentrun.integrations",
        "agentrun.cli",
        "agentrun.client",
    ),
}


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_import_rules_hold() -> None:
    broken = []
    for module in _modules():
        for package, forbidden in FORBIDDEN.items():
            if not module.startswith(package):
                continue
            for line, imported in _imports(ROOT / module):
                # The engine reads the workflow language's messages, never gRPC stubs.
                if any(_matches(imported, p) for p in forbidden) or (
                    package == "agentrun/engine/" and imported.endswith("_pb2_grpc")
                ):
                    broken.append(f"{module}:{line} imports {imported}")
    assert broken == [], broken


def test_import_rules_catch_a_violation(tmp_path: Path) -> None:
    """The checker is not vacuous: an engine module importing grpc is found."""
    module = tmp_path / "bad.py"
    module.write_text(
        "import asyncio\n\ndef f():\n    from agentrun.server import errors\n    import grpc\n"
    )
    imported = [name for _, name in _imports(module)]
    assert any(_matches(n, "agentrun.server") for n in imported)
    assert any(_matches(n, "grpc") for n in imported)
    assert not _matches("grpcx", "grpc")
