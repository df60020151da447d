"""One error body everywhere: `{"error": {"code", "message", "field"?}}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.errors import ErrorBody, ErrorCode, ErrorDetail, MyycError, StoreUnavailable

logger = logging.getLogger(__name__)

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
}
_CODE_BY_STATUS = {
    400: ErrorCode.validation_error,
    401: ErrorCode.unauthorized,
    403: ErrorCode.forbidden,
    404: ErrorCode.not_found,
    405: ErrorCode.validation_error,
    409: ErrorCode.conflict,
    413: ErrorCode.payload_too_large,
    415: ErrorCode.validation_error,
    422: ErrorCode.validation_error,
    429: ErrorCode.rate_limited,
}


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


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    field = _field(tuple(first.get("loc", ())))
    message = f"{field or 'request'}: {first.get('msg', 'invalid value')}"
    return error_response(
        ErrorDetail(code=ErrorCode.validation_error, message=message, field=field or None), 422
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
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
