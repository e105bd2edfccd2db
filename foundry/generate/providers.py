"""LLM providers behind one small interface: :class:`GeminiProvider` and :class:`OpenAIProvider`.

A provider turns ``(key, prompt, output spec)`` into a :class:`Completion` (the answer text,
the server's request id, token counts) or raises one of four errors that tell the engine what
to do next:

:class:`RateLimited`
    429: cool the key down for ``retry_after_s`` (``None``: server gave no delay).
:class:`KeyRejected`
    400/401/403: this key is unusable; disable it, keep going on the others.
:class:`Transient`
    5xx, 408, timeouts, connection errors, unreadable bodies: retry with backoff.
:class:`FatalRequestError`
    Anything else (404 unknown model, 422 ...): retrying cannot help; stop the run.

The SDKs' own retries are switched off: the key pool decides about retries, per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from foundry.errors import FoundryError
from foundry.secrets import ApiKey

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


# -- errors ----------------------------------------------------------------------------


class ProviderError(FoundryError):
    """Base of the errors a provider call can end with (messages never contain keys).

    The engine turns these into retries, disabled keys or a :class:`GenerationError`.
    """


class RateLimited(ProviderError):
    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class KeyRejected(ProviderError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Transient(ProviderError):
    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind  # "server_error" | "timeout" | "connection" | "bad_response"


class FatalRequestError(ProviderError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# -- shared pieces ---------------------------------------------------------------------


@dataclass(frozen=True)
class OutputSpec:
    """What the answer must look like: up to ``n`` rows with a label from ``labels``."""

    n: int
    labels: Sequence[str]
    categories: Sequence[str] = ()


@dataclass(frozen=True)
class Completion:
    """A model answer and its bookkeeping."""

    text: str | None
    request_id: str
    tokens_in: int = 0
    tokens_out: int = 0


def row_json_schema(spec: OutputSpec) -> dict[str, Any]:
    """JSON Schema of one row: ``{text, label, category}``, every field required."""
    cats = list(spec.categories) or ["none"]
    if "none" not in cats:
        cats.append("none")
    return {
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "label": {"type": "string", "enum": list(spec.labels)},
            "category": {"type": "string", "enum": cats},
        },
        "required": ["text", "label", "category"],
        "additionalProperties": False,
    }


def parse_retry_delay(value: str | None) -> float | None:
    """Seconds of a protobuf ``Duration`` in JSON form (``"27s"``, ``"0.300s"``)."""
    if not isinstance(value, str):
        return None
    m = _DURATION.match(value)
    return float(m.group(1)) if m else None


def parse_retry_after(headers: Mapping[str, str] | None, *, now: float | None = None
                      ) -> float | None:
    """Seconds to wait from ``Retry-After-Ms`` / ``Retry-After`` (seconds or HTTP date)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def gemini_retry_info(body: Any) -> float | None:
    """The ``retryDelay`` of a ``google.rpc.RetryInfo`` in a Gemini error body, if any."""
    err = body.get("error", body) if isinstance(body, dict) else None
    details = err.get("details") if isinstance(err, dict) else None
    if not isinstance(details, list):
        return None
    for d in details:
        if isinstance(d, dict) and str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
            return parse_retry_delay(d.get("retryDelay"))
    return None


