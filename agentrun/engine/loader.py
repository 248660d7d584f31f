"""The spec codec: workflow files, dicts and stored specs ↔ `agentrun.v1.WorkflowSpec`.

Load (every problem at once, each with its field path, raised as InvalidWorkflow):
- `load_workflow`: YAML or JSON text, what a user writes (agentrun/engine/spec_text.py reads it);
- `spec_from_dict`: the same document as plain values (the SDK's and tests' dicts);
- `spec_from_stored`: a stored spec, the one way the engine, the state machine engine and the
  server read `WorkflowRecord.spec` back.
Dump: `spec_to_dict`, the one dict form, which files, stored specs and the SDK's
`Workflow.spec` share (`load_document` is text → that form).

Two passes, as FORMAT.md fixes: the plain values are walked against the message descriptors
(agentrun/engine/spec_walk.py), normalising the conveniences (short enums, human durations,
the state machine shorthands of agentrun/engine/machine/loader.py) and collecting every
problem; only a clean document is turned into the message, so that no first error hides the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentrun import spec_words
from agentrun.engine.errors import Diagnostic, InvalidWorkflow
from agentrun.engine.machine.loader import machine_state_shorthands
from agentrun.engine.spec_text import MAX_BYTES, MAX_DEPTH, Refused, read_document
from agentrun.engine.spec_walk import describe, install_shorthand, message_info, walk_message
from agentrun.v1.workflow_pb2 import MachineState, WorkflowSpec

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "load_document",
    "load_workflow",
    "spec_from_dict",
    "spec_from_stored",
    "spec_to_dict",
]


def load_workflow(text: str | bytes, *, filename: str = "") -> WorkflowSpec:
    """Reads a workflow file; raises InvalidWorkflow listing every problem found."""
    try:
        document = read_document(text, filename)
    except Refused as refused:
        where = f"{filename}: " if filename else ""
        raise InvalidWorkflow([Diagnostic("", where + refused.message)]) from None
    return _build(document)


def load_document(text: str | bytes, *, filename: str = "") -> dict[str, Any]:
    """A workflow file as its normalised protobuf JSON dict: full enum names, `"1800s"`
    durations, shorthands expanded; what `agentrun` prints and stores."""
    return spec_to_dict(load_workflow(text, filename=filename))


def spec_from_dict(document: Mapping[str, Any]) -> WorkflowSpec:
    """A spec from its dict form (a hand-built one), with the same conveniences and checks as
    files, so that what loads from a file also loads from a dict."""
    return _build(document)


def spec_from_stored(data: Mapping[str, Any]) -> WorkflowSpec:
    """A stored spec (`WorkflowRecord.spec`) as the message, checked as a file is.

    The rule for what a stored spec may hold: every version of agentrun has stored exactly
    `spec_to_dict` of a spec that compiled then (snake_case proto names, the renamed fields
    under their file words, full enum names, `"1800s"` durations; the fields were renamed in
    the proto, never removed, and their words did not change). So a stored spec is read as a
    file is, conveniences included, and anything else (a field this version does not know, a
    value of the wrong type) is refused with its path: running a spec without a field it
    declares would run another workflow, and showing it without would hide that."""
    return _build(data)


def spec_to_dict(spec: WorkflowSpec) -> dict[str, Any]:
    """The protobuf JSON mapping with snake_case names and the file words of renamed fields
    (`pass`, `from`): what files and stored specs look like."""
    return spec_words.to_dict(spec)


def _build(document: Any) -> WorkflowSpec:
    """Pass 1 checks and normalises into constructor arguments; only a clean document is built."""
    if document is None:
        raise InvalidWorkflow([Diagnostic("", "the document is empty; a workflow is a mapping")])
    if not isinstance(document, Mapping):
        raise InvalidWorkflow(
            [Diagnostic("", f"a workflow is a mapping at the top level, got {describe(document)}")]
        )
    errors: list[Diagnostic] = []
    try:
        arguments = walk_message(_ROOT, document, "", errors, 1)
        if not errors:
            return WorkflowSpec(**arguments)
    except UnicodeEncodeError as exc:  # a lone surrogate in a hand-built dict
        errors.append(Diagnostic("", f"a string is not valid Unicode: {exc.reason}"))
    except (TypeError, ValueError) as exc:  # pass 1 should have caught it; say so plainly anyway
        errors.append(Diagnostic("", f"not a valid WorkflowSpec: {exc}"))
    raise InvalidWorkflow(errors)


# Built at import, under the import lock: a table half-built by one thread is never seen by another.
_ROOT = message_info(spec_words.descriptor(WorkflowSpec))
install_shorthand(spec_words.descriptor(MachineState), machine_state_shorthands)
