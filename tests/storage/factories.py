"""The one builder of `ExecutionRecord`s for the storage tests, probes and child processes."""

from __future__ import annotations

import time
from typing import Any

from agentrun.storage.records import ExecutionRecord, ExecutionState


def execution_record(
    id: str,
    *,
    tenant: str = "acme",
    workflow: str = "wf",
    version: int = 1,
    state: ExecutionState = ExecutionState.RUNNING,
    input: Any = None,
    created_at: float | None = None,
    **fields: Any,
) -> ExecutionRecord:
    """An execution of `workflow` (version 1 unless said), RUNNING, created now unless `created_at` says;
    `fields`: any other field of the record (`last_sequence`, `request_id`, ...)."""
    return ExecutionRecord(
        id=id,
        tenant=tenant,
        workflow=workflow,
        version=version,
        state=state,
        input=input,
        created_at=time.time() if created_at is None else created_at,
        **fields,
    )
