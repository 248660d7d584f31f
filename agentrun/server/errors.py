"""The one place where errors become gRPC statuses.

Exceptions map by class (`STATUS_BY_CLASS`, most specific first) to a status code and
`google.rpc.Status` details: one `ErrorInfo` (reason, domain "agentrun", metadata), plus
`BadRequest` field violations, `PreconditionFailure`, `QuotaFailure` or `RetryInfo` where they
apply. Diagnostics and texts are capped so that every answer fits in gRPC's metadata limits.
Anything no row names is INTERNAL with no internals in the message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2, message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from agentrun.engine import errors as engine_errors
from agentrun.engine.errors import MAX_DIAGNOSTICS, AgentrunError, Diagnostic, clip, summary
from agentrun.engine.machine.errors import EventNotAccepted, InstanceNotFound
from agentrun.engine.message_checks import check_message
from agentrun.server._wrap import Malformed
from agentrun.storage.base import LeaseLost, StoreError

DOMAIN = "agentrun"
log = logging.getLogger("agentrun.server")

# reason -> status code; every value of agentrun.v1.ErrorReason is here.
CODES: dict[str, grpc.StatusCode] = {
    "INVALID_WORKFLOW": grpc.StatusCode.INVALID_ARGUMENT,
    "INVALID_INPUT": grpc.StatusCode.INVALID_ARGUMENT,
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "WORKFLOW_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "INSTANCE_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "EXECUTION_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    "ILLEGAL_TRANSITION": grpc.StatusCode.FAILED_PRECONDITION,
    "UNAUTHENTICATED": grpc.StatusCode.UNAUTHENTICATED,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "RATE_LIMITED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "SHUTTING_DOWN": grpc.StatusCode.UNAVAILABLE,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "UNIMPLEMENTED": grpc.StatusCode.UNIMPLEMENTED,
    "INTERNAL": grpc.StatusCode.INTERNAL,
}


class ApiError(Exception):
    """An error the server itself raises (bad request fields, auth, rate limits)."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        violations: Sequence[Diagnostic] = (),
        retry_after: float | None = None,
        **metadata: Any,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.violations = list(violations)
        self.retry_after = retry_after
        self.metadata = {k: str(v) for k, v in metadata.items() if v is not None}


def invalid_argument(field: str, message: str) -> ApiError:
    return ApiError(
        "INVALID_ARGUMENT", f"{field}: {message}", violations=[Diagnostic(field, message)]
    )


# Typed workflow specs are checked by the compiler (the same walk, reason INVALID_WORKFLOW).
_CHECKED_BY_COMPILER = frozenset({"agentrun.v1.WorkflowSpec"})


def request_problem(request: Any) -> ApiError | None:
    """Why a request is refused before any servicer sees it, or None: bytes that did not parse,
    or values no field may hold (agentrun.engine.message_checks)."""
    if isinstance(request, Malformed):
        text = (
            f"the request is not a valid {request.message_type}: malformed bytes, a string"
            " that is not UTF-8, or messages nested deeper than 100 levels"
        )
        return ApiError("INVALID_ARGUMENT", text, violations=[Diagnostic("request", text)])
    if not isinstance(request, message.Message):
        return None
    problems = check_message(request, skip=_CHECKED_BY_COMPILER)
    if not problems:
        return None
    return ApiError("INVALID_ARGUMENT", summary(problems), violations=problems)


def _pack(detail: message.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(detail)
    return packed


def _violations(diagnostics: Iterable[Any]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=d.path, description=d.message)
            for d in diagnostics
        ]
    )


