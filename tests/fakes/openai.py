"""A wire-faithful fake of OpenAI's Chat Completions API (and xAI's, which is the same), as ASGI.

`POST /v1/chat/completions` with `Authorization: Bearer <key>` (a wrong key answers 401 with
OpenAI's body, which echoes a masked key). `stream: true` answers SSE `data: {chunk}` lines:
a role chunk, content chunks, a chunk with `finish_reason`, a usage chunk (choices []) when
`stream_options.include_usage`, then `data: [DONE]`. Without `stream` it answers one
`chat.completion`. Errors are `{"error": {"message", "type", "code", "param"}}`.

Every fake model server here is scripted the same way (`ScriptedModelServer`, which the
Anthropic fake reuses): each request takes the next scripted step, else the default answer,
a deterministic echo of the last user message.

    fake.script(text="...", chunk=5, usage=(in, out))  answer `text` in `chunk`-character deltas
    fake.fail(429, retry_after=0.01, times=1)          answer an error status (retry-after-ms and
                                                       retry-after headers); `after_chunks=n`
                                                       sends n deltas, then an error event
    fake.disconnect_after(n_chunks)                    n deltas, then drop the connection
    fake.stall(seconds, after_chunks=None)             go quiet (before the head, or after n
                                                       deltas) until the client hangs up
    fake.garbage(after_chunks=0)                       n deltas, then data that is not JSON
    fake.refuse("...")                                 the model refuses (a refusal, no text)
    fake.requests / fake.last                          what arrived: method, path, headers, body
    fake.reset()                                       forget the script and the requests

Serve it with `async with local.server.serve(fake) as url:` and use `url + "/v1"` as base URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from starlette.types import Receive, Scope, Send

DEFAULT_KEY = "sk-fake-0123456789abcdefghijklmnopqrstuvwxyz"

Kind = Literal["answer", "fail", "disconnect", "stall", "garbage", "refuse"]
Json = dict[str, Any]
Usage = tuple[int, int]
Frames = tuple[list[bytes], list[bytes], list[bytes]]


@dataclass(frozen=True)
class Step:
    """One scripted outcome of one request."""

    kind: Kind = "answer"
    text: str | None = None
    chunk: int = 5
    usage: Usage | None = None
    status: int = 200
    retry_after: float | None = None
    message: str | None = None
    error_type: str | None = None
    code: str | None = None
    after: int | None = None
    """Deltas sent before the fault; None: the fault comes before the response head."""
    seconds: float = 0.0


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class _Dropped(Exception):
    """Raised inside the app to make uvicorn drop the connection mid-stream."""


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        """Drop uvicorn's report of a connection the fake dropped on purpose."""
        return not (record.exc_info and isinstance(record.exc_info[1], _Dropped))


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE frame: `event: …` (when given) and `data: <json>`."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class ScriptedModelServer:
    """What the OpenAI and Anthropic fakes share: scripting, recording, faults, ASGI.

    A subclass gives the API's `path`, error `statuses` (status → error type) and its wire
    format: `error_body`, `error_frame`, `frames` (streamed) and `whole` (not streamed).
    """

    path = "/"
    statuses: ClassVar[dict[int, str]] = {}
    garbage_frame = b"data: {this is not json\n\n"

    def __init__(self, api_key: str = DEFAULT_KEY) -> None:
        self.api_key = api_key
        self.requests: list[Recorded] = []
        self._steps: deque[Step] = deque()
        self._ids = itertools.count(1)

    # -- scripting

    def script(
        self, text: str | None = None, *, chunk: int = 5, usage: Usage | None = None
    ) -> None:
        """The next request answers `text` (default: the echo) in `chunk`-character deltas."""
        self._steps.append(Step(text=text, chunk=chunk, usage=usage))

    def fail(self, status: int, *, retry_after: float | None = None, message: str | None = None,
             error_type: str | None = None, code: str | None = None,
             after_chunks: int | None = None, times: int = 1) -> None:  # fmt: skip
        """The next `times` requests answer `status` (or, after `after_chunks`, an error event)."""
        step = Step("fail", status=status, retry_after=retry_after, message=message,
                    error_type=error_type, code=code, after=after_chunks)  # fmt: skip
        self._steps.extend([step] * times)

    def disconnect_after(self, n_chunks: int, *, text: str | None = None, chunk: int = 5) -> None:
        """The next request streams `n_chunks` deltas, then the connection drops."""
        self._steps.append(Step("disconnect", text=text, chunk=chunk, after=n_chunks))

    def stall(self, seconds: float, *, after_chunks: int | None = None) -> None:
        """The next request goes quiet for `seconds` or until the client hangs up."""
        self._steps.append(Step("stall", seconds=seconds, after=after_chunks))

    def garbage(self, *, after_chunks: int = 0) -> None:
        """The next request streams `after_chunks` deltas, then a frame that is not JSON."""
        self._steps.append(Step("garbage", after=after_chunks))

    def refuse(self, message: str = "I'm sorry, I can't help with that.") -> None:
        """The next request is refused by the model (a 200 answer with no text)."""
        self._steps.append(Step("refuse", message=message))

    def reset(self) -> None:
        """Forget the script and the requests (to reuse one server across tests)."""
        self._steps.clear()
        self.requests.clear()

    @property
    def last(self) -> Recorded:
        """The last request received."""
        return self.requests[-1]

    # -- the wire format

    def authorized(self, headers: dict[str, str]) -> bool:
        """Whether the request carries the fake's key (OpenAI: bearer auth only)."""
        return headers.get("authorization") == f"Bearer {self.api_key}"

    def unauthorized(self, headers: dict[str, str]) -> Step:
        """The 401 for a wrong key; OpenAI's names the key it got, masked."""
        sent = headers.get("authorization", "").removeprefix("Bearer ")
        masked = f"{sent[:5]}{'*' * 12}{sent[-4:]}" if len(sent) > 12 else "<none>"
        message = f"Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys."
        return Step("fail", status=401, message=message, code="invalid_api_key")

    def precheck(self, headers: dict[str, str], body: Json) -> tuple[int, str] | None:
        """(status, message) when the request is malformed for this API."""
        return None

    def error_body(self, status: int, error_type: str, message: str, code: str | None) -> Json:
        """The JSON body of an error answer."""
        raise NotImplementedError

    def error_frame(self, error_type: str, message: str, code: str | None) -> bytes:
        """An error event inside a 200 stream."""
        raise NotImplementedError

    def frames(self, body: Json, step: Step, pieces: list[str], rid: str) -> Frames:
        """(head, one frame per piece, tail) of a streamed answer."""
        raise NotImplementedError

    def whole(self, body: Json, step: Step, text: str, rid: str) -> Json:
        """The answer when not streamed."""
        raise NotImplementedError

    @staticmethod
    def default_text(body: Json) -> str:
        """The echo answer: the last user message, as JSON when a schema was asked for."""
        users = [m.get("content") for m in body.get("messages", []) if m.get("role") == "user"]
        last = users[-1] if users and isinstance(users[-1], str) else ""
        wants_json = "response_format" in body or "output_config" in body
        return json.dumps({"echo": last}) if wants_json else f"echo: {last}"

    @staticmethod
    def usage(body: Json, step: Step, n_out: int) -> Usage:
        """(input, output) tokens: as scripted, else the prompt's words and the deltas."""
        texts = [m.get("content") for m in body.get("messages", [])] + [body.get("system")]
        words = sum(len(t.split()) for t in texts if isinstance(t, str))
        return step.usage or (words, n_out)

    # -- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            return await send({"type": "lifespan.shutdown.complete"})
        raw, more = b"", True
        while more:
            message = await receive()
            raw, more = raw + message.get("body", b""), message.get("more_body", False)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        self.requests.append(Recorded(scope["method"], scope["path"], headers, body))
        rid = f"req_{next(self._ids):06d}"
        if scope["method"] != "POST" or scope["path"] != self.path:
            return await self._error(send, rid, 404, f"Unknown request URL: {scope['path']}")
        if not self.authorized(headers):
            return await self._error(send, rid, 401, step=self.unauthorized(headers))
        if (bad := self.precheck(headers, body)) is not None:
            return await self._error(send, rid, *bad)
        step = self._steps.popleft() if self._steps else Step()
        if step.kind == "fail" and step.after is None:
            return await self._error(send, rid, step.status, step=step)
        if step.kind == "stall" and step.after is None:
            if await self._quiet(receive, step.seconds):
                return
            step = Step()
        text = step.text if step.text is not None else self.default_text(body)
        if not body.get("stream"):
            if step.kind == "disconnect":
                raise _Dropped
            data = json.dumps(self.whole(body, step, text, rid)).encode()
            return await self._answer(send, rid, 200, "application/json", data)
        size = max(1, step.chunk)
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        head, content, tail = self.frames(body, step, [] if step.kind == "refuse" else pieces, rid)
        await self._answer(send, rid, 200, "text/event-stream; charset=utf-8", None)
        cut = len(content) if step.after is None else step.after
        for frame in head + content[:cut]:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        rest = content[cut:] + tail
        if step.kind == "disconnect":
            raise _Dropped
        if step.kind == "fail":
            error_type = step.error_type or self.statuses.get(step.status, "api_error")
            rest = [self.error_frame(error_type, step.message or "Overloaded", step.code)]
        elif step.kind == "garbage":
            rest = [self.garbage_frame]
        elif step.kind == "stall" and await self._quiet(receive, step.seconds):
            return
        await send({"type": "http.response.body", "body": b"".join(rest)})

    @staticmethod
    async def _quiet(receive: Receive, seconds: float) -> bool:
        """Wait `seconds`; True as soon as the client hangs up (the server can stop promptly)."""
        deadline = time.monotonic() + seconds
        with contextlib.suppress(TimeoutError):
            while (left := deadline - time.monotonic()) > 0:
                if (await asyncio.wait_for(receive(), left))["type"] == "http.disconnect":
                    return True
        return False

    async def _answer(self, send: Send, rid: str, status: int, content_type: str,
                      data: bytes | None, extra: dict[str, str] | None = None) -> None:  # fmt: skip
        headers = {"content-type": content_type, "x-request-id": rid, "request-id": rid}
        pairs = [(k.encode(), v.encode()) for k, v in {**headers, **(extra or {})}.items()]
        await send({"type": "http.response.start", "status": status, "headers": pairs})
        if data is not None:
            await send({"type": "http.response.body", "body": data})

    async def _error(self, send: Send, rid: str, status: int, message: str | None = None,
                     step: Step | None = None) -> None:  # fmt: skip
        step = step or Step("fail", status=status, message=message)
        error_type = step.error_type or self.statuses.get(status, "api_error")
        body = self.error_body(status, error_type, step.message or f"fake {error_type}", step.code)
        extra = {}
        if step.retry_after is not None:
            extra = {"retry-after-ms": str(round(step.retry_after * 1000)),
                     "retry-after": str(math.ceil(step.retry_after))}  # fmt: skip
        await self._answer(send, rid, status, "application/json", json.dumps(body).encode(), extra)