def _transport_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(timeout classes, other transport error classes) of httpx and httpx2, as installed."""
    timeouts: list[type] = [asyncio.TimeoutError, TimeoutError]
    transport: list[type] = [ConnectionError]
    for name in ("httpx", "httpx2"):
        try:
            mod = __import__(name)
        except ImportError:
            continue
        timeouts.append(mod.TimeoutException)
        transport.append(mod.TransportError)
    return tuple(timeouts), tuple(transport)


_TIMEOUTS, _TRANSPORT = _transport_errors()


def classify_status(status: int, message: str, retry_after_s: float | None) -> ProviderError:
    """Map an HTTP error status to the error that tells the engine what to do."""
    if status == 429:
        return RateLimited(f"429 rate limited: {message}", retry_after_s)
    if status in (400, 401, 403):
        return KeyRejected(f"{status}: {message}", status)
    if status == 408 or status >= 500:
        return Transient(f"{status}: {message}", "server_error")
    return FatalRequestError(f"{status}: {message}", status)


class Provider:
    """Interface of an LLM provider; one SDK client per key, built lazily."""

    name = "base"

    def __init__(self, model: str, *, base_url: str | None, temperature: float,
                 timeout_s: float) -> None:
        self.model = model
        self.base_url = base_url
        self.temperature = temperature
        self.timeout_s = timeout_s
        self._clients: dict[str, Any] = {}

    def _client(self, key: ApiKey) -> Any:
        client = self._clients.get(key.fingerprint)
        if client is None:
            client = self._clients[key.fingerprint] = self._make_client(key)
        return client

    def _make_client(self, key: ApiKey) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    async def _call(self, key: ApiKey, prompt: str, spec: OutputSpec, seed: int
                    ) -> Completion:  # pragma: no cover - abstract
        raise NotImplementedError

    async def complete(self, key: ApiKey, prompt: str, spec: OutputSpec, *, seed: int
                       ) -> Completion:
        """One request; raises a :class:`ProviderError` subclass on failure."""
        try:
            # The SDK has its own timeout; this one also bounds DNS, pools and slow bodies.
            return await asyncio.wait_for(self._call(key, prompt, spec, seed),
                                          self.timeout_s + 5.0)
        except ProviderError:
            raise
        except _TIMEOUTS as exc:
            raise Transient(f"timeout after {self.timeout_s:g}s ({type(exc).__name__})",
                            "timeout") from None
        except _TRANSPORT as exc:
            raise Transient(f"connection error ({type(exc).__name__})", "connection") from None
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            # Bodies that are not the JSON the SDK expects.
            raise Transient(f"unreadable response ({type(exc).__name__})",
                            "bad_response") from None

    async def aclose(self) -> None:
        """Close the SDK clients' connection pools (errors on closing do not matter)."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                await self._close_client(client)

    async def _close_client(self, client: Any) -> None:
        pass


# -- Gemini ----------------------------------------------------------------------------


class GeminiProvider(Provider):
    """Gemini through the ``google-genai`` SDK's async client, with a response schema."""

    name = "gemini"

    def _make_client(self, key: ApiKey) -> Any:
        from google import genai
        from google.genai import types

        options = types.HttpOptions(base_url=self.base_url,
                                    timeout=int(self.timeout_s * 1000))
        # retry_options stays unset: the SDK then never retries, the key pool does.
        return genai.Client(vertexai=False, api_key=key.reveal(), http_options=options)

    async def _close_client(self, client: Any) -> None:
        await client.aio.aclose()
        client.close()

    @staticmethod
    def response_schema(spec: OutputSpec) -> Any:
        from google.genai import types

        row = row_json_schema(spec)
        props = row["properties"]
        item = types.Schema(
            type=types.Type.OBJECT,
            properties={
                "text": types.Schema(type=types.Type.STRING),
                "label": types.Schema(type=types.Type.STRING, enum=props["label"]["enum"]),
                "category": types.Schema(type=types.Type.STRING,
                                         enum=props["category"]["enum"]),
            },
            required=["text", "label", "category"],
            property_ordering=["text", "label", "category"],
        )
        return types.Schema(type=types.Type.ARRAY, items=item, max_items=spec.n)

    async def _call(self, key: ApiKey, prompt: str, spec: OutputSpec, seed: int) -> Completion:
        from google.genai import errors, types

        config = types.GenerateContentConfig(
            response_mime_type="application/json",
            response_schema=self.response_schema(spec),
            temperature=self.temperature,
            seed=seed,
            candidate_count=1,
        )
        try:
            resp = await self._client(key).aio.models.generate_content(
                model=self.model, contents=prompt, config=config)
        except errors.APIError as exc:
            headers = getattr(getattr(exc, "response", None), "headers", None)
            retry = gemini_retry_info(exc.details)
            if retry is None:
                retry = parse_retry_after(headers)
            status = exc.status or ""
            raise classify_status(int(exc.code or 0), f"{status} {exc.message or ''}".strip(),
                                  retry) from None
        text = None
        if resp.candidates and resp.candidates[0].content and resp.candidates[0].content.parts:
            # Thought summaries (thinking models) are not part of the answer.
            text = "".join(p.text or "" for p in resp.candidates[0].content.parts
                           if not getattr(p, "thought", False))
        usage = resp.usage_metadata
        return Completion(
            text=text,
            request_id=resp.response_id or f"local-{uuid.uuid4().hex[:16]}",
            tokens_in=(usage.prompt_token_count or 0) if usage else 0,
            tokens_out=(usage.candidates_token_count or 0) if usage else 0,
        )


