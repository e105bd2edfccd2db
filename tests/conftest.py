"""Shared fixtures: a tiny trained model and its exported artifacts, built in seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

#: The forged default models (``make forge``); FOUNDRY_FORGED_MODELS_DIR points elsewhere.
FORGED_DIR = Path(os.environ.get("FOUNDRY_FORGED_MODELS_DIR",
                                 Path(__file__).resolve().parents[1] / "models"))
FORGED_TASKS = ("is_question", "confirmation")


#: Rows per task of the shared end-to-end forge (:func:`e2e_forge`): small, so it is quick.
E2E_TARGET = 300


def forge_cli(blueprint: str | Path, runs: Path, models: Path, run_id: str, *extra: str
              ) -> subprocess.CompletedProcess:
    """``python -m foundry forge BLUEPRINT --run-id RUN_ID --models-dir MODELS *EXTRA`` with
    its runs under ``runs``, offline whatever keys the environment holds."""
    env = {**os.environ, "FOUNDRY_RUNS_DIR": str(runs)}
    env.pop("GEMINI_API_KEYS", None)
    env.pop("OPENAI_BASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "foundry", "forge", str(blueprint), "--run-id", run_id,
         "--models-dir", str(models), *extra],
        env=env, capture_output=True, text=True, timeout=900)


def forge_default(base: Path, run_id: str) -> tuple[Path, Path]:
    """Forge the default blueprint from scratch under ``base`` at :data:`E2E_TARGET` rows per
    task (exam failures allowed: a tiny forge may miss the exam); returns (run folder, models
    dir)."""
    runs, models = base / "runs", base / "models"
    proc = forge_cli("text_classification", runs, models, run_id, "--target", str(E2E_TARGET),
                     "--allow-exam-failures")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return runs / "text_classification" / run_id, models


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests (forges, browsers, servers) first, each group in its file order: the
    pytest-xdist workers of ``make test`` then share out the many quick files at the end
    instead of one worker finishing a long forge alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def shared_tmp_root(tmp_path_factory) -> Path:
    """The temporary folder every pytest-xdist worker of this session shares (the session's
    own base folder when the tests run in one process)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def e2e_forge(tmp_path_factory) -> tuple[Path, Path]:
    """The default blueprint forged end to end once per session (run ``e2e``): (run folder,
    models dir). ``tests/test_e2e.py`` checks it; ``tests/test_trainer_mlp.py`` trains its
    second kind of trainer on the data this run generated and refined. Tests may add runs
    beside it; none changes its folder or its models.

    Once per session, not per worker: ``make test`` runs the suite on two pytest-xdist
    workers, and the first to need the forge makes it under a lock while the other waits.
    """
    from foundry.locks import exclusive_lock

    root = shared_tmp_root(tmp_path_factory)
    base, done = root / "e2e", root / "e2e.done"
    with exclusive_lock(root / "e2e.lock", doing="forging the shared end-to-end run"):
        if not done.exists():
            shutil.rmtree(base, ignore_errors=True)  # a forge that failed in another worker
            base.mkdir()
            result = forge_default(base, "e2e")
            done.touch()
            return result
    return base / "runs" / "text_classification" / "e2e", base / "models"


