"""`wait` nodes and signals: a wait for a duration or until a time (a timer), or for a signal
(with its own wait id and callback token, agentrun/engine/approvals.py: an answer by id goes
to its wait only, a signal by name to the oldest pending wait of that name, else it is kept
for a later one), with an optional timeout; also the signals that are not data: control
requests relayed through the store and answers to escalations.

Pending waits are kept by `PendingWaits`, which speaks the stored key text (`NODE`,
`NODE[i]`); keys are converted at that edge."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agentrun.engine.approvals import ANSWER_PREFIX, REFUSED_PREFIX, PendingWaits
from agentrun.engine.dag.keys import TaskKey
from agentrun.engine.dag.messages import Cancel, Pause, Resume, WaitOver
from agentrun.engine.dag.values import iso, parse_time
from agentrun.engine.expressions import ExpressionError
from agentrun.engine.plan import WaitNode
from agentrun.engine.runtime.common import error_dict
from agentrun.storage.records import Batch, NodeRecord, NodeState, SignalRecord

if TYPE_CHECKING:
    from agentrun.engine.dag.fold import Fold

# The signal that answers an escalation: data {action: retry|skip|fail, node?, output?}.
ESCALATION_SIGNAL = "escalation"
# Pause, resume and cancel sent through the store by a replica that does not run the
# execution: data {action, compensate}.
CONTROL_SIGNAL = "agentrun.control"
# Ids of offered signals a loaded run remembers (`Waits.offer`) beyond those its current turn
# takes; past it, the ones committed are forgotten. 64 short ids: a few KB per run at most.
OFFERED_KEPT = 64


class Waits:
    def __init__(self, fold: Fold) -> None:
        self.fold = fold
        # Waits for a signal (wait nodes and map items), by wait id and signal name.
        self.pending = PendingWaits(fold.id)
        # Signals no wait took yet.
        self.buffered: list[SignalRecord] = []
        # Signal seqs already handled, so a signal seen at restore and posted live counts once.
        self.seen: set[int] = set()
        # Offered signals (`offer`): the ids taken, each with the journal batch that stores it
        # (at most OFFERED_KEPT beyond the current turn's), and whether one was declined (then
        # every later one is too, so that the signals the callers store go in their order).
        self.offered: dict[str, Batch] = {}
        self.declining = False
        # When ids were forgotten (`_taken`): an offer sent at or before it is declined.
        self.forgot_at: float | None = None

    @property
    def waiting(self) -> bool:
        return bool(self.pending)

    def start(self, node: WaitNode, rec: NodeRecord) -> None:
        fold = self.fold
        now = fold.clock()
        if rec.started_at is None:
            rec.started_at = now
        rec.attempt += 1
        key = TaskKey.of(node.id)
        if node.signal:
            wait, data = self.pending.begin(
                node.id, rec.attempt, node.signal, node.wait_schema, now
            )
            rec.wait = wait
            if node.wait_timeout:
                rec.wake_at = now + node.wait_timeout
                data["timeout_at"] = iso(rec.wake_at)
            fold.journal.node_state(rec, NodeState.WAITING, data)
            self.take_buffered(key)
            if node.id in self.pending and node.wait_timeout:
                fold.arm_timer(key, node.wait_timeout, WaitOver(key, True))
            return
        if node.duration is not None:
            wake = now + node.duration
        else:
            assert node.until is not None
            try:
                wake = parse_time(node.until.evaluate(fold.activation(node.names, node.node_refs)))
            except (ExpressionError, ValueError) as exc:
                path = getattr(exc, "path", node.path + ".wait.until")
                fold.node_failed(
                    node, rec, error_dict("expression_error", str(exc), {"path": path})
                )
                return
        rec.wake_at = wake
        if node.wait_timeout and node.wait_timeout < wake - now:
            rec.wake_at = now + node.wait_timeout
            fold.arm_timer(key, node.wait_timeout, WaitOver(key, True))
        else:
            fold.arm_timer(key, wake - now, WaitOver(key, False))
        fold.journal.node_state(rec, NodeState.WAITING, {"wake_at": iso(rec.wake_at)})

    def restore(self, node: WaitNode, rec: NodeRecord) -> None:
        """A node that was WAITING at a restart waits again (timers re-armed at their time)."""
        fold = self.fold
        now = fold.clock()
        key = TaskKey.of(node.id)
        if node.signal:
            self.resume(key, rec, node.signal, node.wait_schema)
            if node.id in self.pending and rec.wake_at is not None:
                fold.arm_timer(key, rec.wake_at - now, WaitOver(key, True))
        elif rec.wake_at is not None:
            timeout = node.wait_timeout
            timed_out = (
                bool(timeout)
                and (node.duration is None or (timeout is not None and timeout < node.duration))
                and node.until is None
            )
            fold.arm_timer(key, rec.wake_at - now, WaitOver(key, timed_out))

    def resume(
        self, key: TaskKey, rec: NodeRecord, signal: str, schema: dict[str, Any] | None
    ) -> None:
        """A wait pending at a restart waits again under its id (one stored before waits had
        ids gets one now), and takes an answer stored before the crash."""
        if rec.wait is None:
            rec.wait, _ = self.pending.begin(
                key.text, rec.attempt, signal, schema, rec.started_at or self.fold.clock()
            )
            self.fold.journal.node_changed(rec)
        else:
            self.pending.resume(key.text, rec.wait, schema)
        self.take_buffered(key)

    def take_buffered(self, key: TaskKey) -> None:
        """The wait of `key` just began or resumed: a kept signal for it ends it now."""
        taken, refused = self.pending.take_buffered(key.text, self.buffered)
        for sig in refused:
            self.buffered.remove(sig)
            self.refuse(sig, "the data does not match the wait's schema")
        if taken is not None:
            self.buffered.remove(taken)
            self.answered(key, taken)

    def refuse_stale_answers(self) -> None:
        """After a restore, pending waits took their answers: the answers left are to waits
        that ended, and are refused (an answer never waits for a later wait)."""
        for sig in [s for s in self.buffered if s.signal_id.startswith(ANSWER_PREFIX)]:
            self.buffered.remove(sig)
            self.refuse(sig, "the wait is not pending")

    def over(self, key: TaskKey, timed_out: bool) -> None:
        fold = self.fold
        if key.is_item:
            fold.maps.item_wait_over(key)
            return
        rec = fold.records.get(key.node)
        if rec is None or rec.state is not NodeState.WAITING:
            return
        fold.timers.discard(key)
        node = fold.plan.node_as(key.node, WaitNode)
        self.pending.end(key.text)
        if timed_out:
            fold.handlers.fail(
                node, rec, error_dict("timeout", f"wait timed out after {node.wait_timeout}s")
            )
        else:
            fold.succeeded(node, rec, None)

    def signal(self, sig: SignalRecord, *, fresh: bool = False) -> None:
        fold = self.fold
        if sig.seq in self.seen:
            # Restore buffers unconsumed signals silently (their arrival was recorded when
            # they came); one stored just now and read by the restore of its load was not.
            if not fresh or not self._unbuffer(sig.seq):
                return
        self.seen.add(sig.seq)
        if sig.name == CONTROL_SIGNAL:
            fold.journal.consume_signal(sig.seq, CONTROL_SIGNAL)
            data = sig.data if isinstance(sig.data, dict) else {}
            action = data.get("action", "")
            if action == "pause":
                fold.apply(Pause())
            elif action == "resume":
                fold.apply(Resume(override=data.get("override")))
            elif action == "cancel":
                fold.apply(Cancel(compensate=bool(data.get("compensate"))))
            return
        self._data_signal(sig, keep=True)

    def offer(self, sig: SignalRecord) -> None:
        """A signal not stored yet (seq 0, `SignalOffered`): taken when it answers a wait or
        an escalation or is refused now, stored by this turn's batch with its consumer
        (`Journal.consume`); declined (its `consumed_by` left None) when it would be kept for
        a later wait, and so is every offer after one declined: their callers store them as
        any signal, in order, and hand them over (`signal`). An id offered before is declined
        too: its caller finds the stored one.

        Its caller looked for the id in the store before it offered it (`Engine.offer_signal`),
        so an id taken in a turn already committed can come back only from a caller who
        looked before that commit, and so sent it (`created_at`, the same clock) before then.
        Ids are thus remembered until OFFERED_KEPT are (a long-running execution offered many
        signals), then those committed are forgotten, and an offer sent at or before that
        moment (`forgot_at`) is declined, as a declined signal is, with every later one: it
        may repeat a forgotten id (its caller then finds the stored one) or be new (stored
        as any signal, in order)."""
        if self.declining or sig.signal_id in self.offered:
            return
        if self.forgot_at is not None and sig.created_at <= self.forgot_at:
            self.declining = True
            return
        if self._data_signal(sig, keep=False):
            self._taken(sig.signal_id)
        else:
            self.declining = True

    def _taken(self, signal_id: str) -> None:
        """Remembers an offered id taken by this turn (stored by its batch); past
        OFFERED_KEPT, forgets those taken by earlier turns. Their batches were committed:
        a turn is applied only after the previous one's commit (a failed commit stops the
        run), so now is after it (a clock set back since could let a repeat through: its
        commit is then refused by the stored id, the run rebuilt from the store, and its
        caller answered as the stored signal's, control.signal)."""
        offered = self.offered
        batch = self.fold.journal.batch
        offered[signal_id] = batch
        if len(offered) > OFFERED_KEPT:
            done = [i for i, taken_by in offered.items() if taken_by is not batch]
            if done:
                for i in done:
                    del offered[i]
                self.forgot_at = self.fold.clock()

    def _data_signal(self, sig: SignalRecord, *, keep: bool) -> bool:
        """A signal that is not a control request, applied; False (nothing done) when no
        wait takes it now and not `keep`."""
        fold = self.fold
        received = {"signal": sig.name, "signal_id": sig.signal_id, "data": sig.data}
        escalated = fold.handlers.escalated
        if sig.name == ESCALATION_SIGNAL and escalated:
            data = sig.data if isinstance(sig.data, dict) else {"action": sig.data}
            target = data.get("node") or next(iter(escalated))
            if data.get("action") in ("retry", "skip", "fail") and target in escalated:
                fold.journal.event("signal.received", None, received)
                fold.journal.consume(sig, target)
                fold.handlers.escalation_answer(target, data)
                return True
        route = self.pending.route(sig)
        if route.refusal is not None:
            self.refuse(sig, route.refusal)
        elif route.key is None:
            if not keep:
                return False
            fold.journal.event("signal.received", None, received)
            self.buffered.append(sig)
        else:
            self.answered(TaskKey.parse(route.key), sig)
        return True

    def _unbuffer(self, seq: int) -> bool:
        for i, buffered in enumerate(self.buffered):
            if buffered.seq == seq:
                del self.buffered[i]
                return True
        return False

    def answered(self, key: TaskKey, sig: SignalRecord) -> None:
        """`sig` answers the pending wait of `key` (a wait node or a map item): consumed by it,
        its data the output."""
        fold = self.fold
        rec = fold.record_of(key)
        assert rec is not None and rec.wait is not None
        self.pending.end(key.text)
        fold.journal.event(
            "signal.received",
            None,
            {
                "signal": sig.name,
                "signal_id": sig.signal_id,
                "data": sig.data,
                "wait_id": rec.wait["id"],
            },
        )
        fold.journal.consume(sig, key.text)
        fold.drop_timer(key)
        if key.is_item:
            fold.maps.item_done(key, rec.attempt, True, sig.data)
            return
        fold.succeeded(fold.plan.nodes[key.node], rec, sig.data)

    def refuse(self, sig: SignalRecord, reason: str) -> None:
        """Marks `sig` refused (consumed by no wait): an answer to a wait that ended, or data
        a wait's schema refuses."""
        self.fold.journal.event(
            "signal.refused",
            None,
            {"signal": sig.name, "signal_id": sig.signal_id, "reason": reason},
        )
        self.fold.journal.consume(sig, REFUSED_PREFIX + reason[:200])

    def end(self, match: Callable[[TaskKey], bool] | None = None) -> list[TaskKey]:
        """Ends the pending waits whose keys `match` (all by default); returns their keys."""
        ended = []
        for text in self.pending.pending_keys():
            key = TaskKey.parse(text)
            if match is None or match(key):
                self.pending.end(text)
                ended.append(key)
        return ended

    def cancel_all(self) -> None:
        """The forward run stopped: every waiting node and map item is CANCELLED."""
        fold = self.fold
        for key in self.end():
            rec = fold.record_of(key)
            if rec is not None and rec.state is NodeState.WAITING:
                fold.journal.node_state(rec, NodeState.CANCELLED, {"attempt": rec.attempt})
