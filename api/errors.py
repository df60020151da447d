"""One error body everywhere: `{"error": {"code", "message", "field"?}}`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.errors import ErrorBody, ErrorCode, ErrorDetail, MyycError, StoreUnavailable

logger = logging.getLogger(__name__)

#: FastAPI's HTTPException detail for a body it could not decode (not UTF-8, say).
BODY_PARSE_ERROR = "There was an error parsing the body"

STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.validation_error: 422,
    ErrorCode.not_found: 404,
    ErrorCode.conflict: 409,
    ErrorCode.illegal_transition: 409,
    ErrorCode.unauthorized: 401,
    ErrorCode.forbidden: 403,
    ErrorCode.rate_limited: 429,
    ErrorCode.payload_too_large: 413,
    ErrorCode.store_unavailable: 503,
    ErrorCode.unavailable: 503,
    ErrorCode.upstream_error: 502,
    ErrorCode.timeout: 504,
    ErrorCode.agent_failed: 500,
    ErrorCode.internal: 500,
    # Codes stored on runs and builds; an API answer carrying one maps as below.
    ErrorCode.model_error: 502,
    ErrorCode.model_unavailable: 503,
    ErrorCode.model_output_invalid: 502,
    ErrorCode.verification_failed: 409,
    ErrorCode.approval_expired: 409,
    ErrorCode.run_stalled: 500,
    ErrorCode.build_stalled: 500,
    ErrorCode.canceled: 409,
    ErrorCode.idempotency_mismatch: 422,
    ErrorCode.method_not_allowed: 405,
}
_CODE_BY_STATUS = {
    400: ErrorCode.validation_error,
    401: ErrorCode.unauthorized,
    403: ErrorCode.forbidden,
    404: ErrorCode.not_found,
    405: ErrorCode.method_not_allowed,
    409: ErrorCode.conflict,
    413: ErrorCode.payload_too_large,
    415: ErrorCode.validation_error,
    422: ErrorCode.validation_error,
    429: ErrorCode.rate_limited,
}


_DESCRIPTIONS = {
    400: "The body could not be decoded.",
    401: "Missing or bad credentials: signature, timestamp or token.",
    403: "Only servers (an HMAC signature or the service role) may do this.",
    404: "No such resource, or not the caller's.",
    409: "The resource is not in a state that allows this (already decided, ended).",
    413: "The request body is over the cap.",
    422: "Invalid input (`validation_error`), or an Idempotency-Key reused with another body"
    " (`idempotency_mismatch`); `field` names the field.",
    429: "Too many spawns; retry after `Retry-After` seconds.",
    502: "The build could not be started; retry with a new Idempotency-Key.",
    503: "The store is unavailable right now; retry (`Retry-After` when known).",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these statuses, each answering the one error body.

    Passing 422 also replaces FastAPI's default `HTTPValidationError`, which is not what
    the API answers.
    """
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS[s]} for s in statuses}


def error_response(
    detail: ErrorDetail, status: int, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSON response carrying the one error body."""
    body = ErrorBody(error=detail).model_dump(mode="json", exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


async def _myyc_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MyycError)
    if isinstance(exc, StoreUnavailable):
        # Whatever the store said (even 401 to our own key), the caller sees an outage.
        logger.warning("store unavailable: %s", exc.message)
        detail = ErrorDetail(code=ErrorCode.store_unavailable,
                             message="the store is unavailable; try again shortly")  # fmt: skip
        return error_response(detail, 503, {"Retry-After": "1"})
    headers = None
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers = {"Retry-After": str(max(1, int(retry_after + 0.999)))}
    return error_response(exc.detail(), STATUS_BY_CODE[exc.code], headers)


async def _stranger(request: Request) -> JSONResponse | None:
    """The 401 for a caller who is not authenticated; None for one who is.

    FastAPI decodes the body before it solves the route's dependencies, so a body that is
    not JSON would answer 422 (400 if not UTF-8) ahead of CallerDep's 401: a stranger would
    learn how the route parses its input. Its two parse errors authenticate first.
    """
    from api.auth import get_caller  # api.auth imports the dependencies that import us

    try:
        await get_caller(request, request.app.state.services)
    except MyycError as err:
        return await _myyc_error(request, err)
    return None


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if any(e.get("type") == "json_invalid" for e in exc.errors()):
        refused = await _stranger(request)
        if refused is not None:
            return refused
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    field = _field(tuple(first.get("loc", ())))
    message = f"{field or 'request'}: {first.get('msg', 'invalid value')}"
    return error_response(
        ErrorDetail(code=ErrorCode.validation_error, message=message, field=field or None), 422
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:
        refused = await _stranger(request)
        if refused is not None:
            return refused
        # A body that is not UTF-8 is as invalid as one that is not JSON: the same 422.
        return error_response(
            ErrorDetail(code=ErrorCode.validation_error, field="body",
                        message="body: not valid JSON (it must be UTF-8 encoded)"),
            422,
        )  # fmt: skip
    code = _CODE_BY_STATUS.get(exc.status_code, ErrorCode.internal)
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    return error_response(
        ErrorDetail(code=code, message=message), exc.status_code, dict(exc.headers or {})
    )


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return error_response(
        ErrorDetail(code=ErrorCode.internal, message="internal error; it has been logged"), 500
    )


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the one body."""
    app.add_exception_handler(MyycError, _myyc_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
