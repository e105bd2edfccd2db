"""docs/your-first-blueprint.md, executed: every ```bash block of the guide, in order, as written.

The blocks run with bash in a fresh project folder (the notebooks and the default blueprint
copied, ``.venv`` linked to this checkout's, ``FOUNDRY_HOME`` pointing at it), exactly as a
reader would type them at the repository root. A block preceded by
``<!-- guide-test: expect-failure TEXT -->`` must fail and print TEXT. The guide's LLM section
talks to an OpenAI-compatible server at 127.0.0.1:11434 (Ollama's address); here a fake server
on a free port answers instead (the one substitution: the port), writing sentences of the
blueprint's own grammar, as a capable model following the constitution would.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fakes import FakeOpenAI

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "your-first-blueprint.md"
BLOCK = re.compile(r"(?:<!-- guide-test: (?P<mark>[^\n]*?) -->\n)?```bash\n(?P<code>.*?)```",
                   re.DOTALL)
OLLAMA = "127.0.0.1:11434"


def guide_blocks() -> list[tuple[str, str]]:
    """``(mark, code)`` of every bash block of the guide, in order."""
    return [(m.group("mark") or "", m.group("code"))
            for m in BLOCK.finditer(GUIDE.read_text(encoding="utf-8"))]


class GrammarSpeakingLLM(FakeOpenAI):
    """Answers each requested row with a sentence of the blueprint's grammar for that label and
    sub-category (read when the first request arrives, so it is the guide's edited grammar)."""

    def __init__(self, blueprint_dir: Path, **kwargs) -> None:
        super().__init__(**kwargs)
        self.blueprint_dir = blueprint_dir
        self.grammar = None
        self.sampler = random.Random(7)

    def text_for(self, response_id: str, i: int, label: str, category: str | None) -> str:
        from foundry.blueprint import load_blueprint
        from foundry.generate.grammar import load_grammar

        with self.lock:
            if self.grammar is None:
                bp = load_blueprint(self.blueprint_dir)
                task = bp.tasks[0]
                self.grammar = load_grammar(bp.path(task.grammar), task)
            templates = [t for t in self.grammar.templates
                         if t.label == label and (category in (None, t.category))]
            template = self.sampler.choice(templates)
            return " ".join(self.grammar.sample_template(template, self.sampler).split())


def fresh_project(root: Path) -> Path:
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    shutil.copytree(REPO / "blueprints" / "text_classification",
                    root / "blueprints" / "text_classification",
                    ignore=shutil.ignore_patterns("corrections"))
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


def test_the_guides_commands_work_as_written(tmp_path):
    project = fresh_project(tmp_path / "clone")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FOUNDRY_", "GEMINI_", "OPENAI_"))}
    env.update(FOUNDRY_HOME=str(project), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    blocks = guide_blocks()
    assert len(blocks) >= 8, "the guide lost its commands"
    with GrammarSpeakingLLM(project / "blueprints" / "demo", seed=1) as llm:
        for mark, code in blocks:
            code = code.replace(OLLAMA, f"127.0.0.1:{llm.port}")
            proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=project,
                                  env=env, capture_output=True, text=True, timeout=900)
            output = proc.stdout + proc.stderr
            if mark.startswith("expect-failure"):
                expected = mark.removeprefix("expect-failure").strip()
                assert proc.returncode != 0, f"should have failed:\n{code}\n{output}"
                assert expected in output, f"{expected!r} not in:\n{output}"
            else:
                assert proc.returncode == 0, f"failed:\n{code}\n{output}"
        llm_rows = sum(len(d.items) for d in llm.delivered.values())
    assert llm_rows >= 300, "the LLM section did not generate through the server"
    models = project / "models"
    assert sorted(p.name for p in models.iterdir()) == sorted(
        f"demo_{s}" for s in ("classifier.onnx", "preprocessor.bin", "conformance.json",
                              "card.md"))
    runs = project / "runs" / "demo"
    assert (runs / "LATEST").read_text().strip() == (runs / "CURRENT").read_text().strip()
    assert not list((project / "notebooks").glob("*/"))  # nothing written under notebooks/
    # The LLM run's 01_generate shows the duplicates per round of requests.
    reports = [p.read_text(encoding="utf-8") for p in runs.glob("*/notebooks/01_generate.ipynb")]
    assert any("demo: duplicate rate per request round" in r for r in reports)
