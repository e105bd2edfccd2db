"""Stage 5: export a trained model as the portable artifact set (docs/preprocessor-spec.md).

Per task, in the models dir:

- ``<task>_classifier.onnx``: the classifier alone (skl2onnx), input ``features`` float32
  ``[N, D]``, outputs ``label`` (int64 class index) and ``probabilities`` float32 ``[N, K]``;
- ``<task>_preprocessor.bin``: a ``foundry.v1.Preprocessor`` protobuf with the text spec
  settings, vocabulary, idf, threshold, the SHA-256 of the ``.onnx`` and provenance;
- ``<task>_conformance.json``: test vectors computed by the scikit-learn pipeline;
- ``<task>_card.md``: the model card.

Exports into one models dir take turns: each holds the folder's exclusive lock
(:mod:`foundry.locks`) for its whole stage, waiting for another one to finish. The four
files of a task are first written to a staging folder of this export alone,
``<models>/.pending/<task>.<pid>-<random>/``, together with a ``COMMITTED`` marker, then
renamed into place, the ``.onnx``/``.bin`` pair first. A crash between renames is rolled
forward by the next export or ``foundry verify`` (:func:`recover_pending`, under the lock, so
it never touches a staging folder that is still being written). A reader that falls between
the two renames sees a mismatched pair and reads both again (runtime rule P1).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from foundry import __version__
from foundry.artifacts import COMMIT_MARKER, PENDING_DIR, format_version_for
from foundry.blueprint import Blueprint, Task
from foundry.conformance_cases import HARD_CASES, rule_cases
from foundry.familiarity import NO_GATE, Familiarity, unfamiliarity
from foundry.jsonl import iter_jsonl
from foundry.locks import exclusive_lock
from foundry.pair import EXAM_OVERRIDDEN, EXAM_PASSED, Provenance, artifact_bytes
from foundry.realtext import load_real
from foundry.reflex import Reflex, task_reflex
from foundry.runs import atomic_write_bytes, require_stage_output
from foundry.stamps import check_fresh
from foundry.summaries import EvalSummary, RefineSummary
from foundry.textspec import is_head_gram, is_word_gram, normalize

#: In the order they are switched into place: the pair first, back to back.
ARTIFACT_SUFFIXES = ("classifier.onnx", "preprocessor.bin", "conformance.json", "card.md")


def models_dir_lock(models_dir: Path, log: Callable[[str], None] | None = print):
    """The exclusive lock of a models dir (on the folder itself): one export (or recovery) at
    a time, the others wait."""
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    return exclusive_lock(Path(models_dir), doing=f"exporting into {Path(models_dir)}", log=log)


def artifact_paths(task: str, models_dir: Path) -> dict[str, Path]:
    """The four artifact paths of ``task``, keyed by suffix."""
    return {s: Path(models_dir) / f"{task}_{s}" for s in ARTIFACT_SUFFIXES}


def conformance_vectors(trained: Any, texts: list[str], threshold: float = 0.5,
                        familiarity: Familiarity = NO_GATE,
                        reflex: Reflex | None = None) -> list[dict]:
    """Reference vectors from the scikit-learn side: what every runtime must reproduce.

    Besides the features and probabilities, each vector holds the text's ``unfamiliar``
    share (counted on scikit-learn's analyzer output against its vocabulary) and the model's
    ``confident`` flag under ``threshold`` and the ``familiarity`` gate; with reflex rules,
    also ``rule``: the name of the first rule matching the text, or None.
    """
    tfidf = trained.pipeline.named_steps["tfidf"]
    features = tfidf.transform(texts).tocsr()
    proba = trained.pipeline.named_steps["clf"].predict_proba(
        features.astype(np.float32).astype(np.float64)
    )
    analyze = tfidf.build_analyzer()
    vectors = []
    for i, text in enumerate(texts):
        row = features.getrow(i)
        order = np.argsort(row.indices)
        unfamiliar = unfamiliarity(analyze(text), tfidf.vocabulary_, familiarity.min_order)
        normalized = normalize(text, trained.spec)
        vectors.append(
            {
                "text": text,
                "normalized": normalized,
                "features": [
                    [int(row.indices[j]), float(row.data[j])] for j in order
                ],
                "probabilities": [float(p) for p in proba[i]],
                "label": trained.labels[int(np.argmax(proba[i]))],
                "unfamiliar": unfamiliar,
                "confident": bool(proba[i].max() >= threshold
                                  and familiarity.admits(unfamiliar)),
            }
        )
        if reflex:
            hit = reflex.first(normalized)
            vectors[-1]["rule"] = None if hit is None else reflex.rules[hit].name
    return vectors


def _spaced(texts: list[str], n: int) -> list[str]:
    step = max(1, len(texts) // n) if texts else 1
    return texts[::step][:n]


def conformance_texts(test_texts: list[str], extra: list[str], real_texts: list[str] = (),
                      n_test: int = 200, n_real: int = 100,
                      reflex: Reflex | None = None) -> list[str]:
    """Hard cases first, then the reflex rules' hits and near misses, then blueprint extras,
    then evenly spaced samples of the test split and of the real-text dev split (longer, with
    digits, names and mixed scripts)."""
    seen: set[str] = set()
    out = []
    for t in [*HARD_CASES, *(rule_cases(reflex) if reflex else ()), *extra,
              *_spaced(test_texts, n_test),
              *_spaced(list(real_texts), n_real)]:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def model_files(
    trained: Any,
    *,
    task: str,
    threshold: float,
    texts: list[str],
    card: str = "",
    opset: int = 15,
    provenance: Provenance | None = None,
    familiarity: Familiarity = NO_GATE,
    out_of_scope: str = "",
    reflex: Reflex | None = None,
) -> dict[str, bytes]:
    """The artifact files of a trained model, as bytes keyed by suffix (see :data:`ARTIFACT_SUFFIXES`).

    ``texts`` become the conformance vectors. Pass the result to :func:`install_artifacts`.
    """
    onnx_bytes, bin_bytes = artifact_bytes(
        trained, threshold, task=task, opset=opset, provenance=provenance,
        familiarity=familiarity,
        out_of_scope=out_of_scope,
        reflex=reflex,
    )
    conformance = {
        "task": task,
        "format_version": format_version_for(reflex.rules if reflex else (),
                                             trained.spec.word_max_n,
                                             trained.spec.head_chars),
        # Binds the vectors to this export: `verify` refuses them against another .bin.
        "preprocessor_sha256": hashlib.sha256(bin_bytes).hexdigest(),
        "labels": list(trained.labels),
        "vectors": conformance_vectors(trained, texts, threshold, familiarity, reflex),
    }
    return {
        "classifier.onnx": onnx_bytes,
        "preprocessor.bin": bin_bytes,
        "conformance.json": (json.dumps(conformance, ensure_ascii=False, indent=1) + "\n").encode(),
        "card.md": card.encode("utf-8"),
    }


def _pct(x: Any) -> str:
    return f"{100 * x:.1f}%" if isinstance(x, (int, float)) else "n/a"


def _num(x: Any, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) else "n/a"


def _exam_gate_line(exam_gate: str, evaluation: EvalSummary) -> str:
    minimum = _pct(evaluation.exam_min_accuracy)
    if exam_gate == EXAM_OVERRIDDEN:
        return (
            f"**Exam gate: OVERRIDDEN.** The exam accuracy "
            f"{_pct(evaluation.exam_accuracy)} is below the blueprint's minimum "
            f"{minimum}; this model was exported only because the forge was given "
            "`--allow-exam-failures`. It did not pass its exam."
        )
    return f"Exam gate: passed (minimum exam accuracy {minimum})."


def _dev_section(e: EvalSummary) -> list[str]:
    """The card's "Real-text dev split" section (nothing when the task has no dev split)."""
    if not e.dev_cases:
        return []
    lines = [
        "## Real-text dev split",
        "",
        f"{e.dev_cases} real, human-written utterances labelled by hand (the blueprint's "
        "`dev` file), never trained on; they chose the calibration"
        + (" and take part in the threshold." if e.dev_in_threshold else
           "; they do not take part in the threshold (`threshold_on_dev: false`), so the "
           "numbers below are out of sample."),
        "",
        "| metric | value |",
        "|---|---:|",
        f"| accuracy | {_pct(e.dev_accuracy)} |",
        f"| macro-F1 | {_pct(e.dev_macro_f1)} |",
        f"| coverage (answered confidently) | {_pct(e.dev_coverage)} "
        f"({e.dev_confident} of {e.dev_cases}) |",
        f"| precision of confident answers | {_pct(e.dev_confident_precision)} "
        f"({e.dev_confident_correct} of {e.dev_confident}) |",
        f"| 95% lower bound of that precision (one-sided Clopper–Pearson) "
        f"| {_pct(e.dev_precision_lower95)} |",
        f"| cross-fitted coverage / precision (threshold chosen on the other half) "
        f"| {_pct(e.dev_crossfit_coverage)} / "
        f"{_pct(e.dev_crossfit_confident_precision)} |",
        f"| expected calibration error | {_num(e.dev_ece)} |",
        "",
        "| label / category | cases | accuracy | confident | precision of confident |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [_dev_row(f"{row['gold']} / {row['category']}", row)
              for row in e.dev_by_category or []]
    if e.dev_by_corpus:
        lines += ["", "| source corpus | cases | accuracy | confident | precision of confident |",
                  "|---|---:|---:|---:|---:|", *(_dev_row(row["corpus"], row)
                                                  for row in e.dev_by_corpus)]
    return [*lines, ""]


def _dev_row(name: str, row: dict[str, Any]) -> str:
    """One row of the card's per-category and per-corpus tables of the dev split."""
    return (f"| {name} | {row['cases']} | {_pct(row['accuracy'])} "
            f"| {_pct(row['confident_share'])} | {_pct(row['confident_precision'])} |")


def model_card(
    task: Task,
    trained: Any,
    *,
    blueprint: str,
    threshold: float,
    onnx_size: int,
    bin_size: int,
    evaluation: EvalSummary,
    refine_summary: RefineSummary,
    exam_gate: str = EXAM_PASSED,
) -> str:
    """The model card (Markdown) of one task; ``exam_gate`` as in :class:`Provenance`."""
    return "\n".join([
        *_card_labels(task, trained, blueprint),
        *_card_funnel(refine_summary),
        *_card_metrics(evaluation, threshold, exam_gate),
        *_card_rules(task, evaluation.rules),
        *_card_size(task, trained, onnx_size, bin_size),
        *_card_usage(task),
    ])


def _card_labels(task: Task, trained: Any, blueprint: str) -> list[str]:
    lines = [
        f"# Model card: `{task.name}`",
        "",
        task.description or "",
        "",
        f"Forged by Model Foundry {__version__} from blueprint `{blueprint}` with trainer "
        f"`{getattr(trained, 'trainer', '?')}`.",
        "",
        "## Labels",
        "",
        "| index | label | definition |",
        "|---:|---|---|",
    ]
    for i, label in enumerate(task.labels):
        lines.append(f"| {i} | `{label.name}` | {label.definition} |")
    return lines


def _card_funnel(refine_summary: RefineSummary) -> list[str]:
    lines = ["", "## Data funnel", ""]
    funnel = refine_summary.funnel
    if funnel:
        lines += ["| step | rows in | rows out | removed |", "|---|---:|---:|---:|"]
        for step in funnel:
            lines.append(
                f"| {step.get('step')} | {step.get('rows_in')} | {step.get('rows_out')} "
                f"| {step.get('removed')} |"
            )
    return lines + [
        "",
        f"Training rows: {refine_summary.train_rows}, test rows: {refine_summary.test_rows}.",
    ]


def _card_metrics(e: EvalSummary, threshold: float, exam_gate: str) -> list[str]:
    return [
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "|---|---:|",
        f"| exam accuracy ({e.exam_cases} hand-written cases) | {_pct(e.exam_accuracy)} |",
        f"| exam answered confidently | {_pct(e.exam_confident_share)} |",
        f"| test accuracy | {_pct(e.test_accuracy)} |",
        f"| test macro-F1 | {_pct(e.test_macro_f1)} |",
        f"| coverage at threshold (test) | {_pct(e.coverage_at_threshold)} |",
        f"| precision of confident answers (test split, where the threshold was chosen) "
        f"| {_pct(e.confident_precision)} |",
        f"| precision of confident answers (cross-fitted, out of sample) "
        f"| {_pct(e.crossfit_confident_precision)} |",
        f"| precision of confident answers (exam) | {_pct(e.exam_confident_precision)} |",
        f"| expected calibration error (test) | {_num(e.ece)} |",
        "",
        _exam_gate_line(exam_gate, e),
        "",
        f"Confidence threshold: **{threshold:.4f}** (top probability below it → `confident=False`; "
        f"chosen for a target precision of {e.target_precision}: {e.threshold_source}).",
        "",
        *_dev_section(e),
    ]


#: How the card names the splits of the evaluate stage's rule report.
RULE_SPLIT_NAMES = {"train": "train (refined)", "test": "test (refined)",
                    "dev": "real-text dev", "exam": "exam", "dataset dev": "dataset dev",
                    "dataset test": "dataset test"}


def _card_rules(task: Task, report: dict | None) -> list[str]:
    """The card's "Reflex rules" section from the evaluate stage's rule report
    (``summary.json["rules"]``): each rule's label and hits per labelled split, the model
    errors it took over, and the accuracy without and with the rules. Nothing without rules."""
    if not report:
        return []
    # summary.json is written with sorted keys: show the splits in pipeline order
    splits = {s: report["splits"][s] for s in sorted(
        report["splits"], key=lambda s: (list(RULE_SPLIT_NAMES).index(s)
                                         if s in RULE_SPLIT_NAMES else len(RULE_SPLIT_NAMES), s))}
    labels = {r.name or f"rule{i + 1}": r.label for i, r in enumerate(task.rules)}
    lines = [
        "## Reflex rules",
        "",
        f"{len(report['rules'])} rules, tried in order before the model (docs/rules.md): the "
        "first that matches answers its label, confidently, without the model. Hits per "
        "labelled split; in brackets the model errors a rule took over (texts the model alone "
        "answers wrongly). No rule contradicts a gold label of these splits (the evaluate "
        "stage refuses one that does).",
        "",
        "| rule | label | " + " | ".join(RULE_SPLIT_NAMES.get(s, s) for s in splits) + " |",
        "|---|---|" + "---:|" * len(splits),
    ]
    for name in report["rules"]:
        cells = [f"{v['hits'][name]}" + (f" (+{v['taken_over'][name]})"
                                         if v.get("taken_over", {}).get(name) else "")
                 for v in splits.values()]
        lines.append(f"| `{name}` | `{labels.get(name, '?')}` | " + " | ".join(cells) + " |")
    lines += [
        "| all rules | | " + " | ".join(f"{sum(v['hits'].values())} of {v['rows']}"
                                          for v in splits.values()) + " |",
        "| accuracy: model → with rules | | " + " | ".join(
            f"{_num(100 * v['accuracy_model'], 2)}% → {_num(100 * v['accuracy_with_rules'], 2)}%"
            if v["rows"] else "n/a"
            for v in splits.values()) + " |",
        "",
    ]
    return lines


def _card_size(task: Task, trained: Any, onnx_size: int, bin_size: int) -> list[str]:
    return [
        "## Size",
        "",
        f"- `{task.name}_classifier.onnx`: {onnx_size / 1024:.1f} KiB",
        f"- `{task.name}_preprocessor.bin`: {bin_size / 1024:.1f} KiB",
        f"- vocabulary: {_vocabulary_kinds(trained)}",
        f"- weights: {_weights_kind(trained.pipeline.named_steps['clf'])}",
    ]


def _vocabulary_kinds(trained: Any) -> str:
    """The vocabulary's terms by kind (steps 6, 6b and 6c), for the card."""
    terms = trained.pipeline.named_steps["tfidf"].vocabulary_
    words = sum(map(is_word_gram, terms))
    heads = sum(map(is_head_gram, terms))
    spec = trained.spec
    out = f"{len(terms) - words - heads} character n-grams (n = {spec.min_n}..{spec.max_n})"
    if words:
        out += f", {words} word n-grams (1..{spec.word_max_n} words)"
    if heads:
        out += f", {heads} head n-grams (the first {spec.head_chars} characters' n-grams)"
    return out


def _weights_kind(clf: Any) -> str:
    """How the ``.onnx`` stores the classifier's weights, for the card."""
    from foundry.quantized import Int8Linear, Int8Logistic, stored_weight_bytes

    if isinstance(clf, Int8Logistic):
        return ("int8, two columns (the logistic score, its calibration folded in; "
                "`bench/int8.py` measures the rounding)")
    if isinstance(clf, Int8Linear):
        if stored_weight_bytes(clf) < clf.w_q_.size:
            return (f"int8, one column per label, sparse: {clf.n_weights_:,} of "
                    f"{clf.w_q_.size:,} weights non-zero, stored as entries "
                    "(docs/preprocessor-spec.md, section 5)")
        return "int8, one column per label"
    return "float32"


def _card_usage(task: Task) -> list[str]:
    return [
        "",
        "## Use it",
        "",
        "Python:",
        "",
        "```python",
        "from foundry.runtime import MicroModel",
        f'm = MicroModel.load("{task.name}", models_dir="models")',
        'p = m.predict("今天天气怎么样？")',
        "print(p.label, p.probabilities, p.confident)",
        "```",
        "",
        "Command line (Python and JavaScript print the same JSON lines):",
        "",
        "```bash",
        f"echo 今天天气怎么样？ | foundry predict {task.name} --json",
        f"echo 今天天气怎么样？ | node runtimes/node/cli.js --models-dir models --task {task.name}",
        "```",
        "",
        "When `confident` is false, fall back to the assistant's LLM.",
        "",
    ]


def recover_pending(models_dir: Path, log: Callable[[str], None] | None = print) -> list[str]:
    """Roll forward exports that were committed but not fully renamed; drop uncommitted ones.

    Runs under the models dir's lock, so every staging folder it finds belongs to an export
    that ended (normally, or killed): none is being written. Returns the tasks rolled forward.
    """
    pending_root = Path(models_dir) / PENDING_DIR
    recovered = []
    if not pending_root.is_dir():
        return recovered
    with models_dir_lock(models_dir, log):
        for staging in sorted(pending_root.iterdir()):
            if (staging / COMMIT_MARKER).is_file():
                _switch_into_place(staging, Path(models_dir))
                recovered.append(staging.name.split(".", 1)[0])
            shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            pending_root.rmdir()
    return recovered


def _switch_into_place(staging: Path, models_dir: Path) -> None:
    """Rename the staged files into the models dir, the pair first (see ARTIFACT_SUFFIXES)."""
    def rank(path: Path) -> int:
        return next((i for i, suffix in enumerate(ARTIFACT_SUFFIXES)
                     if path.name.endswith(f"_{suffix}")), len(ARTIFACT_SUFFIXES))

    staged = [p for p in staging.iterdir() if p.name != COMMIT_MARKER]
    for src in sorted(staged, key=lambda p: (rank(p), p.name)):
        src.replace(models_dir / src.name)
    _fsync_dir(models_dir)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def install_artifacts(task: str, files: dict[str, bytes], models_dir: Path, *,
                      log: Callable[[str], None] | None = print) -> dict[str, Path]:
    """Atomically install a task's artifact files (keyed by suffix) into ``models_dir``.

    Holds the models dir's lock (waiting for another export); stages into a folder of its
    own, commits, then switches the files into place.
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    final = artifact_paths(task, models_dir)
    with models_dir_lock(models_dir, log):
        recover_pending(models_dir, log)
        staging = models_dir / PENDING_DIR / f"{task}.{os.getpid()}-{secrets.token_hex(4)}"
        staging.mkdir(parents=True)
        for suffix, data in files.items():
            atomic_write_bytes(staging / final[suffix].name, data)
        atomic_write_bytes(staging / COMMIT_MARKER, b"")
        _fsync_dir(staging)
        _switch_into_place(staging, models_dir)
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            (models_dir / PENDING_DIR).rmdir()
    return {s: final[s] for s in files}


@dataclass
class ExportResult:
    task: str
    paths: dict[str, Path]
    onnx_size: int
    bin_size: int
    conformance_vectors: int
    threshold: float


def exam_verdicts(bp: Blueprint, run_dir: Path) -> dict[str, EvalSummary]:
    """Each task's evaluation summary, with ``exam_passed`` judged against the blueprint now.

    The verdict is recomputed from the recorded accuracy and the blueprint's current
    ``evaluate.exam_min_accuracy``: a gate raised after the evaluation still applies.
    """
    minimum = bp.spec.evaluate.exam_min_accuracy
    verdicts = {}
    for task in bp.tasks:
        summary = EvalSummary.load(run_dir, task.name)
        accuracy = summary.exam_accuracy
        passed = summary.exam_passed and accuracy is not None and accuracy >= minimum
        verdicts[task.name] = summary.model_copy(update={
            "exam_passed": passed, "exam_min_accuracy": max(minimum, summary.exam_min_accuracy)})
    return verdicts


def check_export_gate(bp: Blueprint, run_dir: Path, *, allow_exam_failures: bool,
                      log: Callable[[str], None] = print) -> dict[str, str]:
    """The exam gate, enforced by the export itself: ``{task: exam_gate}`` or ExamGateError.

    Every task is judged before anything is written, so a failing exam exports nothing,
    whichever way the export stage was reached (a full forge, ``--steps export`` on a
    blocked run folder, or the notebook run by hand).
    """
    from foundry.evaluate import ExamGateError, exam_gate_message

    verdicts = exam_verdicts(bp, run_dir)
    failures = {name: s for name, s in verdicts.items() if not s.exam_passed}
    if failures and not allow_exam_failures:
        raise ExamGateError(
            f"{run_dir}: nothing exported.\n" + exam_gate_message(failures), failures)
    if failures:
        log("exam gate overridden (--allow-exam-failures); the card and the .bin provenance "
            f"record it for: {', '.join(failures)}")
    return {name: EXAM_OVERRIDDEN if name in failures else EXAM_PASSED for name in verdicts}


def export_task(
    bp: Blueprint, run_dir: Path, task: Task, models_dir: Path, *, exam_gate: str = EXAM_PASSED
) -> ExportResult:
    """Export one task of a run into ``models_dir`` (the gate is :func:`check_export_gate`)."""
    from foundry.trained import load_trained

    trained = load_trained(run_dir, task.name)
    evaluation = EvalSummary.load(run_dir, task.name)
    refine_summary = RefineSummary.load(run_dir, task.name)
    test_path = require_stage_output(run_dir, "refine", task.name, "test.jsonl")
    test_texts = [row["text"] for _, row in iter_jsonl(test_path)]
    threshold = evaluation.threshold
    familiarity = Familiarity(evaluation.familiarity.min_order,
                              evaluation.familiarity.max_unfamiliar)
    dev_texts = [r.text for r in load_real(bp, task, "dev")]
    reflex = task_reflex(bp, task, trained)
    provenance = Provenance(
        blueprint=bp.name,
        blueprint_sha256=bp.content_sha256(),
        data_sha256=refine_summary.data_sha256,
        trainer=trained.trainer,
        train_rows=int(trained.train_rows),
        exam_gate=exam_gate,
    )
    files = model_files(
        trained, task=task.name, threshold=threshold, opset=bp.spec.export.opset,
        familiarity=familiarity,
        provenance=provenance,
        texts=conformance_texts(test_texts, list(bp.spec.export.conformance_extra), dev_texts,
                                reflex=reflex),
        out_of_scope=task.out_of_scope or "",
        reflex=reflex,
    )
    onnx_size, bin_size = len(files["classifier.onnx"]), len(files["preprocessor.bin"])
    files["card.md"] = model_card(
        task, trained, blueprint=bp.name, threshold=threshold, onnx_size=onnx_size,
        bin_size=bin_size, evaluation=evaluation, refine_summary=refine_summary,
        exam_gate=exam_gate,
    ).encode("utf-8")
    paths = install_artifacts(task.name, files, models_dir, log=None)
    return ExportResult(
        task=task.name, paths=paths, onnx_size=onnx_size, bin_size=bin_size,
        conformance_vectors=len(json.loads(files["conformance.json"])["vectors"]),
        threshold=threshold,
    )


def export_stage(
    bp: Blueprint, run_dir: Path, models_dir: Path, *, allow_exam_failures: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, ExportResult]:
    """Export every task of the blueprint, then verify each pair with the runtime.

    Raises
    ------
    ExamGateError
        Before anything is written, if a task's exam failed and ``allow_exam_failures`` is
        false.
    """
    from foundry.runtime import MicroModel, verify_conformance

    for task in bp.tasks:  # every task's inputs current, before anything is judged or written
        check_fresh(bp, Path(run_dir), "export", task.name)
    gates = check_export_gate(bp, Path(run_dir), allow_exam_failures=allow_exam_failures,
                              log=log)
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    # One export into a models dir at a time: a concurrent forge waits here for this one.
    with models_dir_lock(models_dir, log):
        for name in recover_pending(models_dir, log):
            log(f"rolled forward an interrupted export of {name!r}")
        for task in bp.tasks:
            res = export_task(bp, run_dir, task, models_dir, exam_gate=gates[task.name])
            # Both backends must reproduce the vectors: ONNX Runtime is the reference for the
            # .onnx file itself, the NumPy backend is what `auto` serves.
            for backend in ("onnxruntime", "auto"):
                model = MicroModel.load(task.name, models_dir=models_dir, backend=backend)
                verify_conformance(model, res.paths["conformance.json"])
            log(f"{task.name}: {res.onnx_size / 1024:.1f} KiB onnx + {res.bin_size / 1024:.1f} "
                f"KiB bin, {res.conformance_vectors} conformance vectors verified")
            results[task.name] = res
    return results
