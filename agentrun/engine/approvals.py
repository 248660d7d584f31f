"""Approvals: waits for a signal with their own ids, callback tokens and answer schemas;
ListWaits and AnswerWait.

Every wait for a signal (a `wait` node, or a map item whose body is a wait) has an id,
`EXECUTION/KEY/ATTEMPT` (KEY is the node id, or `ID[INDEX]` for a map item), so the next
wait of the same node (another attempt) has another; and a single-use callback token, which
names the wait and proves it was read from its `node.waiting` event. The node record keeps
the latest wait (`NodeRecord.wait`: id, signal, since, the token's SHA-256) after it ends, so a
late answer learns why it is refused.

An answer is applied once, to its own wait only:
1. it is checked here against the stored node record (the wait must be the node's latest and
   the node still WAITING) and against the wait's schema (INVALID_ARGUMENT naming the path);
2. its signal id is `wait:WAIT_ID`. When the run that owns the execution is here, the answer
   is handed to it not stored yet (`Engine.offer_signal`), and the turn that applies it to
   its wait (or refuses it, the wait having ended meanwhile) stores it with that effect: one
   commit. Otherwise (the run is on another replica, or declined it) it is stored first: the
   store's unique (execution, signal id) lets one answer per wait in, whichever replica takes
   it, also across a crash (the same answer sent again while the first is not yet applied
   waits for the first's outcome; once it is applied, any answer is refused);
3. the run applies it to that wait if the wait is still pending, and otherwise marks it
   refused (`signal.refused`); it is never kept for a later wait;
4. the caller hears which once the run has committed it; a run that stops before that commit
   answers UNAVAILABLE (nothing of the answer stored: sending it again is safe), so an answer
   heard as applied is never lost. When it stopped because another replica stored an answer
   to the wait meanwhile (the unique signal id refused the turn's commit), the call is
   answered as the stored way answers it (ANSWERED for other data).

A signal sent by name (SignalExecution) keeps its old rule: the oldest pending wait for that
name takes it (in the order the waits began, across branches and map items), else it is kept
for the next wait of that name.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import jsonschema

from agentrun.engine import sizes
from agentrun.engine.errors import Diagnostic, IllegalTransition, InvalidArgument, Unavailable
from agentrun.engine.plan import MapNode, WaitNode, WaitStep
from agentrun.storage.records import ExecutionRecord, NodeRecord, NodeState, SignalRecord

if TYPE_CHECKING:
    from agentrun.engine.engine import Engine
    from agentrun.engine.plan import DagPlan

# The signal id of an answer to a wait: `wait:WAIT_ID`; refused by SignalExecution.
ANSWER_PREFIX = "wait:"
# `consumed_by` of an answer the run refused: `refused:REASON`.
REFUSED_PREFIX = "refused:"
# How long AnswerWait waits for the run to apply or refuse a stored answer.
SETTLE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class WaitRef:
    """What a wait id names: the execution, the node or map item, its attempt."""

    execution_id: str
    key: str
    attempt: int

    @property
    def id(self) -> str:
        return f"{self.execution_id}/{self.key}/{self.attempt}"

    @property
    def node_id(self) -> str:
        return self.key.split("[", 1)[0]

    @property
    def map_index(self) -> int | None:
        return int(self.key.split("[", 1)[1][:-1]) if "[" in self.key else None


@dataclass(frozen=True, slots=True)
class WaitView:
    """A wait as ListWaits and AnswerWait return it."""

    ref: WaitRef
    workflow: str
    signal: str
    since: float
    timeout_at: float | None
    schema: dict[str, Any] | None
    pending: bool


def parse_wait_id(text: str, field: str = "wait_id") -> WaitRef:
    execution_id, key, attempt = (
        (text.rsplit("/", 2) + ["", ""])[:3] if text.count("/") >= 2 else ("", "", "")
    )
    # ASCII digits, a few of them: str.isdigit takes digits int() refuses ('²'), and int()
    # refuses more than 4300 digits; both were a ValueError, answered INTERNAL.
    if (
        not execution_id
        or not key
        or not (attempt.isascii() and attempt.isdigit() and len(attempt) <= 9)
        or int(attempt) < 1
    ):
        raise InvalidArgument(
            [
                Diagnostic(
                    field,
                    "not a wait id (EXECUTION/NODE/ATTEMPT, from ListWaits or a node.waiting event)",
                )
            ]
        )
    return WaitRef(execution_id, key, int(attempt))


def new_wait(ref: WaitRef, signal: str, now: float) -> tuple[dict[str, Any], str]:
    """A new wait's record (`NodeRecord.wait`) and its callback token (only the token's hash
    is stored)."""
    nonce = secrets.token_urlsafe(18)
    encoded = base64.urlsafe_b64encode(ref.id.encode()).decode().rstrip("=")
    record = {"id": ref.id, "signal": signal, "since": now, "token_sha256": _sha(nonce)}
    return record, f"{encoded}.{nonce}"


def parse_token(token: str) -> tuple[WaitRef, str]:
    encoded, _, nonce = token.partition(".")
    try:
        text = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not nonce or not text:
        raise InvalidArgument([Diagnostic("token", "not a wait's callback token")])
    return parse_wait_id(text, "token"), nonce


def answer_signal_id(wait_id: str) -> str:
    return ANSWER_PREFIX + wait_id


def schema_problems(schema: dict[str, Any] | None, data: Any) -> list[Diagnostic]:
    """What in `data` the wait's JSON Schema refuses, each with its path (`data.approved`)."""
    if not schema:
        return []
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path)
    )
    return [
        Diagnostic(
            "data" + "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in e.path), e.message
        )
        for e in errors
    ]