def forged_models_or_skip() -> Path:
    """The forged default models; skip if absent, unless FOUNDRY_REQUIRE_FORGED=1 (make test)."""
    missing = [t for t in FORGED_TASKS if not (FORGED_DIR / f"{t}_conformance.json").is_file()]
    if missing:
        message = f"forged default models {missing} not in {FORGED_DIR} (run `make forge`)"
        if os.environ.get("FOUNDRY_REQUIRE_FORGED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return FORGED_DIR


QUESTIONS = [
    "今天天气怎么样？", "明天会下雨吗", "你叫什么名字", "北京有多远？", "这个怎么用",
    "为什么天是蓝的", "几点了？", "你吃饭了吗？", "咖啡还是茶好", "给我讲讲黑洞",
    "what time is it?", "附近有好吃的吗", "现在几度", "怎么去机场？", "谁发明了电话",
]
STATEMENTS = [
    "帮我记一下明天开会", "打开客厅的灯", "好的", "收到", "我今天很累",
    "播放周杰伦的歌", "设个七点的闹钟", "帮我查一下航班", "我觉得这部电影一般", "谢谢",
    "turn on the lights", "明天我要出差", "提醒我交报告", "关掉空调", "嗯嗯知道了",
]


def fit_tiny(spec=None, C: float = 4.0):
    """A fitted TrainedModel-like object following the train stage's contract."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from foundry.textspec import Analyzer, TextSpec

    spec = spec or TextSpec()
    texts = QUESTIONS + STATEMENTS
    y = np.array([0] * len(QUESTIONS) + [1] * len(STATEMENTS))
    pipeline = Pipeline(
        [
            ("tfidf", TfidfVectorizer(analyzer=Analyzer(spec), lowercase=False, sublinear_tf=True,
                                      norm="l2", dtype=np.float64)),
            ("clf", LogisticRegression(C=C, max_iter=1000)),
        ]
    ).fit(texts, y)
    return SimpleNamespace(
        pipeline=pipeline, labels=["Question", "Statement"], spec=spec, sublinear_tf=True,
        trainer="tfidf_logreg", data_sha256="0" * 64, train_rows=len(texts), task="tiny_q",
    )


def fit_int8(texts: list[str], y, labels: list[str], task: str, temperature: float, spec=None):
    """A fitted int8 SVM (the intent benchmarks' trainer) on ``texts``, as the train stage
    hands it to the export (``labels[y[i]]`` is the label of ``texts[i]``); ``spec``: the
    text spec (default :class:`TextSpec()`)."""
    from types import SimpleNamespace

    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import Pipeline

    from foundry.quantized import QuantizedLinearSVC
    from foundry.textspec import Analyzer, TextSpec

    spec = spec or TextSpec()
    pipe = Pipeline([("tfidf", TfidfVectorizer(analyzer=Analyzer(spec), lowercase=False,
                                               sublinear_tf=True, dtype=np.float64)),
                     ("clf", QuantizedLinearSVC(C=1.0, random_state=0,
                                                temperature=temperature))])
    pipe.fit(texts, y)
    return SimpleNamespace(pipeline=pipe, labels=labels, spec=spec, sublinear_tf=True,
                           trainer="tfidf_svm_int8", data_sha256="0" * 64,
                           train_rows=len(texts), task=task)


def install_model(trained, models_dir: Path, task: str, threshold: float = 0.6, *,
                  provenance=None, texts: list[str] | None = None, familiarity=None,
                  reflex=None, out_of_scope: str = "") -> None:
    """Export ``trained`` into ``models_dir`` exactly as the export stage does (same files);
    ``familiarity`` is the unfamiliarity gate (default: never shut), ``reflex`` the compiled
    reflex rules (default: none)."""
    from foundry.export import conformance_texts, install_artifacts, model_files
    from foundry.familiarity import NO_GATE

    if texts is None:
        texts = conformance_texts(QUESTIONS + STATEMENTS, [], reflex=reflex)
    install_artifacts(task, model_files(trained, task=task, threshold=threshold, texts=texts,
                                        card=f"# {task} (test model)\n", provenance=provenance,
                                        familiarity=familiarity or NO_GATE, reflex=reflex,
                                        out_of_scope=out_of_scope),
                      models_dir)


#: Reflex rules of the ruled tiny models (blueprint form): every kind of word list.
TINY_RULES = [
    {"name": "delete", "label": "Statement", "contains": ["删除", "delete", "清空"],
     "unless_contains": ["不要", "don't"]},
    {"name": "polite-ask", "label": "Question", "starts_with": ["请问"], "also_contains": ["吗"]},
    {"name": "ack", "label": "Statement", "equals": ["ok", "好的", "收到"]},
    {"label": "Question", "ends_with": ["？", "吧?"], "contains": ["到底"]},
]
#: Texts the ruled tiny models answer by a rule (name) or by the model (None).
TINY_RULE_TEXTS = {
    "删除所有提醒": "delete", "DELETE my notes": "delete", "不要删除它": None,
    "请问明天下雨吗": "polite-ask", "请问明天下雨": None, "OK": "ack", " 好的 ": "ack",
    "好的吧": None, "你到底在干什么？": "rule4", "到底吧?": "rule4", "到底": None,
}


def tiny_reflex(labels=("Question", "Statement"), spec=None):
    """:data:`TINY_RULES` compiled for ``labels`` and ``spec``."""
    from foundry.blueprint import Rule
    from foundry.reflex import compile_rules
    from foundry.textspec import TextSpec

    return compile_rules([Rule(**r) for r in TINY_RULES], list(labels), spec or TextSpec())


@pytest.fixture(scope="session")
def ruled_models(tmp_path_factory) -> tuple[Path, list[str]]:
    """A models dir of tiny models with reflex rules (format 5, field 15): ``ruled`` (binary) and
    ``ruled_oos`` (the same with an out-of-scope label and a threshold that often shuts);
    returns the dir and its task names."""
    from foundry.export import conformance_texts

    models_dir = tmp_path_factory.mktemp("ruled-models")
    reflex = tiny_reflex()
    texts = conformance_texts(QUESTIONS + STATEMENTS, list(TINY_RULE_TEXTS), reflex=reflex)
    install_model(fit_tiny(), models_dir, "ruled", 0.55, reflex=reflex, texts=texts)
    install_model(fit_tiny(), models_dir, "ruled_oos", 0.8, reflex=reflex, texts=texts,
                  out_of_scope="Statement")
    return models_dir, ["ruled", "ruled_oos"]


def write_tiny_models(models_dir: Path, task: str = "tiny_q", threshold: float = 0.6,
                      extra_texts: list[str] | None = None):
    from foundry.export import conformance_texts

    trained = fit_tiny()
    install_model(trained, models_dir, task, threshold,
                  texts=conformance_texts(QUESTIONS + STATEMENTS, extra_texts or []))
    return trained


#: Texts a tight unfamiliarity gate shuts on the tiny models: little of them is in training.
UNFAMILIAR_TEXTS = ["请拨打13800138000找王先生", "qwerty zxcv asdf", "明天下午三点半在人民广场集合吧？",
                    "天气预报说周末有雨，记得带伞哦", "why not", "Привет, как дела?", "嗯嗯好的吗",
                    "吗", "", " ", "好吗好吗好吗"]


@pytest.fixture(scope="session")
def gated_models(tmp_path_factory) -> tuple[Path, list[str]]:
    """A models dir of tiny models exported with unfamiliarity gates that do shut (different
    ``min_order``, padding and n-gram ranges), for holding every runtime to the same answers;
    returns the dir and its task names."""
    from foundry.export import conformance_texts
    from foundry.familiarity import Familiarity
    from foundry.textspec import TextSpec

    models_dir = tmp_path_factory.mktemp("gated-models")
    variants = {"gated_2": (TextSpec(), Familiarity(2, 0.5)),
                "gated_1_unpadded": (TextSpec(word_boundary_padding=False), Familiarity(1, 0.4)),
                "gated_3": (TextSpec(min_n=1, max_n=3), Familiarity(3, 0.6)),
                # word n-grams (step 6b, format 6): they never count towards unfamiliarity
                "gated_words": (TextSpec(word_max_n=2), Familiarity(2, 0.5)),
                # head n-grams (step 6c, format 7): they never count either
                "gated_head": (TextSpec(head_chars=3), Familiarity(2, 0.5))}
    for task, (spec, gate) in variants.items():
        install_model(fit_tiny(spec), models_dir, task, 0.55, familiarity=gate,
                      texts=conformance_texts(QUESTIONS + STATEMENTS, UNFAMILIAR_TEXTS))
    return models_dir, list(variants)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> tuple[Path, object]:
    """A models dir holding the artifacts of a tiny is-it-a-question model (task ``tiny_q``)."""
    models_dir = tmp_path_factory.mktemp("models")
    trained = write_tiny_models(models_dir)
    return models_dir, trained


@pytest.fixture(scope="session")
def two_task_models(tmp_path_factory) -> Path:
    """A models dir with two exported tiny tasks, ``tiny_q`` (threshold 0.6) and ``tiny_r``
    (0.7): the runtimes' tests pair a ``.bin`` with the other task's ``.onnx``."""
    models_dir = tmp_path_factory.mktemp("two-task-models")
    write_tiny_models(models_dir, task="tiny_q", threshold=0.6)
    write_tiny_models(models_dir, task="tiny_r", threshold=0.7)
    return models_dir


@pytest.fixture(scope="session")
def tiny_fit():
    """The :func:`fit_tiny` factory, for tests that need fresh fitted models."""
    return fit_tiny
