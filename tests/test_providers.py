"""Providers through the real SDKs over HTTP (fake servers on 127.0.0.1) and their parsers."""

from __future__ import annotations

import asyncio
import email.utils

import pytest
from fakes import FakeGemini, FakeOpenAI, Faults

from foundry.generate.providers import (
    FatalRequestError,
    GeminiProvider,
    KeyRejected,
    OpenAIProvider,
    OutputSpec,
    RateLimited,
    Transient,
    classify_status,
    gemini_retry_info,
    parse_retry_after,
    parse_retry_delay,
)
from foundry.generate.registry import make_provider
from foundry.secrets import ApiKey

SPEC = OutputSpec(3, ["Question", "Statement"], ["wh_question", "command"])
PROMPT = "写 3 条：\n- 2 × label=Question, category=wh_question\n- 1 × label=Statement"
KEY = ApiKey("provider-test-key")


def call(provider, prompt=PROMPT, key=KEY):
    async def go():
        try:
            return await provider.complete(key, prompt, SPEC, seed=1)
        finally:
            await provider.aclose()

    return asyncio.run(go())


def gemini(server, timeout_s=2.0):
    return GeminiProvider("gemini-2.5-flash", base_url=server.base_url, temperature=0.3,
                          timeout_s=timeout_s)


def openai_(server, timeout_s=2.0, notices=None):
    return OpenAIProvider("qwen2.5:7b-instruct", base_url=server.base_url, temperature=0.3,
                          timeout_s=timeout_s,
                          on_notice=notices.append if notices is not None else None)


# -- parsers ---------------------------------------------------------------------------


@pytest.mark.parametrize("value, seconds", [("27s", 27.0), ("0.300s", 0.3), (" 1.5s ", 1.5),
                                            ("abc", None), (None, None), ("5", None)])
def test_parse_retry_delay(value, seconds):
    assert parse_retry_delay(value) == seconds


def test_parse_retry_after_prefers_ms_then_seconds_then_date():
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=1_000_000) == pytest.approx(30.0)
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


def test_gemini_retry_info_is_found_among_details():
    body = {"error": {"code": 429, "details": [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure"},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"}]}}
    assert gemini_retry_info(body) == 12.0
    assert gemini_retry_info({"error": {"code": 429}}) is None
    assert gemini_retry_info("not a dict") is None


@pytest.mark.parametrize("status, cls", [(429, RateLimited), (400, KeyRejected),
                                         (401, KeyRejected), (403, KeyRejected),
                                         (408, Transient), (500, Transient), (503, Transient),
                                         (404, FatalRequestError), (422, FatalRequestError)])
def test_classify_status(status, cls):
    assert isinstance(classify_status(status, "m", None), cls)


# -- Gemini over HTTP ------------------------------------------------------------------


def test_gemini_success_sends_schema_and_returns_answer_with_bookkeeping():
    with FakeGemini() as server:
        comp = call(gemini(server))
        request = server.requests_seen[0]
        key_seen = server.arrivals[0][1]
    assert comp.request_id == "r000000" and comp.tokens_in > 0 and comp.tokens_out > 0
    assert [r["label"] for r in __import__("json").loads(comp.text)] == \
        ["Question", "Question", "Statement"]
    cfg = request["generationConfig"]
    assert cfg["responseMimeType"] == "application/json"
    assert cfg["temperature"] == 0.3
    items = cfg["responseSchema"]["items"]
    assert items["properties"]["label"]["enum"] == ["Question", "Statement"]
    # proto3 JSON: the SDK sends snake_case here, the API accepts both spellings.
    schema = cfg["responseSchema"]
    assert int(schema.get("maxItems", schema.get("max_items"))) == 3
    assert key_seen == KEY.reveal()


def test_gemini_429_carries_retry_info_and_sdk_does_not_retry():
    with FakeGemini(Faults(p_429=1.0, retry_delay_s=2.5)) as server:
        with pytest.raises(RateLimited) as info:
            call(gemini(server))
        assert len(server.arrivals) == 1  # no hidden SDK retries
    assert info.value.retry_after_s == 2.5


def test_gemini_revoked_key_and_server_errors_and_bad_bodies():
    with FakeGemini(Faults(revoked={KEY.reveal()})) as server, \
            pytest.raises(KeyRejected, match="API key not valid") as info:
        call(gemini(server))
    assert info.value.status == 400 and KEY.reveal() not in str(info.value)
    with FakeGemini(Faults(p_500=1.0)) as server, pytest.raises(Transient) as info:
        call(gemini(server))
    assert info.value.kind == "server_error"
    with FakeGemini(Faults(p_corrupt_body=1.0)) as server, pytest.raises(Transient) as info:
        call(gemini(server))
    assert info.value.kind == "bad_response"


