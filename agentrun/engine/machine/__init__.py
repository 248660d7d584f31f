"""State machines: `mode: state_machine` workflows run as long-lived instances that move
between states as events arrive (FORMAT.md, State machines).

    compile_machine(spec, tools=, agents=) -> MachinePlan     # validation, every problem at once
    MachineEngine(engine)                                      # instances over engine.store's database
"""

from typing import Any

from agentrun.engine.machine.compiler import compile_machine
from agentrun.engine.machine.errors import EventNotAccepted, GuardFailed, InstanceNotFound
from agentrun.engine.machine.plan import MachinePlan

__all__ = [
    "EventNotAccepted",
    "GuardFailed",
    "InstanceNotFound",
    "MachineEngine",
    "MachinePlan",
    "compile_machine",
]


def __getattr__(
    name: str,
) -> Any:  # MachineEngine imports the runtime, which plain validation does not need
    if name == "MachineEngine":
        from agentrun.engine.machine.engine import MachineEngine

        return MachineEngine
    raise AttributeError(name)
