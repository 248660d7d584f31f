"""The agentrun Python SDK: `Client` (blocking) and `AsyncClient` (asyncio), same methods.

```python
from agentrun.client import AsyncClient

async with AsyncClient("127.0.0.1:50051", api_key="...") as client:
    execution = await client.start_execution("triage", {"ticket": 42})
    async for event in client.watch(execution):
        if event.delta:  # an agent's answer while it is written (a node with `stream: true`)
            print(event.delta.text, end="", flush=True)
        else:
            print(event.sequence, event.type, event.node_id)
```
"""

from agentrun.client._async import AsyncClient
from agentrun.client._sync import Client
from agentrun.client.errors import (
    AgentrunError,
    AlreadyExists,
    ExecutionNotFound,
    IllegalTransition,
    InvalidArgument,
    InvalidInput,
    InvalidWorkflow,
    NotFound,
    PermissionDenied,
    RateLimited,
    ShuttingDown,
    Unauthenticated,
    Unavailable,
    WorkflowNotFound,
)
from agentrun.client.machines import (
    AsyncMachinesClient,
    EventNotAccepted,
    Instance,
    InstanceState,
    MachinesClient,
    Transition,
    TransitionKind,
)
from agentrun.client.types import (
    AgentDelta,
    ControlOutcome,
    Diagnostic,
    Execution,
    ExecutionError,
    ExecutionEvent,
    ExecutionState,
    NodeExecution,
    NodeState,
    ValidationResult,
    Wait,
    Workflow,
)

__all__ = [
    "AgentDelta",
    "AgentrunError",
    "AlreadyExists",
    "AsyncClient",
    "AsyncMachinesClient",
    "Client",
    "ControlOutcome",
    "Diagnostic",
    "EventNotAccepted",
    "Execution",
    "ExecutionError",
    "ExecutionEvent",
    "ExecutionNotFound",
    "ExecutionState",
    "IllegalTransition",
    "Instance",
    "InstanceState",
    "InvalidArgument",
    "InvalidInput",
    "InvalidWorkflow",
    "MachinesClient",
    "NodeExecution",
    "NodeState",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "ShuttingDown",
    "Transition",
    "TransitionKind",
    "Unauthenticated",
    "Unavailable",
    "ValidationResult",
    "Wait",
    "Workflow",
    "WorkflowNotFound",
]
