"""A wire-faithful fake of Anthropic's Messages API, as an ASGI app.

`POST /v1/messages` with the key as `x-api-key` or `Authorization: Bearer` (SDK 2.x sends the
latter; a wrong or missing key answers 401) and an `anthropic-version` header (else 400).
`stream: true` answers SSE frames `event: <type>\\ndata: {...}` in Anthropic's order:
message_start, content_block_start, ping, content_block_delta (text_delta)…,
content_block_stop, message_delta (stop_reason, usage), message_stop. Without `stream` it
answers one `message`. Errors are `{"type": "error", "error": {"type", "message"}}`; 529 is
`overloaded_error`, and `fail(529, after_chunks=n)` sends it as an `error` event mid-stream,
as the real API does.

It is scripted exactly like the OpenAI fake (`tests.fakes.openai.ScriptedModelServer`):
`script`, `fail`, `disconnect_after`, `stall`, `garbage`, `refuse`, `requests`, `last`.
Serve it with `async with local.server.serve(fake) as url:` and use `url` as base URL.
"""

from __future__ import annotations

from typing import ClassVar

from tests.fakes.openai import DEFAULT_KEY, Frames, Json, ScriptedModelServer, Step, sse

__all__ = ["DEFAULT_KEY", "FakeAnthropic"]


class FakeAnthropic(ScriptedModelServer):
    """Anthropic's Messages wire format (see the module docstring)."""

    path = "/v1/messages"
    garbage_frame = b"event: content_block_delta\ndata: {this is not json\n\n"
    statuses: ClassVar[dict[int, str]] = {
        400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
        404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
        500: "api_error", 503: "api_error", 504: "timeout_error", 529: "overloaded_error",
    }  # fmt: skip

    def authorized(self, headers: dict[str, str]) -> bool:
        """`x-api-key: <key>` or `Authorization: Bearer <key>`."""
        return (
            headers.get("x-api-key") == self.api_key
            or headers.get("authorization") == f"Bearer {self.api_key}"
        )

    def unauthorized(self, headers: dict[str, str]) -> Step:
        """Anthropic's 401 does not echo the key."""
        return Step("fail", status=401, message="invalid x-api-key")

    def precheck(self, headers: dict[str, str], body: Json) -> tuple[int, str] | None:
        """The API refuses a request without `anthropic-version`, or without max_tokens."""
        if "anthropic-version" not in headers:
            return 400, "anthropic-version: header is required"
        if not isinstance(body.get("max_tokens"), int):
            return 400, "max_tokens: Field required"
        return None

    def error_body(self, status: int, error_type: str, message: str, code: str | None) -> Json:
        """`{"type": "error", "error": {"type", "message"}}`."""
        return {"type": "error", "error": {"type": error_type, "message": message}}

    def error_frame(self, error_type: str, message: str, code: str | None) -> bytes:
        """`event: error` inside the stream."""
        return sse(self.error_body(200, error_type, message, code), "error")

    def _message(self, body: Json, rid: str, n_in: int, n_out: int) -> Json:
        return {
            "id": f"msg_{rid}", "type": "message", "role": "assistant",
            "model": body.get("model", ""), "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {"input_tokens": n_in, "output_tokens": n_out},
        }  # fmt: skip

    def frames(self, body: Json, step: Step, pieces: list[str], rid: str) -> Frames:
        """message_start, content_block_start, ping; deltas; the three closing events."""
        n_in, n_out = self.usage(body, step, len(pieces))
        stop = "refusal" if step.kind == "refuse" else "end_turn"
        head = [
            sse({"type": "message_start", "message": self._message(body, rid, n_in, 1)},
                "message_start"),
            sse({"type": "content_block_start", "index": 0,
                 "content_block": {"type": "text", "text": ""}}, "content_block_start"),
            sse({"type": "ping"}, "ping"),
        ]  # fmt: skip
        content = [
            sse({"type": "content_block_delta", "index": 0,
                 "delta": {"type": "text_delta", "text": piece}}, "content_block_delta")
            for piece in pieces
        ]  # fmt: skip
        tail = [
            sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            sse({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                 "usage": {"output_tokens": n_out}}, "message_delta"),
            sse({"type": "message_stop"}, "message_stop"),
        ]  # fmt: skip
        return head, content, tail

    def whole(self, body: Json, step: Step, text: str, rid: str) -> Json:
        """One `message`."""
        refused = step.kind == "refuse"
        message = self._message(body, rid, *self.usage(body, step, len(text.split())))
        content = [] if refused else [{"type": "text", "text": text}]
        stop = "refusal" if refused else "end_turn"
        return {**message, "content": content, "stop_reason": stop}
