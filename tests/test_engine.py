"""The generation engine against fake Gemini and OpenAI-compatible servers, under faults.

Every run is audited (tests/fakes/audit.py): exactly ``target`` rows, no torn line, no
duplicate row or batch, every stored row traced to a delivered answer, and every item of every
delivered answer either stored or quarantined.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import FakeGemini, FakeOpenAI, Faults
from fakes.audit import audit, read_lines_strict
from fakes.tiny_blueprint import write_tiny_blueprint

from foundry.blueprint import load_blueprint
from foundry.generate.engine import (
    AllKeysDisabledError,
    GenerationError,
    MissingKeyError,
    Tuning,
    batch_id,
    generate_llm,
)
from foundry.generate.rawstore import RawStore
from foundry.secrets import fingerprint

FAST = Tuning(backoff_base_s=0.05, backoff_max_s=0.3, progress=False)
KEYS = ["fake-key-alpha-0001", "fake-key-bravo-0002", "fake-key-charlie-0003"]
SERVERS = {"gemini": FakeGemini, "openai": FakeOpenAI}


def env_for(provider: str, server, keys=KEYS) -> dict[str, str]:
    if provider == "gemini":
        return {"GEMINI_API_KEYS": ",".join(keys), "GEMINI_BASE_URL": server.base_url}
    return {"OPENAI_API_KEY": ",".join(keys), "OPENAI_BASE_URL": server.base_url}


def run(tmp_path: Path, provider: str, server, target: int, *, keys=KEYS, tuning=FAST,
        logs: list[str] | None = None, **generation):
    bp = load_blueprint(write_tiny_blueprint(tmp_path / "bp", **generation))
    store = RawStore(tmp_path / "raw" / "is_question.jsonl")
    report = generate_llm(
        bp, bp.task("is_question"), provider=provider, store=store,
        quarantine_path=tmp_path / "raw" / "is_question.quarantine.jsonl", target=target,
        log=(logs.append if logs is not None else lambda _m: None),
        env=env_for(provider, server, keys), tuning=tuning)
    return report, tmp_path / "raw" / "is_question.jsonl", \
        tmp_path / "raw" / "is_question.quarantine.jsonl"


# Random faults, plus a few forced ones so that every test sees its fault happen.
FAULTS = {
    "latency": Faults(latency_s=(0.02, 0.15)),
    "429_storm_retryinfo": Faults(storm=(0, 12), retry_delay_s=0.15),
    "429_no_delay_backoff": Faults(p_429=0.3, retry_delay_s=None, force={1: "429", 4: "429"}),
    "500s": Faults(p_500=0.35, force={0: "500", 3: "500"}),
    "timeouts": Faults(p_timeout=0.2, hang_s=1.2, force={2: "timeout"}),
    "malformed_and_fenced_json": Faults(p_malformed=0.3, p_fenced=0.3,
                                        force={1: "malformed", 2: "fenced", 6: "fenced"}),
    "corrupt_http_body": Faults(p_corrupt_body=0.25, force={0: "corrupt"}),
    "wrong_labels_and_bad_rows": Faults(p_wrong_label=0.15, p_bad_row=0.1),
    "revoked_key": Faults(revoked={KEYS[1]}),
}


@pytest.mark.parametrize("provider", ["gemini", "openai"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_target_reached_under_fault_without_duplicate_or_lost_batches(tmp_path, provider,
                                                                        fault):
    timeout = 0.6 if fault == "timeouts" else 2.0
    with SERVERS[provider](FAULTS[fault], seed=7) as server:
        report, raw, quarantine = run(tmp_path, provider, server, 80,
                                      request_timeout_s=timeout)
        result = audit(server, raw, quarantine, 80)
    assert report.stopped == "target"
    assert report.rows_total == report.rows_added == 80
    assert sum(report.label_counts.values()) == 80
    # The fault really happened and was handled the way it should be.
    if fault.startswith("429"):
        assert report.rate_limited > 0 and report.requests_retried > 0
    if fault == "500s":
        assert sum(k.server_errors for k in report.keys.values()) > 0
    if fault == "timeouts":
        assert sum(k.timeouts for k in report.keys.values()) > 0 and server.abandoned
    if fault == "malformed_and_fenced_json":
        assert result.reasons["unparseable"] > 0
        assert any(d.kind == "fenced" for d in server.delivered.values())
    if fault == "corrupt_http_body":
        assert report.requests_retried > 0
        assert sum(k.server_errors for k in report.keys.values()) > 0
    if fault == "wrong_labels_and_bad_rows":
        assert result.reasons["unknown_label"] > 0
        assert result.reasons["empty_text"] + result.reasons["too_long"] > 0
    if fault == "revoked_key":
        assert report.key_state[fingerprint(KEYS[1])].startswith("disabled")
    # Per-request stats: one line per attempt, and the ok lines add up to the stored rows.
    attempts = read_lines_strict(Path(report.requests_log))
    assert len(attempts) == report.attempts
    ok = [a for a in attempts if a["outcome"] == "ok"]
    assert len(ok) == report.requests_ok and sum(a["accepted"] for a in ok) == 80
    assert sum(1 for a in attempts if a["outcome"] == "rate_limited") == report.rate_limited


@pytest.mark.parametrize("provider", ["gemini", "openai"])
def test_quarantine_holds_every_bad_row_with_reason_and_request_id(tmp_path, provider):
    faults = Faults(p_wrong_label=0.2, p_bad_row=0.2, p_malformed=0.2, force={3: "malformed"})
    with SERVERS[provider](faults, seed=3) as server:
        report, raw, quarantine = run(tmp_path, provider, server, 80)
        audit(server, raw, quarantine, 80)
        records = read_lines_strict(quarantine)
        # Count, straight from the server's log, every bad item it sent in parseable answers.
        bad_sent = sum(1 for d in server.delivered.values() if d.kind != "malformed"
                       for i in d.items
                       if i["label"] == "Maybe" or not i["text"] or len(i["text"]) > 60)
        malformed = sum(1 for d in server.delivered.values() if d.kind == "malformed")
    row_records = [r for r in records if r["reason"] != "unparseable"]
    assert len(row_records) == bad_sent > 0
    assert sum(1 for r in records if r["reason"] == "unparseable") == malformed > 0
    for r in records:
        assert r["reason"] and r["request_id"] and r["batch"].startswith("is_question-llm-")
        assert r["key"].startswith("key:")
    assert report.quarantined == dict(__import__("collections").Counter(
        r["reason"] for r in records))


def test_cooled_down_key_is_not_used_before_its_delay(tmp_path):
    # One request at a time makes the order strict: after a 429 with RetryInfo, the key must
    # not reach the server again before the delay has passed; the other key carries on.
    faults = Faults(p_429=0.4, retry_delay_s=0.3, latency_s=(0.01, 0.02), force={2: "429"})
    with FakeGemini(faults, seed=11) as server:
        report, raw, quarantine = run(tmp_path, "gemini", server, 60, keys=KEYS[:2],
                                      concurrency=1)
        audit(server, raw, quarantine, 60)
        arrivals = list(server.arrivals)
        cooldowns = list(server.cooldowns)
    assert cooldowns, "the fault plan produced no 429"
    for key, sent_at, delay in cooldowns:
        early = [t for t, k in arrivals if k == key and sent_at < t < sent_at + delay]
        assert not early, f"key used {sent_at + delay - early[0]:.3f}s before its cooldown ended"
    # Rotation: while one key cooled down, the other was used.
    used = {k for _, k in arrivals}
    assert used == set(KEYS[:2])
    assert report.rate_limited == len(cooldowns)


def test_revoked_key_is_disabled_with_fingerprint_and_run_finishes(tmp_path):
    logs: list[str] = []
    with FakeGemini(Faults(revoked={KEYS[0]}), seed=1) as server:
        report, raw, quarantine = run(tmp_path, "gemini", server, 50, logs=logs)
        audit(server, raw, quarantine, 50)
        hits = sum(1 for _, k in server.arrivals if k == KEYS[0])
    assert 1 <= hits <= 4  # at most the requests already in flight when it was disabled
    fp = fingerprint(KEYS[0])
    assert any(fp in m and "disabled" in m for m in logs)
    assert report.keys[fp].rows == 0
    assert all(KEYS[0] not in m for m in logs)


@pytest.mark.parametrize("provider", ["gemini", "openai"])
def test_all_keys_revoked_raises_clear_error_with_fingerprints_only(tmp_path, provider):
    with SERVERS[provider](Faults(revoked=set(KEYS[:2])), seed=1) as server, \
            pytest.raises(AllKeysDisabledError) as info:
        run(tmp_path, provider, server, 30, keys=KEYS[:2])
    msg = str(info.value)
    assert fingerprint(KEYS[0]) in msg and fingerprint(KEYS[1]) in msg
    assert KEYS[0] not in msg and KEYS[1] not in msg
    assert "rejected" in msg


def test_missing_gemini_key_is_a_clear_error(tmp_path):
    bp = load_blueprint(write_tiny_blueprint(tmp_path / "bp"))
    with pytest.raises(MissingKeyError, match="GEMINI_API_KEYS"):
        generate_llm(bp, bp.task("is_question"), provider="gemini",
                     store=RawStore(tmp_path / "raw.jsonl"), quarantine_path=tmp_path / "q",
                     target=10, env={}, tuning=FAST)


def test_openai_needs_a_base_url_or_a_key(tmp_path):
    bp = load_blueprint(write_tiny_blueprint(tmp_path / "bp"))
    with pytest.raises(MissingKeyError, match="OPENAI_BASE_URL"):
        generate_llm(bp, bp.task("is_question"), provider="openai",
                     store=RawStore(tmp_path / "raw.jsonl"), quarantine_path=tmp_path / "q",
                     target=10, env={"OPENAI_API_KEY": ""}, tuning=FAST)


def test_openai_without_key_uses_placeholder_for_local_servers(tmp_path):
    with FakeOpenAI(seed=2) as server:
        report, raw, quarantine = run(tmp_path, "openai", server, 20, keys=[])
        audit(server, raw, quarantine, 20)
        assert {k for _, k in server.arrivals} == {"no-key"}


def test_openai_server_without_json_schema_falls_back_to_json_object(tmp_path):
    logs: list[str] = []
    with FakeOpenAI(json_schema_supported=False, seed=2) as server:
        run(tmp_path, "openai", server, 30, logs=logs)
        formats = [(r.get("response_format") or {}).get("type") for r in server.requests_seen]
    assert "json_object" in formats
    assert any("json_object" in m for m in logs)


def test_resume_counts_existing_rows_and_continues_numbering(tmp_path):
    with FakeGemini(seed=4) as server:
        first, raw, _ = run(tmp_path, "gemini", server, 40)
        second, raw, quarantine = run(tmp_path, "gemini", server, 100)
        audit(server, raw, quarantine, 100)
    assert (first.rows_added, second.rows_before, second.rows_added) == (40, 40, 60)
    batches = [json.loads(line)["batch"] for line in raw.read_text().splitlines()]
    assert len(set(batches)) == 100 // 10
    # A third run at the same target has nothing to do and sends nothing.
    with FakeGemini(seed=5) as server:
        third, _, _ = run(tmp_path, "gemini", server, 100)
        assert third.attempts == 0 and third.rows_added == 0 and not server.arrivals


def test_replayed_batch_ids_never_duplicate_rows(tmp_path):
    raw = tmp_path / "raw" / "is_question.jsonl"
    store = RawStore(raw)
    store.append_batch(batch_id("is_question", 0), [{"text": "已经有了", "label": "Question"}])
    with FakeGemini(seed=6) as server:
        report, raw, _ = run(tmp_path, "gemini", server, 21)
        delivered = set(server.delivered)
    rows = read_lines_strict(raw)
    # Every answer the server delivered was stored (none swallowed by a clashing batch id).
    assert {r["request_id"] for r in rows[1:]} == delivered
    assert len(rows) == 21 and report.rows_before == 1
    assert [r["batch"] for r in rows].count(batch_id("is_question", 0)) == 1


def test_budget_stops_cleanly_and_says_so(tmp_path):
    logs: list[str] = []
    budget = Tuning(backoff_base_s=0.05, backoff_max_s=0.3, progress=False, max_requests=3)
    with FakeGemini(seed=8) as server:
        report, raw, _ = run(tmp_path, "gemini", server, 200, tuning=budget, logs=logs)
        assert len(server.arrivals) == 3
    assert report.stopped == "budget" and report.attempts == 3
    assert report.rows_total == len(read_lines_strict(raw)) == 30
    assert any("budget" in m for m in logs)


def test_steering_balances_labels_and_categories(tmp_path):
    # The fake writes what the targets ask for; with wrong labels injected the engine must
    # still end balanced, by asking for the labels that fell behind.
    with FakeGemini(Faults(p_wrong_label=0.2), seed=9) as server:
        report, raw, _ = run(tmp_path, "gemini", server, 120)
        hints = {r["hint"] for r in read_lines_strict(raw)}
    assert report.label_counts == {"Question": 60, "Statement": 60}
    cats = __import__("collections").Counter(
        (r["label"], r["category"]) for r in read_lines_strict(raw))
    assert cats[("Question", "wh_question")] == cats[("Question", "yes_no")] == 30
    assert {cats[("Statement", c)] for c in ("command", "record", "fact")} == {20}
    assert len(hints) > 3  # requests carried different diversity hints


def test_repeated_failures_stop_the_run_with_a_clear_error(tmp_path):
    with FakeGemini(Faults(p_500=1.0), seed=1) as server, \
            pytest.raises(GenerationError, match="in a row failed"):
        run(tmp_path, "gemini", server, 30, max_retries=1, concurrency=2)
    assert not (tmp_path / "raw" / "is_question.jsonl").exists() or \
        read_lines_strict(tmp_path / "raw" / "is_question.jsonl") == []


def test_unknown_provider_is_rejected(tmp_path):
    bp = load_blueprint(write_tiny_blueprint(tmp_path / "bp"))
    with pytest.raises(ValueError, match="unknown LLM provider 'claude'"):
        generate_llm(bp, bp.task("is_question"), provider="claude",
                     store=RawStore(tmp_path / "r.jsonl"), quarantine_path=tmp_path / "q",
                     target=10, env={})


# -- steering (foundry/generate/steering.py) -------------------------------------------


def _steering(tmp_path, target=100, existing=(), template="{n}|{hint}|{labels}|{targets}"):
    from foundry.generate.steering import Steering

    bp = load_blueprint(write_tiny_blueprint(tmp_path / "bp"))
    task = bp.task("is_question")
    return Steering(task, template, bp.spec.generation.diversity, target, seed=42,
                    existing=existing)


def test_steering_asks_for_the_label_and_categories_furthest_behind(tmp_path):
    existing = [{"label": "Question", "category": "wh_question"}] * 40 + \
        [{"label": "Statement", "category": "command"}] * 10
    st = _steering(tmp_path, existing=existing)
    plan = st.plan(0, "b0", 10)
    asked = {(lab, cat): k for lab, cat, k in plan.targets}
    # Statement is 40 behind, Question 10: all 10 go to Statement, to its emptiest categories.
    assert sum(k for (lab, _), k in asked.items() if lab == "Statement") == 10
    assert asked.get(("Statement", "command"), 0) == 0
    # Pending rows count: the next plan does not ask for the same rows again.
    nxt = st.plan(1, "b1", 30)
    per_label = {lab: sum(k for la, _, k in nxt.targets if la == lab)
                 for lab in ("Question", "Statement")}
    # Deficits 10 vs 30: the first 20 rows level them, the last 10 are shared.
    assert per_label == {"Question": 5, "Statement": 25}
    st.settle(plan, [{"label": "Statement", "category": "record"}] * 10)
    assert st.label_count["Statement"] == 20 and st.label_pending["Statement"] == 25


def test_prompt_fills_placeholders_with_str_replace_and_keeps_json_braces(tmp_path):
    template = 'n={n} hint={hint}\n{labels}\n{targets}\n[{"text": "...", "label": "..."}]'
    plan = _steering(tmp_path, template=template).plan(3, "b3", 4)
    assert plan.prompt.startswith("n=4 hint=话题：")
    assert '[{"text": "...", "label": "..."}]' in plan.prompt
    assert "- Question: 用户在寻求信息 (categories: wh_question, yes_no)" in plan.prompt
    assert "× label=" in plan.prompt and "{" + "targets}" not in plan.prompt
    assert len(plan.prompt_sha256) == 64


def test_prompt_without_targets_placeholder_gets_targets_appended(tmp_path):
    plan = _steering(tmp_path, template="写 {n} 条。").plan(0, "b0", 6)
    assert plan.prompt.startswith("写 6 条。") and "× label=" in plan.prompt


def test_hints_are_deterministic_per_request_number(tmp_path):
    a = _steering(tmp_path)
    b = _steering(tmp_path)
    assert [a.plan(i, f"b{i}", 5).hint for i in range(6)] == \
        [b.plan(i, f"b{i}", 5).hint for i in range(6)]
    assert len({a.plan(i, f"b{i}", 5).hint for i in range(20)}) > 5


def test_split_evenly():
    from foundry.generate.sufficiency import split_evenly

    assert split_evenly(10, ["a", "b", "c"]) == {"a": 4, "b": 3, "c": 3}
    assert sum(split_evenly(7, list(range(5))).values()) == 7


def test_works_when_called_inside_a_running_event_loop(tmp_path):
    # Jupyter runs cells inside an event loop; asyncio.run() would refuse to start there.
    import asyncio

    async def cell():
        with FakeGemini(seed=12) as server:
            return run(tmp_path, "gemini", server, 20)[0]

    assert asyncio.run(cell()).rows_total == 20


def test_render_prompt_drops_the_leading_author_comment():
    from foundry.generate.steering import render_prompt

    text = render_prompt("<!-- notes for authors: n, hint -->\n请写 {n} 条。{targets}", n=3,
                         hint="h", labels="L", targets="T")
    assert text == "请写 3 条。T"


class RepeatingOpenAI(FakeOpenAI):
    """A model with favourite sentences: each row is drawn from a small pool per label."""

    def __init__(self, pool: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pool = pool

    def text_for(self, response_id: str, i: int, label: str, category: str | None) -> str:
        with self.lock:
            n = self.rng.randrange(self.pool)
        return f"{label} 句子 {n}" + ("" if n % 2 else "！")


def test_repeats_of_stored_texts_are_quarantined_and_steered_away(tmp_path):
    from foundry.generate.engine import duplicate_rate_by_round, requests_log_path
    from foundry.textspec import normalize

    with RepeatingOpenAI(pool=40, seed=3) as server:
        report, raw, quarantine = run(tmp_path, "openai", server, 50, samples_per_request=10,
                                      concurrency=2)
        prompts = [server.prompt_of(r) for r in server.requests_seen]
    rows = read_lines_strict(raw)
    assert len(rows) == 50 and report.stopped == "target"
    keys = [normalize(r["text"]) for r in rows]
    assert len(set(keys)) == len(keys), "a duplicate of a stored text was stored"
    duplicates = [q for q in read_lines_strict(quarantine) if q["reason"] == "duplicate"]
    assert report.duplicates == len(duplicates) > 0
    assert all(normalize(q["item"]["text"]) in set(keys) for q in duplicates)
    # Later prompts list texts to avoid, JSON-quoted, the repeated ones first.
    assert "do not repeat them" not in prompts[0]
    assert any("do not repeat them" in p and '- "Question 句子' in p for p in prompts[2:])
    table = duplicate_rate_by_round(requests_log_path(raw), round_size=2)
    assert table["duplicates"].sum() == report.duplicates
    assert table["returned"].sum() >= 50 + report.duplicates
    assert list(table["round"]) == sorted(table["round"])
    assert ((table["duplicate_rate"] >= 0) & (table["duplicate_rate"] <= 1)).all()


def test_a_model_that_only_repeats_itself_stops_as_exhausted(tmp_path):
    logs: list[str] = []
    tuning = Tuning(backoff_base_s=0.05, backoff_max_s=0.3, progress=False, max_barren_in_a_row=4)
    with RepeatingOpenAI(pool=3, seed=1) as server:
        report, raw, _ = run(tmp_path, "openai", server, 200, tuning=tuning, logs=logs,
                             samples_per_request=10, concurrency=1)
    assert report.stopped == "exhausted"
    assert len(read_lines_strict(raw)) <= 6 < 200
    assert any("added no new row" in m for m in logs)
