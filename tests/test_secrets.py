"""API keys never leak: not in files, logs, reports, exceptions or executed notebooks.

Unit tests of :mod:`foundry.secrets`, an in-process generation run whose every output is
searched for the keys, and the end-to-end check through ``foundry forge --steps generate``.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import FakeGemini, Faults
from fakes.tiny_blueprint import write_tiny_blueprint

from foundry.blueprint import load_blueprint
from foundry.generate.engine import AllKeysDisabledError, Tuning, generate_llm
from foundry.generate.rawstore import RawStore
from foundry.secrets import (
    NO_KEY_PLACEHOLDER,
    ApiKey,
    fingerprint,
    gemini_keys,
    load_env,
    openai_keys,
    redact,
    split_keys,
)

ROOT = Path(__file__).resolve().parent.parent
# Distinctive strings shaped like real Gemini keys: any occurrence anywhere is a leak. Built at
# run time so that the repository itself holds nothing a secret scanner would flag.
_PREFIX = "AI" + "za"
SECRET_KEYS = [f"{_PREFIX}SyLEAKTEST-secret-key-number-one-0001",
               f"{_PREFIX}SyLEAKTEST-secret-key-number-two-0002",
               f"{_PREFIX}SyLEAKTEST-secret-key-revoked-0003"]


def files_containing(root: Path, needles: list[str]) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            hits += [f"{p}: {n[:12]}..." for n in needles if n.encode() in data]
    return hits


# -- foundry.secrets -------------------------------------------------------------------


def test_api_key_prints_as_fingerprint_only():
    key = ApiKey("sk-very-secret")
    assert key.fingerprint == fingerprint("sk-very-secret")
    assert key.fingerprint.startswith("key:") and len(key.fingerprint) == 12
    for shown in (repr(key), str(key), f"{key}", repr([key]), repr({"k": key})):
        assert "sk-very-secret" not in shown and key.fingerprint in shown
    assert key.reveal() == "sk-very-secret"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)


def test_fingerprints_are_stable_and_distinct():
    assert fingerprint("a") == fingerprint("a") != fingerprint("b")
    assert fingerprint("") == "key:none"


def test_split_keys_strips_drops_empties_and_duplicates():
    assert split_keys(" k1, k2,,k1 ,\tk3 ") == ["k1", "k2", "k3"]
    assert split_keys(None) == [] and split_keys("") == []


def test_gemini_and_openai_keys_from_env():
    assert [k.reveal() for k in gemini_keys({"GEMINI_API_KEYS": "a,b"})] == ["a", "b"]
    assert [k.reveal() for k in gemini_keys({"GEMINI_API_KEY": "solo"})] == ["solo"]
    assert gemini_keys({}) == []
    assert [k.reveal() for k in openai_keys({"OPENAI_API_KEY": ""})] == [NO_KEY_PLACEHOLDER]
    assert [k.reveal() for k in openai_keys({"OPENAI_API_KEY": "sk-1"})] == ["sk-1"]


def test_load_env_reads_dotenv_without_touching_os_environ(tmp_path, monkeypatch):
    dotenv = tmp_path / ".env"
    dotenv.write_text("GEMINI_API_KEYS=from-file-1,from-file-2\nOPENAI_BASE_URL=http://x/v1\n")
    monkeypatch.delenv("GEMINI_API_KEYS", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://shell/v1")
    env = load_env(dotenv_path=dotenv)
    assert env["GEMINI_API_KEYS"] == "from-file-1,from-file-2"
    assert env["OPENAI_BASE_URL"] == "http://shell/v1"  # the shell wins over the file
    assert "GEMINI_API_KEYS" not in os.environ  # nothing copied into the process environment
    assert load_env({"ONLY": "this"}) == {"ONLY": "this"}
    assert load_env(dotenv_path=tmp_path / "missing.env")["OPENAI_BASE_URL"] == "http://shell/v1"


def test_redact_replaces_keys_by_fingerprints():
    keys = [ApiKey("sk-abc123"), ApiKey(NO_KEY_PLACEHOLDER)]
    text = redact("error for key sk-abc123: no-key is fine", keys)
    assert "sk-abc123" not in text and fingerprint("sk-abc123") in text
    assert "no-key is fine" in text


# -- a generation run ------------------------------------------------------------------


def test_generation_run_writes_and_logs_no_key(tmp_path):
    logs: list[str] = []
    bp = load_blueprint(write_tiny_blueprint(tmp_path / "bp"))
    out = tmp_path / "out"
    faults = Faults(revoked={SECRET_KEYS[2]}, p_429=0.2, p_500=0.1, p_wrong_label=0.1,
                    p_malformed=0.1)
    with FakeGemini(faults, seed=5) as server:
        env = {"GEMINI_API_KEYS": ",".join(SECRET_KEYS), "GEMINI_BASE_URL": server.base_url}
        report = generate_llm(bp, bp.task("is_question"), provider="gemini",
                              store=RawStore(out / "raw.jsonl"),
                              quarantine_path=out / "quarantine.jsonl", target=60,
                              log=logs.append, env=env,
                              tuning=Tuning(backoff_base_s=0.05, backoff_max_s=0.2,
                                            progress=False))
        assert {k for _, k in server.arrivals} == set(SECRET_KEYS)  # the keys were used
    text = "\n".join(logs) + report.summary() + repr(report) + \
        json.dumps(report.to_dict(), default=str)
    assert not [k for k in SECRET_KEYS if k in text]
    assert not files_containing(out, SECRET_KEYS)
    assert fingerprint(SECRET_KEYS[2]) in report.summary()


def test_all_keys_disabled_error_has_no_key(tmp_path):
    bp = load_blueprint(write_tiny_blueprint(tmp_path / "bp"))
    with FakeGemini(Faults(revoked=set(SECRET_KEYS))) as server, \
            pytest.raises(AllKeysDisabledError) as info:
        generate_llm(bp, bp.task("is_question"), provider="gemini",
                     store=RawStore(tmp_path / "raw.jsonl"), quarantine_path=tmp_path / "q",
                     target=20, log=lambda _m: None,
                     env={"GEMINI_API_KEYS": ",".join(SECRET_KEYS),
                          "GEMINI_BASE_URL": server.base_url},
                     tuning=Tuning(progress=False))
    shown = str(info.value) + repr(info.value) + info.value.report.summary()
    assert not [k for k in SECRET_KEYS if k in shown]


# -- through `foundry forge` -----------------------------------------------------------


@pytest.mark.slow
def test_forge_generate_with_fake_keys_leaks_no_key(tmp_path):
    bp_dir = write_tiny_blueprint(tmp_path / "leaktest_bp", target_per_task=20)
    runs, models = tmp_path / "runs", tmp_path / "models"
    faults = Faults(revoked={SECRET_KEYS[2]}, p_429=0.2, p_wrong_label=0.1)
    with FakeGemini(faults, seed=9) as server:
        env = {**os.environ, "GEMINI_API_KEYS": ",".join(SECRET_KEYS),
               "GEMINI_BASE_URL": server.base_url, "FOUNDRY_RUNS_DIR": str(runs),
               "FOUNDRY_MODELS_DIR": str(models)}
        proc = subprocess.run(
            [sys.executable, "-m", "foundry", "forge", str(bp_dir), "--steps", "generate",
             "--provider", "gemini", "--run-id", "secret-test"],
            env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=300)
        used = {k for _, k in server.arrivals}
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert used == set(SECRET_KEYS), "the forge run did not generate through the fake server"
    logs = proc.stdout + proc.stderr
    assert not [k for k in SECRET_KEYS if k in logs]
    executed = list(runs.rglob("*.ipynb"))
    assert executed, "no executed notebook under runs/"
    assert not files_containing(runs, SECRET_KEYS)
    if models.exists():
        assert not files_containing(models, SECRET_KEYS)
    raw = list(runs.rglob("is_question.jsonl"))
    assert raw and sum(1 for _ in raw[0].open(encoding="utf-8")) == 20
    # The executed notebook shows fingerprints where it mentions keys.
    notebook_text = "".join(p.read_text(encoding="utf-8") for p in executed)
    assert fingerprint(SECRET_KEYS[0]) in notebook_text
