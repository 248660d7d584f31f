"""The engine: compile workflow specs into plans and run them durably. Knows no gRPC."""

from agentrun.engine.compiler import compile_workflow
from agentrun.engine.config import EngineConfig
from agentrun.engine.engine import Engine
from agentrun.engine.errors import (
    AgentrunError,
    AlreadyExists,
    Diagnostic,
    ExecutionNotFound,
    IllegalTransition,
    InvalidInput,
    InvalidWorkflow,
    ShuttingDown,
    Unavailable,
    WorkflowNotFound,
)
from agentrun.engine.loader import load_workflow, spec_from_dict, spec_to_dict
from agentrun.engine.machine.plan import MachinePlan
from agentrun.engine.plan import DagPlan
from agentrun.engine.runtime.common import DEFAULT_TENANT

__all__ = [
    "DEFAULT_TENANT",
    "AgentrunError",
    "AlreadyExists",
    "DagPlan",
    "Diagnostic",
    "Engine",
    "EngineConfig",
    "ExecutionNotFound",
    "IllegalTransition",
    "InvalidInput",
    "InvalidWorkflow",
    "MachinePlan",
    "ShuttingDown",
    "Unavailable",
    "WorkflowNotFound",
    "compile_workflow",
    "load_workflow",
    "spec_from_dict",
    "spec_to_dict",
]
