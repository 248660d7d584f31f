"""Batches as stored and published: copies with secret values masked (the live records keep
theirs, the store and watchers never see them)."""

from __future__ import annotations

import copy
from dataclasses import replace

from agentrun.engine.redact import Redactor
from agentrun.storage.machines import MachineBatch
from agentrun.storage.records import Batch, ExecutionRecord


def redacted_execution(record: ExecutionRecord, redactor: Redactor) -> ExecutionRecord:
    """A copy of an execution's record, its output, error and vars masked (a copy still
    with no redactor: the live record changes with the run's next turns)."""
    if not redactor:
        return copy.copy(record)
    value = redactor.value
    return replace(
        record, output=value(record.output), error=value(record.error), vars=value(record.vars)
    )


def redacted_batch(batch: Batch, redactor: Redactor) -> Batch:
    """A DAG run's batch: the execution's output, error and vars, nodes' input, output and
    error, events' data."""
    value = redactor.value
    execution = batch.execution
    return Batch(
        execution=redacted_execution(execution, redactor) if execution is not None else None,
        nodes=[
            replace(n, output=value(n.output), error=value(n.error), input=value(n.input))
            for n in batch.nodes
        ],
        events=[replace(e, data=value(e.data)) for e in batch.events],
        consumed_signals=batch.consumed_signals,
        signals=batch.signals,
        fence=batch.fence,
    )


def redacted_machine_batch(batch: MachineBatch, redactor: Redactor) -> MachineBatch:
    """A state machine instance's batch: the instance's data, error and pending event,
    history entries' event data, action results, assigned values and error."""
    value = redactor.value
    record = batch.instance
    instance = replace(
        record,
        data=value(record.data),
        error=value(record.error),
        pending=value(record.pending) if record.pending is not None else None,
    )
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
    return replace(batch, instance=instance, history=history)


__all__ = ["redacted_batch", "redacted_machine_batch"]
