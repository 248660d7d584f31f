"""SDK errors: one class per ErrorInfo reason (domain "agentrun"), under classes per status
code, so callers catch as broadly or as narrowly as they like."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from agentrun.client.types import Diagnostic

DOMAIN = "agentrun"


class AgentrunError(Exception):
    """A call failed. `reason` is the ErrorInfo reason (stable), `code` the gRPC status."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        code: grpc.StatusCode | None = None,
        metadata: dict[str, str] | None = None,
        violations: list[Diagnostic] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        if code is not None:
            self.code = code
        self.metadata = dict(metadata or {})
        self.violations = list(violations or [])
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = self.message
        if self.violations and all(str(v) not in text for v in self.violations):
            text += "".join(f"\n  {v}" for v in self.violations)
        return text


class InvalidArgument(AgentrunError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidWorkflow(InvalidArgument):
    pass


class InvalidInput(InvalidArgument):
    pass


class NotFound(AgentrunError):
    code = grpc.StatusCode.NOT_FOUND


class WorkflowNotFound(NotFound):
    pass


class ExecutionNotFound(NotFound):
    pass


class AlreadyExists(AgentrunError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(AgentrunError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class IllegalTransition(FailedPrecondition):
    @property
    def current_state(self) -> str:
        return self.metadata.get("current_state", "")


class Unauthenticated(AgentrunError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(AgentrunError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(AgentrunError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class RateLimited(ResourceExhausted):
    pass


class Unavailable(AgentrunError):
    code = grpc.StatusCode.UNAVAILABLE


class ShuttingDown(Unavailable):
    pass


class Unimplemented(AgentrunError):
    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(AgentrunError):
    code = grpc.StatusCode.INTERNAL


class DeadlineExceeded(AgentrunError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(AgentrunError):
    code = grpc.StatusCode.CANCELLED


BY_REASON: dict[str, type[AgentrunError]] = {
    "INVALID_WORKFLOW": InvalidWorkflow,
    "INVALID_INPUT": InvalidInput,
    "INVALID_ARGUMENT": InvalidArgument,
    "WORKFLOW_NOT_FOUND": WorkflowNotFound,
    "INSTANCE_NOT_FOUND": NotFound,
    "EXECUTION_NOT_FOUND": ExecutionNotFound,
    "ALREADY_EXISTS": AlreadyExists,
    "ILLEGAL_TRANSITION": IllegalTransition,
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": PermissionDenied,
    "RATE_LIMITED": RateLimited,
    "SHUTTING_DOWN": ShuttingDown,
    "UNAVAILABLE": Unavailable,
    "UNIMPLEMENTED": Unimplemented,
    "INTERNAL": InternalError,
}

BY_CODE: dict[grpc.StatusCode, type[AgentrunError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Unauthenticated,
        PermissionDenied,
        ResourceExhausted,
        Unavailable,
        Unimplemented,
        InternalError,
        DeadlineExceeded,
        Cancelled,
    )
}


def from_rpc_error(error: grpc.RpcError) -> AgentrunError:
    """The SDK exception for a failed call, from its status code and `google.rpc.Status`."""
    code: grpc.StatusCode = error.code()
    message: str = error.details() or code.name
    reason = ""
    metadata: dict[str, str] = {}
    violations: list[Diagnostic] = []
    retry_after: float | None = None
    try:
        # from_call reads code(), details() and trailing_metadata(), which a blocking call's
        # error and grpc.aio's AioRpcError both have; types-grpcio-status asks for grpc.Call.
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except (ValueError, AttributeError, TypeError):
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == DOMAIN:
                reason = info.reason
                metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [Diagnostic(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info_retry = error_details_pb2.RetryInfo()
            detail.Unpack(info_retry)
            retry_after = info_retry.retry_delay.ToNanoseconds() / 1e9
    cls = BY_REASON.get(reason) or BY_CODE.get(code, AgentrunError)
    return cls(
        message,
        reason=reason,
        code=code,
        metadata=metadata,
        violations=violations,
        retry_after=retry_after,
    )


__all__ = [
    "AgentrunError",
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "ExecutionNotFound",
    "FailedPrecondition",
    "IllegalTransition",
    "InternalError",
    "InvalidArgument",
    "InvalidInput",
    "InvalidWorkflow",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "ResourceExhausted",
    "ShuttingDown",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "WorkflowNotFound",
    "from_rpc_error",
]