# Exception class -> status code, most specific first (as httpx's map_exceptions): the first
# class an exception is an instance of decides. Engine classes carry their ErrorReason
# (`reason`); ApiError's code follows its reason (CODES). Nothing here maps to UNKNOWN, and only
# an exception no row names (a bug) becomes INTERNAL.
STATUS_BY_CLASS: tuple[tuple[type[BaseException], grpc.StatusCode | None], ...] = (
    (engine_errors.InvalidWorkflow, grpc.StatusCode.INVALID_ARGUMENT),
    (engine_errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (engine_errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (engine_errors.WorkflowNotFound, grpc.StatusCode.NOT_FOUND),
    (engine_errors.ExecutionNotFound, grpc.StatusCode.NOT_FOUND),
    (InstanceNotFound, grpc.StatusCode.NOT_FOUND),
    (engine_errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (engine_errors.IllegalTransition, grpc.StatusCode.FAILED_PRECONDITION),
    (engine_errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (engine_errors.ShuttingDown, grpc.StatusCode.UNAVAILABLE),
    (engine_errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (ApiError, None),  # by its reason
    (StoreError, grpc.StatusCode.UNAVAILABLE),
    (LeaseLost, grpc.StatusCode.UNAVAILABLE),
)


def classify(exc: BaseException) -> tuple[grpc.StatusCode, str, str, dict[str, str]]:
    """(status code, ErrorReason name, message, ErrorInfo metadata) for an exception."""
    for cls, code in STATUS_BY_CLASS:
        if not isinstance(exc, cls):
            continue
        if isinstance(exc, (AgentrunError, ApiError)):
            reason, text, metadata = exc.reason, exc.message, dict(exc.metadata)
        else:
            log.warning("store unavailable: %s", exc)
            reason, text, metadata = "UNAVAILABLE", "the store is unavailable; retry", {}
        return code or CODES.get(reason, grpc.StatusCode.INTERNAL), reason, text, metadata
    log.exception("internal error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "INTERNAL", "internal error", {}


def _capped_violations(diagnostics: Sequence[Any]) -> error_details_pb2.BadRequest:
    """The first problems (at most MAX_DIAGNOSTICS, within a byte budget that keeps the status
    under gRPC's metadata limits), then one entry counting the rest."""
    bad = error_details_pb2.BadRequest()
    size = 0
    for d in diagnostics[:MAX_DIAGNOSTICS]:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=clip(d.path, 200), description=clip(d.message)
        )
        size += violation.ByteSize() + 4
        if bad.field_violations and size > _DETAILS_BUDGET:
            break
        bad.field_violations.append(violation)
    rest = len(diagnostics) - len(bad.field_violations)
    if rest:
        bad.field_violations.add(field="", description=f"… and {rest} more problems")
    return bad


# Bytes of BadRequest details and characters of message: together well under the 8 KB of
# metadata a gRPC client accepts by default (the status travels in trailers).
_DETAILS_BUDGET = 2500
_MESSAGE_LIMIT = 1000


def to_status(exc: BaseException) -> status_pb2.Status:
    """The `google.rpc.Status` for an exception raised while serving a call."""
    code, reason, text, metadata = classify(exc)
    metadata = {clip(k, 64): clip(v, 200) for k, v in list(metadata.items())[:20]}
    details = [_pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))]
    diagnostics = getattr(exc, "diagnostics", None) or getattr(exc, "violations", None)
    if diagnostics:
        details.append(_pack(_capped_violations(diagnostics)))
    if isinstance(exc, engine_errors.IllegalTransition):
        state = metadata.get("current_state", "")
        details.append(
            _pack(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type="STATE",
                            subject=metadata.get("execution", "") or metadata.get("name", ""),
                            description=f"not allowed in state {state}" if state else text,
                        )
                    ]
                )
            )
        )
    if isinstance(exc, EventNotAccepted):  # and which events the state does accept
        details.append(
            _pack(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type="EVENT",
                            subject=event,
                            description=f"accepted in state {exc.current_state}",
                        )
                        for event in exc.accepted[:MAX_DIAGNOSTICS]
                    ]
                )
            )
        )
    if isinstance(exc, engine_errors.ResourceExhausted):
        details.append(
            _pack(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(
                            subject=exc.subject, description=exc.quota or text
                        )
                    ]
                )
            )
        )
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        delay = error_details_pb2.RetryInfo()
        delay.retry_delay.FromNanoseconds(max(1_000_000, int(retry_after * 1e9)))
        details.append(_pack(delay))
    return status_pb2.Status(
        code=_CODE_NUMBERS[code], message=clip(text, _MESSAGE_LIMIT), details=details
    )


_CODE_NUMBERS = {c: code_pb2.Code.Value(c.name) for c in grpc.StatusCode}


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    """Ends the call with the status for `exc` (raises grpc.aio.AbortError)."""
    await context.abort_with_status(rpc_status.to_status(to_status(exc)))
