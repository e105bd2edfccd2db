"""A fake Gemini REST endpoint: ``POST /v1beta/models/{model}:generateContent``.

Speaks the wire format the ``google-genai`` SDK uses: the key in ``x-goog-api-key`` (or
``?key=``), camelCase JSON bodies, ``candidates[].content.parts[].text`` answers with
``usageMetadata`` and ``responseId``, and ``google.rpc.Status`` error bodies whose ``details``
carry ``google.rpc.RetryInfo`` (429) or ``google.rpc.ErrorInfo`` (``API_KEY_INVALID``).
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from .base import FakeLLMServer

_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED",
           500: "INTERNAL", 503: "UNAVAILABLE"}


class FakeGemini(FakeLLMServer):
    """Fake Gemini server; ``base_url`` goes into ``GEMINI_BASE_URL``."""

    model = "gemini-2.5-flash"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def key_of(self, handler: BaseHTTPRequestHandler) -> str:
        key = handler.headers.get("x-goog-api-key")
        if not key:
            key = (parse_qs(urlparse(handler.path).query).get("key") or [""])[0]
        return key

    def prompt_of(self, request: dict[str, Any]) -> str:
        parts = [p.get("text", "") for c in request.get("contents", [])
                 for p in c.get("parts", [])]
        return "\n".join(parts)

    def labels_of(self, request: dict[str, Any]) -> list[str]:
        schema = request.get("generationConfig", {}).get("responseSchema", {})
        return list(schema.get("items", {}).get("properties", {}).get("label", {})
                    .get("enum", []))

    def success_body(self, response_id: str, answer: str, tokens_in: int,
                     tokens_out: int) -> dict[str, Any]:
        return {
            "candidates": [{"content": {"parts": [{"text": answer}], "role": "model"},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": tokens_in, "candidatesTokenCount": tokens_out,
                              "totalTokenCount": tokens_in + tokens_out},
            "modelVersion": self.model,
            "responseId": response_id,
        }

    def error(self, status: int, kind: str, retry_s: float | None
              ) -> tuple[dict[str, Any], dict[str, str]]:
        details: list[dict[str, Any]] = []
        if kind == "rate":
            message = ("You exceeded your current quota, please check your plan and billing "
                       "details.")
            details.append({"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                            "violations": [{"quotaMetric": "generativelanguage.googleapis.com/"
                                            "generate_content_free_tier_requests",
                                            "quotaId": "GenerateRequestsPerMinutePerProject"}]})
            if retry_s is not None:
                details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                "retryDelay": f"{retry_s:.3f}s"})
        elif kind == "revoked":
            message = "API key not valid. Please pass a valid API key."
            details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                            "metadata": {"service": "generativelanguage.googleapis.com"}})
        else:
            message = "An internal error has occurred. Please retry or report."
        body = {"error": {"code": status, "message": message,
                          "status": _STATUS.get(status, "UNKNOWN"), "details": details}}
        return body, {}
