"""Secrets never reach a log line: a record factory that redacts them as records are made.

Installed once per process (`install(settings)`): every log record's message — whatever
logger, handler or formatter later sees it — has the configured secrets and anything shaped
like a credential (a bearer token, a JWT, an `sk-…` key, a `FlyV1 …` macaroon) replaced by
`[redacted]`. A record factory rather than a handler filter, because handlers come and go
(uvicorn's, pytest's) and a filter on one of them misses the others.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from schemas.settings import Settings

MASK = "[redacted]"

#: Credential shapes worth hiding even when they are not ours.
PATTERNS = re.compile(
    r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    r"|\b(?:sk|xai|ghp|gho|github_pat)[-_][A-Za-z0-9_-]{12,}"
    r"|\bFlyV1\s+\S{12,}"
)

_installed: list[str] = []


def secrets_of(settings: Settings) -> list[str]:
    """The secret values in `settings` worth hiding (long enough not to hit ordinary text)."""
    values = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        secret = getattr(value, "get_secret_value", None)
        if secret is not None and len(text := str(secret())) >= 8:
            values.append(text)
    return values


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with `secrets` and credential-shaped strings masked."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return PATTERNS.sub(lambda m: (m.group(1) or "") + MASK, text)


def install(settings: Settings | None = None) -> None:
    """Redact every log record made from now on in this process (idempotent; adds secrets)."""
    if settings is not None:
        _installed.extend(s for s in secrets_of(settings) if s not in _installed)
    if getattr(logging.getLogRecordFactory(), "_myyc_redacting", False):
        return
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string: leave it to the formatter
            return record
        cleaned = redact(message, _installed)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return record

    factory._myyc_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
