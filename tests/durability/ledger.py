"""The ledger: what the steps really did, written outside the store the engine commits to.

Each call of the `durability.step` tool appends two fsync'd lines to a shared file (O_APPEND:
lines from several processes never interleave, and the file order is the order of the writes):

    start <idempotency key> <token> <replica> <generation>
    done  <idempotency key> <token> <replica> <generation>

The token is fresh per call and the tool returns it as the node's output, so the store says
which call's result it committed. From both the checks are exact:

- lost: a step of a finished execution with no committed result (or a token no call wrote);
- run twice after its commit: a `start` line for a key after the `done` line of the call whose
  result was committed. A correct engine may run a step again only while its result is not
  yet committed (a kill between the side effect and the commit); once committed, never.

Tests may append `mark <label>` lines to place outside events (a kill, a SIGSTOP) in the order.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentrun.engine.ports import CallContext, Effect, Tool

TOOL = "durability.step"


class LedgerStep(Tool):
    """Sleeps `args.sleep` seconds (the side effect's duration), then records it."""

    name = TOOL
    description = "a step that records each call in an fsync'd ledger file"
    effect = Effect.IDEMPOTENT

    def __init__(
        self, path: str | os.PathLike[str], replica: str = "local", generation: str = "0"
    ) -> None:
        self.path = str(path)
        self.replica = replica
        self.generation = str(generation)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _append(self, kind: str, key: str, token: str) -> None:
        os.write(self.fd, f"{kind} {key} {token} {self.replica} {self.generation}\n".encode())
        os.fsync(self.fd)

    async def call(self, args: Any, ctx: CallContext) -> Any:
        token = secrets.token_hex(6)
        self._append("start", ctx.idempotency_key, token)
        sleep = float((args or {}).get("sleep", 0))
        if sleep:
            await asyncio.sleep(sleep)
        self._append("done", ctx.idempotency_key, token)
        return {"token": token, "replica": self.replica, "gen": self.generation}


def ledger_tool(options: dict[str, Any] | None = None) -> LedgerStep:
    """Factory for `agentrun serve` config: `tools: {register: [{factory:
    "tests.durability.ledger:ledger_tool", options: {path, replica}}]}`; the generation comes
    from $DURABILITY_GENERATION so that a restarted server writes a new one."""
    options = dict(options or {})
    return LedgerStep(
        options["path"],
        replica=str(options.get("replica") or os.environ.get("DURABILITY_REPLICA", "local")),
        generation=os.environ.get("DURABILITY_GENERATION", "0"),
    )


def steps_workflow(
    name: str = "steps", steps: int = 20, sleep: float = 0.02, max_attempts: int = 5
) -> str:
    """A chain s0 -> s1 -> ... of ledger steps (YAML)."""
    lines = [f"name: {name}", "nodes:"]
    for i in range(steps):
        needs = f"needs: [s{i - 1}], " if i else ""
        lines.append(
            f"  - {{id: s{i}, {needs}retry: {{max_attempts: {max_attempts}, initial_interval: 10ms}}, "
            f"tool: {{name: {TOOL}, args: {{sleep: {sleep}}}}}}}"
        )
    return "\n".join(lines) + "\n"


@dataclass
class Entry:
    index: int
    kind: str
    key: str
    token: str
    replica: str
    generation: str


@dataclass
class Ledger:
    entries: list[Entry]
    marks: dict[str, int] = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Ledger:
        entries: list[Entry] = []
        marks: dict[str, int] = {}
        p = Path(path)
        if not p.exists():
            return cls(entries, marks)
        for line in p.read_text().splitlines():
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "mark":
                marks[" ".join(parts[1:])] = len(entries)
                continue
            if len(parts) != 5 or parts[0] not in ("start", "done"):
                # A torn last line can only come from a kill inside write(): none expected.
                raise AssertionError(f"malformed ledger line {line!r}")
            entries.append(Entry(len(entries), *parts))
        return cls(entries, marks)

    def starts(self) -> Counter[str]:
        return Counter(e.key for e in self.entries if e.kind == "start")

    def done_by_token(self) -> dict[str, Entry]:
        return {e.token: e for e in self.entries if e.kind == "done"}


def mark(path: str | os.PathLike[str], label: str) -> None:
    fd = os.open(str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"mark {label.replace(chr(10), ' ')}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Report:
    keys: int
    runs: int
    extra_runs: int
    lost: list[str]
    rerun_after_commit: list[str]
    unknown_tokens: list[str]
    # Committed results and uncommitted calls by (replica, generation).
    committed_by: Counter[tuple[str, str]]
    wasted_by: Counter[tuple[str, str]]

    def assert_ok(self) -> None:
        problems = []
        if self.lost:
            problems.append(f"{len(self.lost)} steps lost, e.g. {self.lost[:5]}")
        if self.rerun_after_commit:
            problems.append(
                f"{len(self.rerun_after_commit)} committed steps ran again, e.g. {self.rerun_after_commit[:5]}"
            )
        if self.unknown_tokens:
            problems.append(
                f"{len(self.unknown_tokens)} committed results no call wrote: {self.unknown_tokens[:5]}"
            )
        assert not problems, "; ".join(problems)

    def summary(self) -> str:
        return (
            f"{self.keys} steps, {self.runs} calls ({self.extra_runs} repeated before commit), "
            f"lost {len(self.lost)}, ran again after commit {len(self.rerun_after_commit)}"
        )


def check(ledger: Ledger, outputs: dict[str, Any], expected: set[str]) -> Report:
    """`outputs`: the committed output of each SUCCEEDED step, by idempotency key
    (`execution/node`); `expected`: every key that must have been committed."""
    starts = ledger.starts()
    done = ledger.done_by_token()
    lost = sorted(k for k in expected if k not in outputs)
    unknown, again = [], []
    committed_by: Counter[tuple[str, str]] = Counter()
    committed_tokens = set()
    last_start: dict[str, int] = {}
    for e in ledger.entries:
        if e.kind == "start":
            last_start[e.key] = e.index
    for key, output in outputs.items():
        token = (output or {}).get("token") if isinstance(output, dict) else None
        entry = done.get(token) if token else None
        if entry is None or entry.key != key:
            unknown.append(key)
            continue
        committed_tokens.add(token)
        committed_by[(entry.replica, entry.generation)] += 1
        if last_start.get(key, -1) > entry.index:
            again.append(key)
    wasted: Counter[tuple[str, str]] = Counter()
    by_key_start: dict[str, list[Entry]] = defaultdict(list)
    for e in ledger.entries:
        if e.kind == "start":
            by_key_start[e.key].append(e)
            if e.token not in committed_tokens and e.key in outputs:
                wasted[(e.replica, e.generation)] += 1
    runs = sum(starts.values())
    return Report(
        keys=len(expected),
        runs=runs,
        extra_runs=runs - len(set(starts)),
        lost=lost,
        rerun_after_commit=sorted(again),
        unknown_tokens=sorted(unknown),
        committed_by=committed_by,
        wasted_by=wasted,
    )
