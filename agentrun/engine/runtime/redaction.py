"""Batches as stored and published: copies with secret values masked (the live records keep
theirs, the store and watchers never see them)."""

from __future__ import annotations

from dataclasses import replace

from agentrun.engine.redact import Redactor
from agentrun.storage.machines import MachineBatch
from agentrun.storage.records import Batch


def redacted_batch(batch: Batch, redactor: Redactor) -> Batch:
    """A DAG run's batch: the execution's output, error and vars, nodes' input, output and
    error, events' data."""
    value = redactor.value
    execution = batch.execution
    if execution is not None:
        execution = replace(
            execution, output=value(execution.output), error=value(execution.error), vars=value(execution.vars)
        )
    return Batch(
        execution=execution,
        nodes=[replace(n, output=value(n.output), error=value(n.error), input=value(n.input)) for n in batch.nodes],
        events=[replace(e, data=value(e.data)) for e in batch.events],
        consumed_signals=batch.consumed_signals,
    )


def redacted_machine_batch(batch: MachineBatch, redactor: Redactor) -> MachineBatch:
    """A state machine instance's batch: the instance's data and error, history entries'
    event data, action results, assigned values and error."""
    value = redactor.value
    instance = replace(batch.instance, data=value(batch.instance.data), error=value(batch.instance.error))
    history = [
        replace(
            e,
            event_data=value(e.event_data),
            actions=value(e.actions),
            assigned=value(e.assigned),
            error=value(e.error),
        )
        for e in batch.history
    ]
    return MachineBatch(instance, history, batch.timers, batch.fired)


__all__ = ["redacted_batch", "redacted_machine_batch"]
