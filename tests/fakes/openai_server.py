"""A fake OpenAI-compatible server: ``POST /v1/chat/completions``.

Answers ``chat.completion`` objects (``id``, ``choices[].message.content``, ``usage``) and
OpenAI-style errors (``{"error": {"message", "type", "code"}}``) with ``retry-after`` /
``retry-after-ms`` headers on 429 and 401 for a revoked key. With ``json_schema_supported=False``
it answers 400 to ``response_format: json_schema`` like older local servers do.
"""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from .base import FakeLLMServer


class FakeOpenAI(FakeLLMServer):
    """Fake OpenAI-compatible server; ``base_url`` (ending in ``/v1``) goes into OPENAI_BASE_URL."""

    model = "qwen2.5:7b-instruct"

    def __init__(self, *args: Any, json_schema_supported: bool = True,
                 out_of_quota: set[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.json_schema_supported = json_schema_supported
        self.out_of_quota = out_of_quota or set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def key_of(self, handler: BaseHTTPRequestHandler) -> str:
        auth = handler.headers.get("Authorization", "")
        return auth.removeprefix("Bearer ").strip()

    def prompt_of(self, request: dict[str, Any]) -> str:
        return "\n".join(str(m.get("content", "")) for m in request.get("messages", []))

    def labels_of(self, request: dict[str, Any]) -> list[str]:
        fmt = request.get("response_format") or {}
        schema = (fmt.get("json_schema") or {}).get("schema", {})
        items = schema.get("properties", {}).get("rows", {}).get("items", {})
        return list(items.get("properties", {}).get("label", {}).get("enum", []))

    def wrap_items(self, items: list[dict[str, Any]]) -> Any:
        return {"rows": items}

    def revoked_status(self) -> tuple[int, str]:
        return 401, "revoked"

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        import json

        request = json.loads(body or b"{}")
        fmt = (request.get("response_format") or {}).get("type")
        if self.key_of(handler) in self.out_of_quota:
            self._send_error(handler, self.key_of(handler), 429, "quota")
            return
        if fmt == "json_schema" and not self.json_schema_supported:
            with self.lock:
                self.requests_seen.append(request)
            self._send_error(handler, self.key_of(handler), 400, "format")
            return
        super()._handle(handler, body)

    def success_body(self, response_id: str, answer: str, tokens_in: int,
                     tokens_out: int) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{response_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                      "total_tokens": tokens_in + tokens_out},
        }

    def error(self, status: int, kind: str, retry_s: float | None
              ) -> tuple[dict[str, Any], dict[str, str]]:
        headers: dict[str, str] = {}
        if kind == "rate":
            err = {"message": "Rate limit reached for requests", "type": "requests",
                   "code": "rate_limit_exceeded"}
            if retry_s is not None:
                headers = {"retry-after-ms": str(int(retry_s * 1000)),
                           "retry-after": str(max(1, round(retry_s)))}
        elif kind == "revoked":
            err = {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                   "code": "invalid_api_key"}
        elif kind == "quota":
            err = {"message": "You exceeded your current quota, please check your plan and "
                   "billing details.", "type": "insufficient_quota", "code": "insufficient_quota"}
        elif kind == "format":
            err = {"message": "response_format type json_schema is not supported",
                   "type": "invalid_request_error", "code": None}
        else:
            err = {"message": "The server had an error while processing your request.",
                   "type": "server_error", "code": None}
        return {"error": err}, headers
