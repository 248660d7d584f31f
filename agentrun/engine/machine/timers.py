"""What moves an instance without a client: its timers and its invoked executions.

Timers are rows in the store (`after` timers and action retry timers), armed as loop timer
handles by the replica holding the instance's lease; an invoked execution is waited for by a
task of that replica. Both survive a restart: the replica that takes the instance (back)
arms its timers and waits for its invoked execution again (leases.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from agentrun.engine.errors import ExecutionNotFound, IllegalTransition, ShuttingDown
from agentrun.engine.machine.errors import InstanceNotFound
from agentrun.engine.machine.plan import INVOKE_DONE, INVOKE_ERROR
from agentrun.engine.machine.retries import RETRY
from agentrun.engine.machine.work import Event
from agentrun.engine.runtime.children import child_output, ensure_child
from agentrun.engine.runtime.common import error_dict
from agentrun.storage.base import LeaseLost
from agentrun.storage.machines import InstanceRecord, TimerRecord
from agentrun.storage.records import ExecutionState

if TYPE_CHECKING:
    from agentrun.engine.machine.engine import MachineEngine

log = logging.getLogger("agentrun.engine.machine")


class Timers:
    """The loop timer handles of the stored timers of the instances this replica holds."""

    def __init__(self, machines: MachineEngine) -> None:
        self.m = machines
        self.handles: dict[str, dict[str, asyncio.TimerHandle]] = {}

    def arm(self, timer: TimerRecord) -> None:
        if self.m.stopping:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, timer.fire_at - self.m.clock())
        handle = loop.call_later(delay, self.fire, timer)
        self.handles.setdefault(timer.instance_id, {})[timer.key] = handle

    def drop(self, instance_id: str) -> None:
        for handle in self.handles.pop(instance_id, {}).values():
            handle.cancel()

    def fire(self, timer: TimerRecord) -> None:
        handles = self.handles.get(timer.instance_id)
        if handles is not None:
            handles.pop(timer.key, None)
        self.m.spawn(self._fire_timer(timer))

    async def _fire_timer(self, timer: TimerRecord) -> None:
        try:
            inst = await self.m.leases.load(timer.instance_id, None, take=False)
        except (InstanceNotFound, LeaseLost):
            return  # gone, or another replica drives it now
        if timer.key.startswith(RETRY):
            self.m.retries.due(inst, timer.key)
            return
        tenant = inst.record.tenant
        state = inst.plan.states.get(timer.state)
        name = (
            state.after[timer.index].event
            if state is not None and timer.index < len(state.after)
            else "after"
        )
        ev = Event(name, None, None, source="timer", ref=timer.key, index=timer.index)
        await self.internal(timer.instance_id, tenant, ev)

    async def internal(self, instance_id: str, tenant: str, ev: Event) -> None:
        """An engine event (timer, invoke result): retried while the store is unavailable;
        dropped once another replica holds the instance (its holder handles the event)."""
        delay = 0.2
        while not self.m.stopping:
            try:
                inst = await self.m.leases.load(instance_id, tenant, take=False)
                await self.m.loop.dispatch(inst, ev)
                return
            except (IllegalTransition, InstanceNotFound, LeaseLost):
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("instance %s: %s failed (%r); retrying", instance_id, ev.name, exc)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)


class Invokes:
    """The child executions instances run: a state's invoke (waited for by a task here) and
    `workflow` actions."""

    def __init__(self, machines: MachineEngine) -> None:
        self.m = machines
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def start(
        self,
        record: InstanceRecord,
        child_id: str,
        workflow: str,
        version: int,
        child_input: Any,
        node: str,
    ) -> None:
        """Starts a DAG the instance runs: a state's `invoke` (`node` is `invoke:STATE`) or a
        `workflow` action (`action`). Its id is derived from the entry the event makes (and
        the action's attempt), so an event handled again (after a crash) finds the same child."""
        await ensure_child(
            self.m.engine,
            child_id,
            workflow,
            child_input,
            tenant=record.tenant,
            version=version,
            parent=(record.id, node),
        )

    def watch(self, instance_id: str, child_id: str, tenant: str) -> None:
        if self.m.stopping:
            return
        old = self.tasks.pop(instance_id, None)
        if old is not None:
            old.cancel()
        task = asyncio.get_running_loop().create_task(self._wait(instance_id, child_id, tenant))
        self.tasks[instance_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self.tasks.get(instance_id) is done:
                del self.tasks[instance_id]

        task.add_done_callback(forget)

    async def _wait(self, instance_id: str, child_id: str, tenant: str) -> None:
        try:
            final = await self.m.engine.wait(child_id)
        except ExecutionNotFound:
            ev = Event(
                INVOKE_ERROR,
                None,
                error_dict("internal", f"invoked execution {child_id} is gone"),
                source="invoke",
                ref=child_id,
                failed=True,
            )
        else:
            if final.state is ExecutionState.SUCCEEDED:
                ev = Event(INVOKE_DONE, None, final.output, source="invoke", ref=child_id)
            else:
                err = dict(final.error or {})
                err.setdefault("type", "tool_error")
                err.setdefault("message", f"execution {child_id} ended {final.state.value}")
                err.setdefault("details", {})
                err["execution"] = child_id
                err["execution_state"] = final.state.value
                ev = Event(INVOKE_ERROR, None, err, source="invoke", ref=child_id, failed=True)
        # Handled outside this task: leaving the state cancels the task, not the event.
        self.m.spawn(self.m.timers.internal(instance_id, tenant, ev))

    def cancel(self, child_id: str, tenant: str) -> None:
        for instance_id, task in list(self.tasks.items()):
            if child_id.startswith(instance_id + "."):
                task.cancel()

        async def cancel() -> None:
            with contextlib.suppress(IllegalTransition, ExecutionNotFound, ShuttingDown):
                await self.m.engine.cancel(child_id, tenant=tenant)

        if not self.m.stopping:
            self.m.spawn(cancel())

    async def run_action_workflow(
        self, record: InstanceRecord, child_id: str, workflow: str, version: int, child_input: Any
    ) -> Any:
        """An action `{workflow: ...}`: runs a DAG to its end and returns its output."""
        await self.start(record, child_id, workflow, version, child_input, "action")
        final = await self.m.engine.wait(child_id)
        return child_output(final, f"execution {child_id}", {"execution": child_id})
