"""The DAG interpreter: one execution of a DAG plan, split along its seams.

- `keys`: `TaskKey` (node, map index, role) and its stored text form;
- `messages`: the inbox messages and the effects, as frozen values;
- `fold`: `Fold`, the pure state fold (message in, journal writes and effects out), with its
  parts `graph`, `gate`, `handlers`, `waits`, `maps`, `saga`, and `restore` (recovery);
- `journal`: the writes of one turn; `values`: activations and inline values;
- `loop`: `DagRun`, the asyncio loop around a fold (inbox → batch → commit → launch);
- `calls`: one attempt of a step, through the shared step invoker.
"""

from agentrun.engine.dag.keys import Role, TaskKey
from agentrun.engine.dag.loop import DagRun, Host
from agentrun.engine.dag.waits import CONTROL_SIGNAL, ESCALATION_SIGNAL

__all__ = ["CONTROL_SIGNAL", "ESCALATION_SIGNAL", "DagRun", "Host", "Role", "TaskKey"]