class FakeOpenAI(ScriptedModelServer):
    """OpenAI's Chat Completions wire format (see the module docstring)."""

    path = "/v1/chat/completions"
    statuses: ClassVar[dict[int, str]] = {
        **dict.fromkeys((400, 401, 404, 422), "invalid_request_error"),
        403: "permission_denied", 409: "conflict", 429: "requests",
        **dict.fromkeys((500, 502, 503), "server_error"),
    }  # fmt: skip

    def error_body(self, status: int, error_type: str, message: str, code: str | None) -> Json:
        """`{"error": {"message", "type", "param", "code"}}`."""
        return {"error": {"message": message, "type": error_type, "param": None, "code": code}}

    def error_frame(self, error_type: str, message: str, code: str | None) -> bytes:
        """`data: {"error": {...}}`, as OpenAI sends mid-stream."""
        return sse(self.error_body(200, error_type, message, code))

    def _base(self, body: Json, rid: str, kind: str) -> Json:
        return {"id": f"chatcmpl-{rid}", "object": kind, "created": int(time.time()),
                "model": body.get("model", ""), "system_fingerprint": "fp_fake"}  # fmt: skip

    @staticmethod
    def _usage(n_in: int, n_out: int) -> Json:
        return {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}

    def frames(self, body: Json, step: Step, pieces: list[str], rid: str) -> Frames:
        """Role chunk; content (or refusal) chunks; finish chunk, usage chunk, [DONE]."""
        base = self._base(body, rid, "chat.completion.chunk")

        def chunk(delta: Json, finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return sse({**base, "choices": [choice]})

        key = "content"
        if step.kind == "refuse":
            key, pieces = "refusal", [step.message or ""]
        tail = [chunk({}, "stop")]
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = self._usage(*self.usage(body, step, len(pieces)))
            tail.append(sse({**base, "choices": [], "usage": usage}))
        head = [chunk({"role": "assistant", "content": "", "refusal": None})]
        return head, [chunk({key: piece}) for piece in pieces], [*tail, b"data: [DONE]\n\n"]

    def whole(self, body: Json, step: Step, text: str, rid: str) -> Json:
        """One `chat.completion`."""
        refusal = step.message if step.kind == "refuse" else None
        message = {"role": "assistant", "content": None if refusal else text, "refusal": refusal}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        usage = self._usage(*self.usage(body, step, len(text.split())))
        return {**self._base(body, rid, "chat.completion"), "choices": [choice], "usage": usage}
