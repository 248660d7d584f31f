"""The SDK's enums are the API's: every value of each protobuf enum has its member, named and
valued as the proto name less its prefix, and a number the SDK does not know (a newer server's)
reads as UNSPECIFIED rather than failing."""

from __future__ import annotations

import enum

import pytest
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from agentrun.client import ExecutionState, InstanceState, NodeState, TransitionKind
from agentrun.client._enums import from_proto
from agentrun.v1 import execution_pb2 as ex_pb
from agentrun.v1 import state_machine_pb2 as sm_pb

PAIRS = [
    (ExecutionState, ex_pb.Execution.State, "STATE_"),
    (NodeState, ex_pb.NodeExecution.State, "STATE_"),
    (InstanceState, sm_pb.StateMachineInstance.State, "STATE_"),
    (TransitionKind, sm_pb.InstanceTransition.Kind, "KIND_"),
]


@pytest.mark.parametrize(
    ("sdk", "proto", "prefix"), PAIRS, ids=lambda x: getattr(x, "__name__", "")
)
def test_each_proto_value_is_a_member(
    sdk: type[enum.StrEnum], proto: EnumTypeWrapper, prefix: str
) -> None:
    expected = {v.name.removeprefix(prefix): v.number for v in proto.DESCRIPTOR.values}
    assert {m.name: m.value for m in sdk} == {name: name for name in expected}
    for name, number in expected.items():
        assert from_proto(sdk, proto, number) is sdk[name]


@pytest.mark.parametrize(
    ("sdk", "proto", "prefix"), PAIRS, ids=lambda x: getattr(x, "__name__", "")
)
def test_an_unknown_number_is_unspecified(
    sdk: type[enum.StrEnum], proto: EnumTypeWrapper, prefix: str
) -> None:
    unknown = max(v.number for v in proto.DESCRIPTOR.values) + 1
    assert from_proto(sdk, proto, unknown) is sdk["UNSPECIFIED"]


def test_terminal_states_are_the_engines() -> None:
    """`terminal` in the SDK means what it means to the server (the records the engine keeps)."""
    from agentrun.storage import machines, records

    assert {s.value for s in ExecutionState if s.terminal} == {
        s.value for s in records.ExecutionState if s.terminal
    }
    assert {s.value for s in InstanceState if s.terminal} == {
        s.value for s in machines.InstanceState if s.terminal
    }
