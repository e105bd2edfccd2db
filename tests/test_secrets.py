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
@pytest.mark.parametrize("provider", ["gemini", "openai"])
def test_full_forges_against_echoing_servers_leak_nothing(tmp_path, provider):
    """Must-show of issue 15: forges (all five stages) against servers that echo the key, the
    request URL (with its query) and the Authorization header in every error, with
    credentials in the base URL; no key or URL secret anywhere under runs/, data/ (the raw
    rows and the requests log) or models/ or in the console."""
    from fakes import FakeOpenAI

    bp_dir = write_tiny_blueprint(tmp_path / "echo_bp", name="echo_bp", target_per_task=80,
                                  sections={"evaluate": {"exam_min_accuracy": 0.0},
                                            "train": {"grid": {"C": [4.0]}, "cv_folds": 3}})
    runs, models = tmp_path / "runs", tmp_path / "models"
    password, query_secret = "URLPASS-echo-77", "QUERYSECRET-echo-88"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "OPENAI_"))}
    env.update(FOUNDRY_RUNS_DIR=str(runs), FOUNDRY_MODELS_DIR=str(models))
    if provider == "gemini":
        server = FakeGemini(Faults(revoked={SECRET_KEYS[2]}, p_429=0.1, p_500=0.15), seed=9,
                            echo_secrets=True)
        needles = [*SECRET_KEYS, password]
    else:
        server = FakeOpenAI(Faults(p_500=0.15), seed=9, json_schema_supported=False,
                            echo_secrets=True)
        needles = [SECRET_KEYS[0], password, query_secret]
    with server:
        url = server.base_url.replace("http://", f"http://alice:{password}@")
        if provider == "gemini":
            env.update(GEMINI_API_KEYS=",".join(SECRET_KEYS), GEMINI_BASE_URL=url)
        else:
            env.update(OPENAI_API_KEY=SECRET_KEYS[0],
                       OPENAI_BASE_URL=f"{url}?api_key={query_secret}")
        proc = subprocess.run(
            [sys.executable, "-m", "foundry", "forge", str(bp_dir), "--provider", provider,
             "--run-id", "echo"], env=env, cwd=str(ROOT), capture_output=True, text=True,
            timeout=900)
        errors_sent = [status for _, _, status in server.calls if status >= 400]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert errors_sent, "the server never had to answer an error (nothing was echoed)"
    console = proc.stdout + proc.stderr
    assert not [n for n in needles if n in console]
    assert list(runs.rglob("*.ipynb")) and list(runs.rglob("*.html"))
    assert not files_containing(runs, needles)
    data = tmp_path / "data"  # beside runs/: the raw rows, quarantine and requests log
    assert list(data.rglob("*.requests.jsonl")) and list(data.rglob("is_question.jsonl"))
    assert not files_containing(data, needles)
    assert (models / "is_question_preprocessor.bin").is_file()
    assert not files_containing(models, needles)
    generate = (runs / "echo_bp" / "echo" / "notebooks" / "01_generate.ipynb").read_text("utf-8")
    assert fingerprint(SECRET_KEYS[0]) in generate  # keys appear, as fingerprints


# -- one redaction function ------------------------------------------------------------


def test_redact_strips_url_credentials_query_secrets_and_auth_headers():
    text = ("GET http://alice:s3cret-pw@127.0.0.1:8080/v1/chat?api_key=QSECRET&x=1&token=TOK123 "
            "Authorization: Bearer abcdefghijkl; Basic YWxpY2U6czNjcmV0 key=KEYVALUE1")
    out = redact(text)
    for secret in ("alice", "s3cret-pw", "QSECRET", "TOK123", "abcdefghijkl",
                   "YWxpY2U6czNjcmV0", "KEYVALUE1"):
        assert secret not in out, (secret, out)
    assert "http://***@127.0.0.1:8080/v1/chat?api_key=***&x=1&token=***" in out
    assert "Bearer ***" in out and "Basic ***" in out


def test_redact_knows_the_configured_keys_and_url_credentials(monkeypatch):
    key = SECRET_KEYS[0]
    monkeypatch.setenv("GEMINI_API_KEYS", key)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://bob:hunter2-pw@host:1/v1?api_key=Q-VALUE-7")
    # Each secret on its own, out of any URL, as a server might echo it.
    out = redact(f"echo: {key} / hunter2-pw / Q-VALUE-7 / key-shaped sk-{'x' * 24}")
    assert key not in out and fingerprint(key) in out
    assert "hunter2-pw" not in out and "Q-VALUE-7" not in out and "sk-xxxx" not in out


def test_echoing_server_leaks_nothing_through_generation(tmp_path):
    """Issue 15: a server echoing the key in a 400 body put it into the notebook (the
    "refused response_format" notice was not redacted); URL credentials were logged."""
    from fakes import FakeOpenAI

    key = "sk-" + "ECHOTESTKEY" * 3
    logs: list[str] = []
    bp = load_blueprint(write_tiny_blueprint(tmp_path / "bp"))
    with FakeOpenAI(Faults(p_500=0.3), seed=4, json_schema_supported=False,
                    echo_secrets=True) as server:
        url = server.base_url.replace("http://", "http://alice:URLPASS-123@") \
            + "?api_key=QUERYSECRET-9"
        env = {"OPENAI_API_KEY": key, "OPENAI_BASE_URL": url}
        with RawStore(tmp_path / "out" / "raw.jsonl", log=None) as store:
            report = generate_llm(bp, bp.task("is_question"), provider="openai", store=store,
                                  quarantine_path=tmp_path / "out" / "q.jsonl", target=40,
                                  log=logs.append, env=env,
                                  tuning=Tuning(backoff_base_s=0.05, backoff_max_s=0.1,
                                                progress=False))
    assert report.rows_total == 40
    assert any("refused response_format" in line for line in logs)  # the echo was logged...
    needles = [key, "URLPASS-123", "QUERYSECRET-9", "alice"]
    text = "\n".join(logs) + report.summary() + json.dumps(report.to_dict(), default=str)
    assert not [n for n in needles if n in text]  # ...redacted
    assert not files_containing(tmp_path / "out", needles)


@pytest.mark.slow
def test_notebook_output_and_tracebacks_are_redacted(tmp_path, monkeypatch):
    """What a stage notebook prints, and the error of a failing cell (which papermill copies
    into the forge's message and run.json), pass through the redaction."""
    import nbformat
    import papermill as pm

    key = SECRET_KEYS[1]
    monkeypatch.setenv("GEMINI_API_KEYS", key)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
                    "from foundry.secrets import install_output_redaction\n"
                    "install_output_redaction()"),
                nbformat.v4.new_code_cell("import os\nkey = os.environ['GEMINI_API_KEYS']\n"
                                          "print('the key is', key)"),
                nbformat.v4.new_code_cell("raise RuntimeError(f'server said: {key}')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    source, executed = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, source)
    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(str(source), str(executed), kernel_name="python3",
                            progress_bar=False, cwd=str(ROOT))
    assert key not in str(info.value) and fingerprint(key) in info.value.evalue
    text = executed.read_text(encoding="utf-8")
    assert key not in text
    assert f"the key is {fingerprint(key)}" in text
