"""The one error vocabulary: codes stored beside error messages in rows and API bodies."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


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


class ErrorDetail(BaseModel):
    """What went wrong, for a person and for a program."""

    code: ErrorCode
    """The stable error code."""
    message: str
    """A sentence saying what was wrong and, where it helps, what to do."""
    field: str | None = Field(default=None)
    """The request field at fault, dotted (`body.title`), when one is."""


class ErrorBody(BaseModel):
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
