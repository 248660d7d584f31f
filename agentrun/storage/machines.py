"""Durable state of state machine instances: the instance rows, their history and their timers.

`MachineStore` is the small interface the state machine runtime needs; `MemoryMachineStore`
keeps everything in the process, `SqlMachineStore` works on the SQL core of a `SqlStore`
(`SqlStore.database`: same database, same migrations, same writer thread on SQLite) through
the shared group commit: the batches of many instances committed at once share one
transaction and one fsync.

One batch is everything one event changed: the instance's new state and data, the history
entries that record it, and its timers. It is atomic: after a crash the store holds the event's
effect entirely or not at all. An event whose action waits for its next attempt is stored half
way, as the instance's `pending` event with a retry timer (a batch with no history): after a
crash the timer fires and the event is handled on from there.

This module is the light facade (records, interface, memory store); `SqlMachineStore` is in
`agentrun.storage.machines_sql`, imported only by a SQL store.
"""

from agentrun.storage.machine_base import (
    EntryKind,
    HistoryRecord,
    InstanceRecord,
    InstanceState,
    MachineBatch,
    MachineStore,
    TimerRecord,
    copy_instance,
    history_event,
)
from agentrun.storage.machine_memory import MemoryMachineStore

__all__ = [
    "EntryKind",
    "HistoryRecord",
    "InstanceRecord",
    "InstanceState",
    "MachineBatch",
    "MachineStore",
    "MemoryMachineStore",
    "TimerRecord",
    "copy_instance",
    "history_event",
]