# -- OpenAI-compatible -----------------------------------------------------------------


_SYSTEM = ("You write training data. Reply with JSON only, no prose: an object "
           '{"rows": [{"text": "...", "label": "...", "category": "..."}]}.')


class OpenAIProvider(Provider):
    """Any OpenAI-compatible ``/v1/chat/completions`` server through the ``openai`` SDK.

    Asks for ``json_schema`` output; a server that answers 400 to it is asked again with
    ``json_object``, then with no ``response_format`` (the tolerant parser copes), and the
    mode that works is kept for the rest of the run.
    """

    name = "openai"
    MODES = ("json_schema", "json_object", "plain")

    def __init__(self, model: str, *, base_url: str | None, temperature: float,
                 timeout_s: float, on_notice: Callable[[str], None] | None = None) -> None:
        super().__init__(model, base_url=base_url, temperature=temperature, timeout_s=timeout_s)
        self.mode = self.MODES[0]
        self.on_notice = on_notice or (lambda _msg: None)

    def _make_client(self, key: ApiKey) -> Any:
        import openai

        return openai.AsyncOpenAI(api_key=key.reveal(), base_url=self.base_url,
                                  max_retries=0, timeout=self.timeout_s)

    async def _close_client(self, client: Any) -> None:
        await client.close()

    def response_format(self, spec: OutputSpec, mode: str) -> dict[str, Any] | None:
        if mode == "json_object":
            return {"type": "json_object"}
        if mode == "plain":
            return None
        schema = {
            "type": "object",
            "properties": {"rows": {"type": "array", "items": row_json_schema(spec),
                                    "maxItems": spec.n}},
            "required": ["rows"],
            "additionalProperties": False,
        }
        return {"type": "json_schema",
                "json_schema": {"name": "rows", "schema": schema, "strict": True}}

    async def _call(self, key: ApiKey, prompt: str, spec: OutputSpec, seed: int) -> Completion:
        import openai

        while True:
            mode = self.mode
            kwargs: dict[str, Any] = {}
            fmt = self.response_format(spec, mode)
            if fmt is not None:
                kwargs["response_format"] = fmt
            try:
                resp = await self._client(key).chat.completions.create(
                    model=self.model,
                    messages=[{"role": "system", "content": _SYSTEM},
                              {"role": "user", "content": prompt}],
                    temperature=self.temperature,
                    seed=seed,
                    **kwargs,
                )
                break
            except openai.APIStatusError as exc:
                message = _openai_message(exc)
                nxt = self.MODES.index(mode) + 1
                if exc.status_code == 400 and nxt < len(self.MODES):
                    if self.mode == mode:  # another request may have stepped down already
                        self.mode = self.MODES[nxt]
                        self.on_notice(f"openai: server refused response_format {mode!r} "
                                       f"({message}); using {self.MODES[nxt]!r}")
                    continue
                if exc.status_code == 429 and _openai_code(exc) == "insufficient_quota":
                    # Billing, not pacing: waiting will not help this key.
                    raise KeyRejected(f"429 insufficient_quota: {message}", 429) from None
                raise classify_status(exc.status_code, message,
                                      parse_retry_after(exc.response.headers)) from None
            except openai.APITimeoutError:
                raise Transient(f"timeout after {self.timeout_s:g}s", "timeout") from None
            except openai.APIConnectionError as exc:
                raise Transient(f"connection error ({type(exc).__name__})",
                                "connection") from None
            except openai.APIResponseValidationError:
                raise Transient("unreadable response", "bad_response") from None
        if not resp.choices:
            raise Transient("answer without choices", "bad_response")
        usage = resp.usage
        return Completion(
            text=resp.choices[0].message.content,
            request_id=resp.id or f"local-{uuid.uuid4().hex[:16]}",
            tokens_in=(usage.prompt_tokens or 0) if usage else 0,
            tokens_out=(usage.completion_tokens or 0) if usage else 0,
        )


def _openai_code(exc: Any) -> str | None:
    body = getattr(exc, "body", None)
    err = body.get("error", body) if isinstance(body, dict) else None
    return err.get("code") if isinstance(err, dict) else None


def _openai_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    try:
        return json.dumps(body)[:200] if body is not None else str(exc.message)[:200]
    except (TypeError, ValueError):
        return type(exc).__name__
