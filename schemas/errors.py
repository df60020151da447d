"""The one error vocabulary: codes stored beside error messages in rows and API bodies."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from schemas.base import Model


class ErrorCode(StrEnum):
    """Stable machine-readable error codes."""

    validation_error = "validation_error"
    not_found = "not_found"
    conflict = "conflict"
    illegal_transition = "illegal_transition"
    unauthorized = "unauthorized"
    forbidden = "forbidden"
    rate_limited = "rate_limited"
    payload_too_large = "payload_too_large"
    store_unavailable = "store_unavailable"
    unavailable = "unavailable"
    upstream_error = "upstream_error"
    agent_failed = "agent_failed"
    timeout = "timeout"
    internal = "internal"
    model_error = "model_error"
    """The model provider refused the request (bad request, auth, unknown model)."""
    model_unavailable = "model_unavailable"
    """The model provider kept failing (429, 5xx, 529, dropped streams) past the retries."""
    model_output_invalid = "model_output_invalid"
    """The model's answer stayed invalid after it was sent back with the errors."""
    verification_failed = "verification_failed"
    """The generated app failed verification and a person rejected it."""
    approval_expired = "approval_expired"
    """An escalation waited past its deadline for a decision."""
    run_stalled = "run_stalled"
    """An agent run stopped sending heartbeats past its deadline."""
    build_stalled = "build_stalled"
    """A build kept crashing: reclaimed more often than allowed."""
    canceled = "canceled"
    """Someone canceled the build."""
    method_not_allowed = "method_not_allowed"
    """The path exists, but not with this HTTP method (the Allow header lists those it has)."""
    idempotency_mismatch = "idempotency_mismatch"
    """An Idempotency-Key reused with a different request body."""


class ErrorDetail(Model):
    """What went wrong, for a person and for a program."""

    code: ErrorCode
    """The stable error code."""
    message: str
    """A sentence saying what was wrong and, where it helps, what to do."""
    field: str | None = Field(default=None)
    """The request field at fault, dotted (`body.title`), when one is."""


class ErrorBody(Model):
    """The one error body every API answer uses: `{"error": {...}}`."""

    error: ErrorDetail
    """The error."""


class MyycError(Exception):
    """Base of myyc's typed errors; each carries an ErrorCode and optionally a field."""

    code: ErrorCode = ErrorCode.internal

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def detail(self) -> ErrorDetail:
        """This error as an API error detail."""
        return ErrorDetail(code=self.code, message=self.message, field=self.field)


class ValidationFailed(MyycError):
    """Input that does not meet the contract (unknown level, malformed cursor, …)."""

    code = ErrorCode.validation_error


class NotFound(MyycError):
    """An unknown id."""

    code = ErrorCode.not_found


class Conflict(MyycError):
    """A write that collides with another (a unique key, a concurrent change)."""

    code = ErrorCode.conflict


class IllegalTransition(MyycError):
    """A status change the state machine does not allow; nothing was written."""

    code = ErrorCode.illegal_transition


class StoreUnavailable(MyycError):
    """The store did not answer (connection refused, 5xx, 429); the caller may retry."""

    code = ErrorCode.store_unavailable