def wait_schema(plan: DagPlan | None, ref: WaitRef) -> dict[str, Any] | None:
    """The answer schema the plan gives the wait (a map's body, or the wait node)."""
    node = plan.nodes.get(ref.node_id) if plan is not None else None
    if node is None:
        return None
    if ref.map_index is not None:
        body = node.body if isinstance(node, MapNode) else None
        return body.wait_schema if isinstance(body, WaitStep) else None
    return node.wait_schema if isinstance(node, WaitNode) else None


# ------------------------------------------------------------ the run's pending waits
@dataclass(frozen=True, slots=True)
class Route:
    """Where a signal goes: to the wait of `key`, refused with `refusal`, or (both None) kept
    for a later wait of its name."""

    key: str | None = None
    refusal: str | None = None


@dataclass(slots=True)
class _Pending:
    ref: WaitRef
    signal: str
    schema: dict[str, Any] | None


class PendingWaits:
    """A run's pending waits for a signal: by wait id, and by signal name in the order they
    began (nodes and map items alike). The interpreter tells it when a wait begins, resumes
    after a restart, or ends; it says where each signal goes."""

    def __init__(self, execution_id: str) -> None:
        self.execution_id = execution_id
        self._by_key: dict[str, _Pending] = {}

    def __bool__(self) -> bool:
        return bool(self._by_key)

    def __contains__(self, key: str) -> bool:
        return key in self._by_key

    def pending_keys(self) -> list[str]:
        return list(self._by_key)

    def begin(
        self, key: str, attempt: int, signal: str, schema: dict[str, Any] | None, now: float
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A new wait of `key`'s attempt: its record (`NodeRecord.wait`) and the data of its
        `node.waiting` event (signal, wait id, callback token)."""
        ref = WaitRef(self.execution_id, key, attempt)
        record, token = new_wait(ref, signal, now)
        self._by_key[key] = _Pending(ref, signal, schema)
        return record, {"signal": signal, "wait_id": ref.id, "token": token}

    def resume(self, key: str, record: dict[str, Any], schema: dict[str, Any] | None) -> None:
        """A wait that was pending at a restart waits again under its id."""
        self._by_key[key] = _Pending(
            parse_wait_id(str(record["id"])), str(record.get("signal", "")), schema
        )

    def end(self, key: str) -> None:
        self._by_key.pop(key, None)

    def route(self, signal: SignalRecord) -> Route:
        """An answer (`wait:ID`) goes to its wait if that wait is pending, else is refused; a
        signal sent by name goes to the oldest pending wait for the name (refused when that
        wait's schema refuses its data), else is kept."""
        if signal.signal_id.startswith(ANSWER_PREFIX):
            wait_id = signal.signal_id[len(ANSWER_PREFIX) :]
            key = wait_id.rsplit("/", 2)[1] if wait_id.count("/") >= 2 else ""
            pending = self._by_key.get(key)
            if pending is not None and pending.ref.id == wait_id:
                return Route(key=key)
            return Route(refusal=f"wait {wait_id} is not pending")
        for key, pending in self._by_key.items():
            if pending.signal == signal.name:
                problems = schema_problems(pending.schema, signal.data)
                if problems:
                    return Route(
                        refusal=f"the data does not match the schema of wait {pending.ref.id}: {problems[0]}"
                    )
                return Route(key=key)
        return Route()

    def take_buffered(
        self, key: str, buffered: list[SignalRecord]
    ) -> tuple[SignalRecord | None, list[SignalRecord]]:
        """For `key`'s wait, just begun or resumed: the kept signal it takes (its own answer
        first, else the oldest sent by its name that its schema accepts) and the kept signals
        its schema refuses (to be marked refused)."""
        pending = self._by_key[key]
        own = answer_signal_id(pending.ref.id)
        for signal in buffered:
            if signal.signal_id == own:
                return signal, []
        refused = []
        for signal in buffered:
            if signal.signal_id.startswith(ANSWER_PREFIX) or signal.name != pending.signal:
                continue
            if schema_problems(pending.schema, signal.data):
                refused.append(signal)
                continue
            return signal, refused
        return None, refused


# ------------------------------------------------------------------------- ListWaits
async def list_waits(
    engine: Engine,
    tenant: str,
    *,
    limit: int,
    after: tuple[str, str] | None = None,
    execution_id: str | None = None,
) -> list[WaitView]:
    """Pending waits of `tenant` (of one execution), by execution id then node key."""
    if execution_id is not None:
        await engine.get_execution(execution_id, tenant=tenant)
    nodes = await engine.store.list_waits(
        tenant, limit=limit, after=after, execution_id=execution_id
    )
    records: dict[str, ExecutionRecord | None] = {}
    out = []
    for rec in nodes:
        if rec.execution_id not in records:
            records[rec.execution_id] = await engine.store.get_execution(rec.execution_id)
        record = records[rec.execution_id]
        if record is None:
            continue
        out.append(await _view(engine, record, rec))
    return out


async def _view(engine: Engine, record: ExecutionRecord, rec: NodeRecord) -> WaitView:
    wait = rec.wait or {}
    ref = parse_wait_id(str(wait.get("id", "")))
    plan = await engine.plan_of(record)
    return WaitView(
        ref=ref,
        workflow=record.workflow,
        signal=str(wait.get("signal", "")),
        since=float(wait.get("since") or rec.started_at or 0.0),
        timeout_at=rec.wake_at,
        schema=wait_schema(plan, ref),
        pending=rec.state is NodeState.WAITING,
    )


# ------------------------------------------------------------------------ AnswerWait
async def answer_wait(
    engine: Engine,
    *,
    tenant: str,
    data: Any,
    wait_id: str = "",
    token: str = "",
) -> tuple[ExecutionRecord, WaitView]:
    """Applies `data` as the answer of one wait (named by id or token), or refuses it:
    IllegalTransition when the wait ended or is not the node's latest, InvalidArgument when
    the schema refuses the data; see the module docstring for why it is applied once."""
    if bool(wait_id) == bool(token):
        raise InvalidArgument([Diagnostic("wait_id", "give exactly one of wait_id or token")])
    nonce = ""
    if token:
        ref, nonce = parse_token(token)
    else:
        ref = parse_wait_id(wait_id)
    record = await engine.get_execution(ref.execution_id, tenant=tenant)
    sizes.check_request("data", data, "signal_bytes")
    rec = next(
        (n for n in await engine.store.get_nodes(ref.execution_id) if n.node_id == ref.key), None
    )
    wait = rec.wait if rec is not None else None
    if rec is None or wait is None:
        raise InvalidArgument(
            [
                Diagnostic(
                    "token" if token else "wait_id",
                    f"execution {ref.execution_id} has no wait {ref.id!r}",
                )
            ]
        )
    if token and _sha(nonce) != wait.get("token_sha256") and wait.get("id") == ref.id:
        raise InvalidArgument([Diagnostic("token", "not this wait's callback token")])
    if wait.get("id") != ref.id:
        latest = parse_wait_id(str(wait.get("id", "")))
        if latest.attempt > ref.attempt:
            raise _refused(
                ref,
                "SUPERSEDED",
                f"wait {ref.id} was attempt {ref.attempt}; the node waits again as {latest.id}",
            )
        raise InvalidArgument(
            [
                Diagnostic(
                    "token" if token else "wait_id",
                    f"execution {ref.execution_id} has no wait {ref.id!r}",
                )
            ]
        )
    if rec.state is not NodeState.WAITING or record.state.terminal:
        raise _refused(
            ref, "ENDED", f"wait {ref.id} has ended (node {rec.node_id} is {rec.state.value})"
        )
    view = await _view(engine, record, rec)
    problems = schema_problems(view.schema, data)
    if problems:
        raise InvalidArgument(problems)
    answer = SignalRecord(
        ref.execution_id, view.signal, data, answer_signal_id(ref.id), engine.clock()
    )
    try:
        final = await engine.offer_signal(answer, tenant)
    except Unavailable:
        # The run stopped before its turn committed: nothing of this answer is stored, unless
        # another replica stored one to this wait meanwhile (then this turn's commit was
        # refused by the unique signal id): answered as the stored way answers it, not with
        # a retry that can only be refused.
        if await engine.store.get_signal(ref.execution_id, answer.signal_id) is None:
            raise
        # As sent: the stopped turn marked it consumed.
        final, answer = None, replace(answer, seq=0, consumed_by=None)
    if final is not None and answer.consumed_by is not None:
        outcome = answer.consumed_by  # applied or refused by the run here, one commit
    else:
        # Its run is elsewhere (or declined it): stored first, then applied by the run.
        stored, created = await engine.add_signal(answer)
        if not created and (stored.consumed_by is not None or stored.data != data):
            raise _refused(ref, "ANSWERED", f"wait {ref.id} was answered already")
        # New, or the same answer again while the first is still on its way (a retry after
        # a lost reply): both hear the one outcome.
        outcome = await _settled(engine, stored)
        final = await engine.get_execution(ref.execution_id, tenant=tenant)
    if outcome.startswith(REFUSED_PREFIX):
        raise _refused(
            ref,
            "ENDED",
            f"wait {ref.id} ended before the answer reached it ({outcome[len(REFUSED_PREFIX) :]})",
        )
    return final, WaitView(
        view.ref, view.workflow, view.signal, view.since, view.timeout_at, view.schema, False
    )


async def _settled(engine: Engine, signal: SignalRecord) -> str:
    """Waits until the run applied (`consumed_by` the wait's key) or refused the answer; an
    execution that ended without taking it refused it."""
    deadline = engine.clock() + SETTLE_SECONDS
    pause = 0.005
    while True:
        stored = await engine.store.get_signal(signal.execution_id, signal.signal_id)
        if stored is not None and stored.consumed_by is not None:
            return stored.consumed_by
        record = await engine.store.get_execution(signal.execution_id)
        if record is not None and record.state.terminal:
            again = await engine.store.get_signal(signal.execution_id, signal.signal_id)
            if again is not None and again.consumed_by is not None:
                return again.consumed_by
            return REFUSED_PREFIX + f"the execution is {record.state.value}"
        if engine.clock() > deadline:
            raise Unavailable(
                f"the answer to {signal.signal_id[len(ANSWER_PREFIX) :]} is stored but its execution's run has not "
                "taken it yet; it will when a replica runs the execution (answering again is refused)"
            )
        await asyncio.sleep(pause)
        pause = min(0.1, pause * 2)


def _refused(ref: WaitRef, state: str, message: str) -> IllegalTransition:
    return IllegalTransition(message, current_state=state, wait_id=ref.id)


def _sha(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()
