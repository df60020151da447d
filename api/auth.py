"""Who is calling: a server signing with HMAC, a user with a Supabase JWT, or local mode.

- **Servers** (edge functions, cron) sign `"{timestamp}.{METHOD}.{path}.{body}"` with
  HMAC-SHA256 and the shared secret: headers `X-Myyc-Timestamp` (unix seconds) and
  `X-Myyc-Signature: v1=<hex>`. A timestamp more than 5 minutes away is refused, and so is a
  signature seen before within that window (a replay). A caller that may send the same
  request twice in one second (a user's double click) adds `X-Myyc-Nonce: <unique>` and signs
  `"{timestamp}.{nonce}.{METHOD}.{path}.{body}"`, so the two are distinct requests.
- **Users** send `Authorization: Bearer <Supabase JWT>` (HS256, the project's JWT secret,
  audience `authenticated`); they act as `sub` and see only their own rows.
- **Local mode** may turn auth off (`MYYC_AUTH_DISABLED`, loopback only): every caller is the
  local service.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Literal
from uuid import UUID

import jwt
from fastapi import Depends, Request

from api.deps import ServicesDep
from schemas.errors import ErrorCode, MyycError

WINDOW_S = 300
TIMESTAMP_HEADER = "x-myyc-timestamp"
SIGNATURE_HEADER = "x-myyc-signature"
NONCE_HEADER = "x-myyc-nonce"


class Unauthorized(MyycError):
    """Missing or bad credentials."""

    code = ErrorCode.unauthorized


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller of a request."""

    kind: Literal["service", "user", "local"]
    user_id: UUID | None = None

    @property
    def is_service(self) -> bool:
        """Servers and local mode act for any user; a user only for themselves."""
        return self.kind != "user"

    def owner_filter(self) -> UUID | None:
        """The user whose rows this caller may see (None: all rows)."""
        return None if self.is_service else self.user_id


def sign(
    secret: bytes, timestamp: int, method: str, path: str, body: bytes, nonce: str | None = None
) -> str:
    """The signature header value for a request (what edge functions compute)."""
    head = f"{timestamp}." + (f"{nonce}." if nonce is not None else "")
    message = f"{head}{method.upper()}.{path}.".encode() + body
    return "v1=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


class ReplayGuard:
    """Signatures seen within the window; a second use is a replay.

    Per process: with several API containers a replay could reach another one, which is why
    side-effecting entry points are also idempotent (spawn's Idempotency-Key).
    """

    def __init__(self, window_s: int = WINDOW_S, max_entries: int = 100_000) -> None:
        self._window = window_s
        self._max = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_use(self, signature: str, now: float) -> bool:
        """Record `signature`; False if it was already used within the window."""
        while self._seen and (
            next(iter(self._seen.values())) < now - self._window or len(self._seen) > self._max
        ):
            self._seen.popitem(last=False)
        if signature in self._seen:
            return False
        self._seen[signature] = now
        return True


def verify_signature(
    secret: bytes,
    *,
    timestamp: str | None,
    signature: str | None,
    nonce: str | None = None,
    method: str,
    path: str,
    body: bytes,
    now: float,
    replays: ReplayGuard,
) -> None:
    """Check a server request's HMAC; raise Unauthorized naming what is wrong."""
    if not timestamp or not signature:
        raise Unauthorized("missing X-Myyc-Timestamp or X-Myyc-Signature", field=SIGNATURE_HEADER)
    try:
        ts = int(timestamp)
    except ValueError:
        raise Unauthorized(
            "X-Myyc-Timestamp must be unix seconds", field=TIMESTAMP_HEADER
        ) from None
    if abs(now - ts) > WINDOW_S:
        raise Unauthorized(
            "request timestamp is outside the 5-minute window", field=TIMESTAMP_HEADER
        )
    if nonce is not None and not 1 <= len(nonce) <= 128:
        raise Unauthorized("X-Myyc-Nonce must be 1 to 128 characters", field=NONCE_HEADER)
    expected = sign(secret, ts, method, path, body, nonce)
    if not hmac.compare_digest(expected, signature.strip()):
        raise Unauthorized("bad signature", field=SIGNATURE_HEADER)
    if not replays.first_use(expected, now):
        raise Unauthorized("replayed request", field=SIGNATURE_HEADER)


def verify_user_token(secret: str, token: str) -> UUID:
    """A Supabase user JWT's subject; Unauthorized if invalid, expired or not a user token."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], audience="authenticated",
            options={"require": ["exp", "sub"]},
        )  # fmt: skip
    except jwt.PyJWTError as err:
        raise Unauthorized(f"invalid token: {err}", field="authorization") from None
    if claims.get("role") != "authenticated":
        raise Unauthorized("token is not a signed-in user's", field="authorization")
    try:
        return UUID(str(claims["sub"]))
    except ValueError:
        raise Unauthorized("token subject is not a user id", field="authorization") from None


async def get_caller(request: Request, services: ServicesDep) -> Caller:
    """Authenticate the request (see the module docstring)."""
    settings = services.settings
    if settings.myyc_auth_disabled:
        return Caller("local")
    headers = request.headers
    if SIGNATURE_HEADER in headers or TIMESTAMP_HEADER in headers:
        if settings.myyc_hmac_secret is None:
            raise Unauthorized(
                "server signatures are not configured: set MYYC_HMAC_SECRET on the API",
                field=SIGNATURE_HEADER,
            )
        verify_signature(
            settings.myyc_hmac_secret.get_secret_value().encode(),
            timestamp=headers.get(TIMESTAMP_HEADER),
            signature=headers.get(SIGNATURE_HEADER),
            nonce=headers.get(NONCE_HEADER),
            method=request.method,
            path=request.url.path,
            body=await request.body(),
            now=time.time(),
            replays=request.app.state.replays,
        )
        return Caller("service")
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("sign the request or send a bearer token", field="authorization")
    if settings.supabase_jwt_secret is None:
        raise Unauthorized("user tokens are not configured", field="authorization")
    return Caller("user", verify_user_token(settings.supabase_jwt_secret.get_secret_value(), token))


CallerDep = Annotated[Caller, Depends(get_caller)]