def test_gemini_timeout_is_transient():
    with FakeGemini(Faults(p_timeout=1.0, hang_s=1.0)) as server, \
            pytest.raises(Transient) as info:
        call(gemini(server, timeout_s=0.3))
    assert info.value.kind == "timeout"


def test_connection_refused_is_transient():
    provider = GeminiProvider("m", base_url="http://127.0.0.1:9", temperature=0.1,
                              timeout_s=1.0)
    with pytest.raises(Transient) as info:
        call(provider)
    assert info.value.kind in ("connection", "timeout")


# -- OpenAI-compatible over HTTP -------------------------------------------------------


def test_openai_success_uses_json_schema_and_bearer_key():
    with FakeOpenAI() as server:
        comp = call(openai_(server))
        request = server.requests_seen[0]
        key_seen = server.arrivals[0][1]
    assert comp.request_id == "chatcmpl-r000000" and comp.tokens_out > 0
    fmt = request["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    rows = fmt["json_schema"]["schema"]["properties"]["rows"]
    assert rows["items"]["properties"]["label"]["enum"] == ["Question", "Statement"]
    assert request["model"] == "qwen2.5:7b-instruct" and request["seed"] == 1
    assert key_seen == KEY.reveal()


def test_openai_steps_down_to_json_object_once_and_keeps_it():
    notices: list[str] = []
    with FakeOpenAI(json_schema_supported=False) as server:
        provider = openai_(server, notices=notices)

        async def twice():
            a = await provider.complete(KEY, PROMPT, SPEC, seed=1)
            b = await provider.complete(KEY, PROMPT, SPEC, seed=2)
            await provider.aclose()
            return a, b

        asyncio.run(twice())
        formats = [(r.get("response_format") or {}).get("type") for r in server.requests_seen]
    assert formats == ["json_schema", "json_object", "json_object"]
    assert provider.mode == "json_object" and len(notices) == 1


def test_openai_errors_are_classified():
    with FakeOpenAI(Faults(p_429=1.0, retry_delay_s=0.75)) as server:
        with pytest.raises(RateLimited) as info:
            call(openai_(server))
        assert len(server.arrivals) == 1
    assert info.value.retry_after_s == 0.75
    with FakeOpenAI(Faults(revoked={KEY.reveal()})) as server, \
            pytest.raises(KeyRejected) as info:
        call(openai_(server))
    assert info.value.status == 401
    with FakeOpenAI(Faults(p_500=1.0)) as server, pytest.raises(Transient):
        call(openai_(server))
    with FakeOpenAI(Faults(p_timeout=1.0, hang_s=1.0)) as server, \
            pytest.raises(Transient) as info:
        call(openai_(server, timeout_s=0.3))
    assert info.value.kind == "timeout"


def test_make_provider_reads_base_urls_and_rejects_unknown():
    env = {"GEMINI_BASE_URL": "http://g", "OPENAI_BASE_URL": "http://o/v1"}
    assert make_provider("gemini", env, model="m", temperature=0.1, timeout_s=1).base_url == \
        "http://g"
    assert make_provider("openai", env, model="m", temperature=0.1, timeout_s=1).base_url == \
        "http://o/v1"
    with pytest.raises(ValueError, match="unknown LLM provider"):
        make_provider("offline", env, model="m", temperature=0.1, timeout_s=1)


def test_openai_insufficient_quota_rejects_the_key_instead_of_waiting():
    with FakeOpenAI(out_of_quota={KEY.reveal()}) as server, \
            pytest.raises(KeyRejected, match="insufficient_quota") as info:
        call(openai_(server))
    assert info.value.status == 429


def test_gemini_thought_parts_are_not_part_of_the_answer():
    class Quiet(FakeGemini):
        def success_body(self, response_id, answer, tokens_in, tokens_out):
            body = super().success_body(response_id, answer, tokens_in, tokens_out)
            parts = body["candidates"][0]["content"]["parts"]
            parts.insert(0, {"text": "Let me think about labels...", "thought": True})
            return body

    with Quiet() as server:
        comp = call(gemini(server))
    assert comp.text.startswith("[")
