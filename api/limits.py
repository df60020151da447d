"""Request limits: a body-size cap (413) and a per-user spawn rate limit (429 + Retry-After)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from schemas.errors import ErrorCode, ErrorDetail, MyycError

#: How long a charged Idempotency-Key makes its repeats free (longer than any refill).
_REPEAT_WINDOW = 3600.0


class RateLimited(MyycError):
    """Too many requests; retry after `retry_after` seconds."""

    code = ErrorCode.rate_limited

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Bucket:
    """A token bucket: `capacity` requests at once, refilled at `rate` per second."""

    capacity: float
    rate: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take a token: 0.0 if granted, else the seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One bucket per key (a user), `per_minute` requests a minute with that burst.

    Per process: with several API containers each allows the rate, which bounds cost still.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._buckets: dict[str, Bucket] = {}
        self._charged: dict[tuple[str, str], float] = {}
        self._max_keys = max_keys
        self._clock = clock

    def check(
        self, key: str, now: float | None = None, *, idempotency_key: str | None = None
    ) -> bool:
        """Take one request for `key`, or raise RateLimited with the wait; True if taken.

        A request repeating an Idempotency-Key this limiter already charged (lately) costs
        nothing — even fifty at once, before the first has created anything.
        """
        now = self._clock() if now is None else now
        repeat = (key, idempotency_key) if idempotency_key is not None else None
        if repeat is not None:
            charged_at = self._charged.get(repeat)
            if charged_at is not None and now - charged_at < _REPEAT_WINDOW:
                return False
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._buckets.clear()  # refilled buckets carry no state worth keeping
            bucket = self._buckets[key] = Bucket(self._capacity, self._rate, self._capacity, now)
        wait = bucket.take(now)
        if wait > 0:
            raise RateLimited(
                f"too many spawns; try again in {math.ceil(wait)} s", retry_after=wait
            )
        if repeat is not None:
            if len(self._charged) >= self._max_keys:
                self._charged.clear()
            self._charged[repeat] = now
        return True

    def refund(self, key: str, *, idempotency_key: str | None = None) -> None:
        """Give back the token of a request that turned out to create nothing."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(bucket.capacity, bucket.tokens + 1.0)
        if idempotency_key is not None:
            self._charged.pop((key, idempotency_key), None)


class BodyLimit:
    """Answer 413 when a request body is over `max_bytes` (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._reject(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            ErrorDetail(
                code=ErrorCode.payload_too_large,
                message=f"request body is over {self.max_bytes} bytes",
                field="body",
            ),
            413,
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


def rate_key(user_id: Any) -> str | None:
    """The rate-limit key: the user; None (no limit) when no user is named.

    The limit is per user: a server spawning for nobody in particular (our own edge
    functions, the local CLI) is not a user running up costs.
    """
    return None if user_id is None else str(user_id)
