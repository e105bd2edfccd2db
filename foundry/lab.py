"""The tester lab: the logic behind ``notebooks/10_tester.ipynb``, testable without a browser.

A person talks to the forged models, sees *why* they answer, and feeds corrections back:

- :func:`discover_tasks` lists the tasks of a models dir; answers come from
  :class:`foundry.runtime.MicroModel`, i.e. exactly the files that ship;
- :func:`explain` lists the n-grams that pushed a decision with signed contributions: the
  decision between the model's top label and its runner-up (with many labels, the label it
  nearly answered; for an out-of-scope answer or a reflex rule's, the model's own top two).
  For a linear graph (one ``LinearClassifier`` node, or the int8 ``MatMul`` graph) a
  contribution is the feature value times the coefficient difference between the two, in
  log-odds for logistic, softmax, int8 and sigmoid-calibrated graphs (they add up, with the
  bias, to ``log(p_top / p_runner_up)``); for any other graph it falls back to occlusion (how
  much the top label's probability drops when that n-gram's feature is zeroed);
- :func:`batch_predict` classifies many lines into a table with the uncertain rows first;
- :func:`append_correction` appends ``{"text", "label", ...}`` to
  ``blueprints/<blueprint>/corrections/<task>.jsonl``: append-only, fsynced, and de-duplicated
  on the normalised text. A re-correction to another label appends a newer line; the refine
  stage keeps the last line per text;
- :class:`Lab` ties these together and renders HTML with stable CSS classes (``foundry-*``),
  which the notebook shows in ipywidgets and the browser test looks for.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from foundry.errors import FoundryError
from foundry.jsonl import iter_jsonl
from foundry.paths import MODELS_DIR, RUNS_DIR, project_path
from foundry.runs import write_json
from foundry.runtime import MicroModel, Prediction, read_linear_graph
from foundry.textspec import display_term, normalize

try:  # POSIX advisory lock: two kernels correcting the same task must not interleave.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

#: Environment variable naming the models dir (set by ``foundry lab``).
MODELS_DIR_ENV = "FOUNDRY_MODELS_DIR"
#: The blueprint whose first task the tester opens on.
DEFAULT_BLUEPRINT = "text_classification"
#: The last task used per models dir.
LAB_STATE = RUNS_DIR / "lab.json"
#: Colours of the labels, by their index in the model's label list.
LABEL_COLOURS = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#db2777", "#0891b2", "#ca8a04")
#: Columns of a batch table, in display order.
BATCH_COLUMNS = ("line", "text", "label", "confidence", "confident")


class LabError(FoundryError, ValueError):
    """A lab request cannot be served; the message says what is wrong and how to fix it."""


# ----------------------------------------------------------------------------------------
# Tasks and models


def default_models_dir() -> Path:
    """The models dir of the lab: ``$FOUNDRY_MODELS_DIR`` if set, else the repository's ``models/``.

    Not a relative ``models``: a notebook kernel runs in ``notebooks/``, not the repository root.
    """
    env = os.environ.get(MODELS_DIR_ENV, "").strip()
    return Path(env) if env else MODELS_DIR


def default_blueprint_tasks() -> list[str]:
    """Task names of the default blueprint, in its order (empty if it cannot be read)."""
    import yaml

    from foundry import paths

    try:
        spec = yaml.safe_load((paths.BLUEPRINTS_DIR / DEFAULT_BLUEPRINT / "blueprint.yaml")
                              .read_text(encoding="utf-8"))
        return [t["name"] for t in spec["tasks"]]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return []


def _read_state() -> dict[str, str]:
    try:
        state = json.loads(LAB_STATE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def discover_tasks(models_dir: str | Path) -> list[str]:
    """Sorted names of the tasks in ``models_dir`` that have both a ``.bin`` and an ``.onnx``."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    return sorted(
        p.name.removesuffix("_preprocessor.bin")
        for p in models_dir.glob("*_preprocessor.bin")
        if (models_dir / p.name.replace("_preprocessor.bin", "_classifier.onnx")).is_file()
    )


# ----------------------------------------------------------------------------------------
# Explanations


@dataclass(frozen=True)
class LinearWeights:
    """Class weights of a linear ONNX classifier.

    Attributes
    ----------
    coefficients : numpy.ndarray
        ``[K, D]`` float64, row ``k`` = weights of ``labels[k]``.
    intercepts : numpy.ndarray
        ``[K]`` float64.
    scale : float
        Factor that turns a coefficient difference into a log-odds difference (0.5 for a
        binary logistic model stored as rows ``[-w, w]``, else 1).
    units : str
        ``"log-odds"`` when contributions add up to ``log(p_label / p_versus)``, else ``"score"``.
    """

    coefficients: np.ndarray
    intercepts: np.ndarray
    scale: float
    units: str


def linear_weights(onnx_path: str | Path, n_labels: int, n_features: int) -> LinearWeights | None:
    """Read the weights of a linear classifier graph, or ``None`` if the graph is not linear.

    "Linear" is what the runtime's numpy backend accepts
    (:func:`foundry.runtime.read_linear_graph`): one ``LinearClassifier``, optionally followed
    by an L1 ``Normalizer`` or by skl2onnx's binary sigmoid calibration.
    """
    graph = read_linear_graph(Path(onnx_path).read_bytes())
    if graph is None:
        return None
    weights = np.asarray(graph.coefficients, dtype=np.float64)
    intercepts = np.asarray(graph.intercepts, dtype=np.float64)
    if weights.shape != (n_labels, n_features):
        raise LabError(f"{onnx_path}: LinearClassifier weights have shape {weights.shape}, "
                       f"expected {n_labels} labels x {n_features} features")
    if graph.calibration is not None:
        return _calibrated_weights(weights, intercepts, graph.calibration)
    symmetric = n_labels == 2 and np.allclose(weights[0], -weights[1])
    # An L1 Normalizer after these two changes nothing: their outputs already sum to 1.
    if graph.post_transform == "LOGISTIC" and symmetric:
        # skl2onnx stores a binary logistic regression w as rows [-w, w] and applies a sigmoid
        # to each score, so log(p1 / p0) = w.x + b: half the row difference.
        return LinearWeights(weights, intercepts, 0.5, "log-odds")
    if graph.post_transform == "SOFTMAX":
        return LinearWeights(weights, intercepts, 1.0, "log-odds")
    # One-vs-rest sigmoids (+ L1) or raw scores: the difference still ranks, but is not log-odds.
    return LinearWeights(weights, intercepts, 1.0, "score")


def _calibrated_weights(weights: np.ndarray, intercepts: np.ndarray, calibration
                        ) -> LinearWeights:
    """Platt scaling ``p1 = 1 / (1 + exp(a * s + b))`` of the raw score ``s`` in one column.

    Then ``log(p1 / p0) = -(a * s + b)`` with ``s = W[column] . x + c[column]``: linear in the
    features, so class 1 gets the row ``-a * W[column]`` and class 0 a row of zeros.
    """
    a, b, col = float(calibration.a), float(calibration.b), int(calibration.column)
    effective = np.vstack([np.zeros(weights.shape[1]), -a * weights[col]])
    bias = np.array([0.0, -(a * intercepts[col] + b)])
    return LinearWeights(effective, bias, 1.0, "log-odds")


@dataclass(frozen=True)
class Contribution:
    """How much one n-gram pushed the decision.

    Attributes
    ----------
    ngram : str
        The n-gram as in the vocabulary (a space marks a word boundary); a word n-gram
        (text spec step 6b) as ``⟨play music⟩``.
    index : int
        Its feature column.
    value : float
        Its feature value in this text (tf-idf, L2-normalised).
    contribution : float
        Signed: positive pushes towards the predicted label, negative towards ``versus``.
    favours : str
        The label this n-gram pushes towards.
    """

    ngram: str
    index: int
    value: float
    contribution: float
    favours: str


@dataclass(frozen=True)
class Explanation:
    """Why a model answered ``label`` rather than ``versus``.

    Attributes
    ----------
    label, versus : str
        The model's top label and the runner-up it was weighed against (the top label is the
        answer unless the answer was the out-of-scope label or a reflex rule's).
    method : str
        ``"linear"`` (feature value x coefficient difference) or ``"occlusion"``.
    units : str
        ``"log-odds"``, ``"score"`` (linear) or ``"probability"`` (occlusion).
    contributions : tuple of Contribution
        Largest absolute contribution first.
    bias : float or None
        The intercept difference (linear only): what the model says with no n-gram at all.
    """

    label: str
    versus: str
    method: str
    units: str
    contributions: tuple[Contribution, ...]
    bias: float | None = None

    def top(self, n: int) -> tuple[Contribution, ...]:
        """The ``n`` strongest contributions."""
        return self.contributions[:n]

    @property
    def log_odds(self) -> float | None:
        """``log(p_label / p_versus)`` (the bias plus every contribution) when the units are
        log-odds, else None."""
        if self.units != "log-odds" or self.bias is None:
            return None
        return self.bias + sum(c.contribution for c in self.contributions)


def top_two(model: MicroModel, text: str, prediction: Prediction) -> tuple[str, str]:
    """The model's top label and runner-up for ``text`` (the first of equals in label
    order): from the answer's probabilities, which are the model's also when the answer is
    the out-of-scope label; from the model itself when a reflex rule answered."""
    if prediction.rule is not None:
        p = dict(zip(model.labels, model.predict_proba([text])[0].tolist(), strict=True))
    else:
        p = prediction.probabilities
    label = max(model.labels, key=p.__getitem__)
    return label, max((lab for lab in model.labels if lab != label), key=p.__getitem__)


def _ordered(contribs: Iterable[Contribution]) -> tuple[Contribution, ...]:
    # Ties broken by column so the order is deterministic.
    return tuple(sorted(contribs, key=lambda c: (-abs(c.contribution), c.index)))


def explain_linear(model: MicroModel, text: str, prediction: Prediction,
                   weights: LinearWeights) -> Explanation:
    """Contributions ``value * (W[label] - W[versus]) * scale`` of the text's n-grams, for the
    model's top label and runner-up (:func:`top_two`)."""
    label, versus = top_two(model, text, prediction)
    k, r = model.labels.index(label), model.labels.index(versus)
    idx, values = model.featurize(text)
    diff = (weights.coefficients[k] - weights.coefficients[r]) * weights.scale
    vocab = model.preprocessor.vocabulary
    contribs = (
        Contribution(display_term(vocab[i]), int(i), float(v), float(v * diff[i]),
                     label if v * diff[i] >= 0 else versus)
        for i, v in zip(idx.tolist(), values.tolist(), strict=True)
    )
    bias = float((weights.intercepts[k] - weights.intercepts[r]) * weights.scale)
    return Explanation(label, versus, "linear", weights.units, _ordered(contribs), bias)


def open_session(model: MicroModel):
    """An ONNX Runtime session on the model's ``.onnx`` (for occlusion)."""
    import onnxruntime as ort

    # The very .onnx file the model loaded (its hash was checked by MicroModel.load).
    return ort.InferenceSession(str(model.paths["onnx"]), providers=["CPUExecutionProvider"])


def explain_occlusion(model: MicroModel, text: str, prediction: Prediction,
                      session=None) -> Explanation:
    """Contribution = drop of the model's top label's probability when one feature is zeroed.

    The other features are not re-normalised: the question asked is "what does this column
    add", not "what if the text lacked this n-gram".
    """
    label, versus = top_two(model, text, prediction)
    k = model.labels.index(label)
    idx, values = model.featurize(text)
    if len(idx) == 0:
        return Explanation(label, versus, "occlusion", "probability", ())
    session = session or open_session(model)
    full = np.zeros((1, model.n_features), dtype=np.float32)
    full[0, idx] = values
    occluded = np.repeat(full, len(idx), axis=0)
    occluded[np.arange(len(idx)), idx] = 0.0
    name = session.get_inputs()[0].name
    _, proba = session.run(None, {name: np.vstack([full, occluded])})
    base, without = proba[0].astype(np.float64), proba[1:].astype(np.float64)
    vocab = model.preprocessor.vocabulary
    contribs = []
    for row, (i, v) in enumerate(zip(idx.tolist(), values.tolist(), strict=True)):
        gain = base - without[row]  # how much this feature raised each label's probability
        contribs.append(Contribution(vocab[i], int(i), float(v), float(gain[k]),
                                     model.labels[int(np.argmax(gain))]))
    return Explanation(label, versus, "occlusion", "probability", _ordered(contribs))


def explain(model: MicroModel, text: str, prediction: Prediction | None = None, *,
            weights: LinearWeights | None | bool = True, session=None) -> Explanation:
    """Explain ``model``'s answer to ``text``.

    Parameters
    ----------
    weights : LinearWeights, None or True
        Weights read by :func:`linear_weights` (pass them to avoid re-reading the graph),
        ``None`` to force occlusion, or ``True`` to read them from ``model.paths["onnx"]``.
    session : onnxruntime.InferenceSession, optional
        Reused by occlusion; by default one is opened on ``model.paths["onnx"]``.
    """
    prediction = prediction or model.predict(text)
    if weights is True:
        weights = linear_weights(model.paths["onnx"], len(model.labels), model.n_features)
    if isinstance(weights, LinearWeights):
        return explain_linear(model, text, prediction, weights)
    return explain_occlusion(model, text, prediction, session)


# ----------------------------------------------------------------------------------------
# Batch


def parse_lines(block: str) -> list[str]:
    """The non-blank lines of a pasted block, without their line ends."""
    return [line.strip() for line in block.splitlines() if line.strip()]


def batch_predict(model: MicroModel, lines: Sequence[str]) -> pd.DataFrame:
    """Classify ``lines`` into a table ``line, text, label, confidence, confident``.

    ``line`` is the 1-based input position; rows are sorted uncertain first (lowest
    confidence first, input order among equals).
    """
    predictions = model.predict_many(lines)
    df = pd.DataFrame({
        "line": np.arange(1, len(lines) + 1, dtype=np.int64),
        "text": list(lines),
        "label": [p.label for p in predictions],
        "confidence": np.array([p.score for p in predictions], dtype=np.float64),
        "confident": [p.confident for p in predictions],
    }, columns=list(BATCH_COLUMNS))
    return sort_batch(df, "confidence")


def sort_batch(df: pd.DataFrame, by: str, descending: bool = False) -> pd.DataFrame:
    """Sort a batch table by one of :data:`BATCH_COLUMNS`, stable, input order among equals."""
    if by not in BATCH_COLUMNS:
        raise LabError(f"cannot sort by {by!r}; choose one of {', '.join(BATCH_COLUMNS)}")
    keys = [by] if by == "line" else [by, "line"]
    ascending = [not descending] if by == "line" else [not descending, True]
    return df.sort_values(keys, ascending=ascending, kind="mergesort").reset_index(drop=True)


def batch_csv(df: pd.DataFrame) -> str:
    """CSV text of a batch table (UTF-8 with BOM once encoded, so spreadsheets read Chinese)."""
    return df.to_csv(index=False, float_format="%.4f")


# ----------------------------------------------------------------------------------------
# Corrections


def task_blueprint_dir(model: MicroModel) -> Path:
    """The blueprint folder a model was forged from (from the provenance in its ``.bin``).

    The provenance is only trusted as a blueprint *name* under ``blueprints/``: a ``.bin``
    naming a path (``/etc``, ``../x``) must not make the lab write anywhere else.
    """
    from foundry.blueprint import BLUEPRINT_FILE, is_blueprint_name
    from foundry.paths import BLUEPRINTS_DIR

    name = model.preprocessor.provenance.blueprint
    how = ("re-forge it with `foundry forge <blueprint>` or set blueprint_dir (the tester's "
           "parameters cell, or Lab(blueprint_dir=...))")
    if not name:
        raise LabError(
            f"{model.paths['bin']}: no blueprint recorded in its provenance, so corrections have "
            f"nowhere to go; {how}"
        )
    folder = BLUEPRINTS_DIR / name
    if not is_blueprint_name(name) or not (folder / BLUEPRINT_FILE).is_file():
        raise LabError(
            f"{model.paths['bin']}: its provenance names blueprint {name!r}, which is not a "
            f"blueprint under {BLUEPRINTS_DIR}; {how}"
        )
    return folder.resolve()


def corrections_path(blueprint_dir: str | Path, task: str) -> Path:
    """``<blueprint>/corrections/<task>.jsonl``, the file the refine stage reads."""
    return Path(blueprint_dir) / "corrections" / f"{task}.jsonl"


def read_corrections(path: str | Path) -> list[dict]:
    """Every correction in file order (empty if the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for where, row in iter_jsonl(path, error=LabError, hint="; fix or remove the line"):
        if not isinstance(row.get("text"), str):
            raise LabError(f"{where}: expected an object with a string 'text'")
        rows.append(row)
    return rows


def current_label(corrections: Iterable[dict], text: str) -> str | None:
    """The label the corrections log holds for ``text`` now: its last line with that text."""
    key = normalize(text)
    label = None
    for row in corrections:
        if normalize(row["text"]) == key:
            label = row.get("label")
    return label


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_byte(fd: int, size: int) -> bytes:
    # lseek + read rather than os.pread, which Windows lacks; O_APPEND writes ignore the offset.
    os.lseek(fd, size - 1, os.SEEK_SET)
    return os.read(fd, 1)


def append_correction(path: str | Path, text: str, label: str, *, task: str | None = None,
                      predicted: str | None = None, now: datetime | None = None) -> bool:
    """Append one correction unless the log already holds ``label`` for this text.

    The file is only ever appended to (one JSON object per line, written with one ``write``
    and fsynced). De-duplication compares :func:`foundry.textspec.normalize` of the texts: the
    same text with the same current label is not written again; with a different label the
    newer line is appended, and the refine stage keeps the last line per text.

    Returns
    -------
    bool
        True if a line was appended, False if it was already there.
    """
    if not normalize(text):
        raise LabError("cannot record a correction for an empty text")
    path = Path(path)
    created = not path.parent.is_dir()
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"text": text, "label": label}
    if task:
        row["task"] = task
    if predicted:
        row["predicted"] = predicted
    row["time"] = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    line = json.dumps(row, ensure_ascii=False) + "\n"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        # Read under the lock, so two writers cannot both decide the text is new.
        if current_label(read_corrections(path), text) == label:
            return False
        size = os.fstat(fd).st_size
        if size and _last_byte(fd, size) != b"\n":
            line = "\n" + line  # a hand-edited file without a final newline
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)  # also releases the lock
    if created or size == 0:
        _fsync_dir(path.parent)
    return True


# ----------------------------------------------------------------------------------------
# HTML rendering (stable CSS classes for the notebook and the browser test)


def label_colour(labels: Sequence[str], label: str) -> str:
    """The display colour of ``label`` (by its position in the model's labels)."""
    return LABEL_COLOURS[list(labels).index(label) % len(LABEL_COLOURS)]


def _show_ngram(ngram: str) -> str:
    # A space in an n-gram is a word boundary; make it visible.
    return html.escape(ngram.replace(" ", "▁"))


def render_probabilities(labels: Sequence[str], prediction: Prediction) -> str:
    """One horizontal bar per label, widths = probabilities."""
    rows = []
    for label in labels:
        p = prediction.probabilities[label]
        colour = label_colour(labels, label)
        rows.append(
            f'<div class="foundry-bar-row" data-label="{html.escape(label)}" '
            'style="display:flex;align-items:center;gap:8px;margin:2px 0">'
            f'<span style="width:110px;text-align:right">{html.escape(label)}</span>'
            '<span class="foundry-bar" style="display:inline-block;width:260px;height:14px;'
            'background:#e5e7eb;border-radius:3px;overflow:hidden">'
            f'<span class="foundry-bar-fill" style="display:block;height:100%;width:{p * 100:.1f}%;'
            f'background:{colour}"></span></span>'
            f'<span class="foundry-prob" style="font-variant-numeric:tabular-nums">{p:.3f}</span>'
            "</div>"
        )
    return "".join(rows)


def render_explanation(labels: Sequence[str], explanation: Explanation, top: int = 12) -> str:
    """Chips of the strongest n-grams, coloured by the label they favour."""
    if not explanation.contributions:
        return ('<div class="foundry-why">No n-gram of this text is in the vocabulary: the answer '
                "comes from the model's bias alone.</div>")
    chips = []
    for c in explanation.top(top):
        colour = label_colour(labels, c.favours)
        chips.append(
            f'<span class="foundry-chip" data-label="{html.escape(c.favours)}" '
            f'title="favours {html.escape(c.favours)}; feature value {c.value:.3f}" '
            f'style="display:inline-block;margin:2px;padding:1px 7px;border-radius:10px;'
            f'border:1px solid {colour};color:{colour};font-family:monospace">'
            f"{_show_ngram(c.ngram)} {c.contribution:+.3f}</span>"
        )
    if explanation.log_odds is not None and len(labels) > 2:  # many labels: which two, how far
        how = (f"log(P({explanation.label}) / P({explanation.versus})) = "
               f"{explanation.log_odds:+.3f}: bias {explanation.bias:+.3f} + per n-gram "
               f"feature value × weight difference {explanation.label} − {explanation.versus}")
    elif explanation.method == "linear":
        how = (f"feature value × weight difference {explanation.label} − {explanation.versus} "
               f"({explanation.units})")
    else:
        how = f"drop of P({explanation.label}) when the n-gram is zeroed"
    return (f'<div class="foundry-why"><div style="color:#6b7280;font-size:90%">'
            f"Why: {html.escape(how)}; + pushes {html.escape(explanation.label)}, ▁ marks a word boundary</div>"
            f'{"".join(chips)}</div>')


def render_answer(model: MicroModel, text: str, prediction: Prediction,
                  explanation: Explanation | None = None) -> str:
    """The answer block: label, "not sure" badge, probability bars, and the explanation."""
    colour = label_colour(model.labels, prediction.label)
    badge = ""
    if prediction.rule is not None:  # a reflex rule answered, not the model
        badge = (f'<span class="foundry-rule" title="answered by the reflex rule '
                 f'{html.escape(prediction.rule)} (docs/rules.md), not by the model" '
                 'style="margin-left:10px;padding:1px 8px;border-radius:10px;background:#e0e7ff;'
                 f'color:#3730a3;border:1px solid #6366f1">rule {html.escape(prediction.rule)}'
                 '</span>')
    elif not prediction.confident:
        badge = (f'<span class="foundry-unsure" title="below the confidence threshold '
                 f'{model.threshold:.3f}" style="margin-left:10px;padding:1px 8px;border-radius:'
                 '10px;background:#fef3c7;color:#92400e;border:1px solid #f59e0b">not sure '
                 f"({prediction.score:.2f} &lt; {model.threshold:.2f})</span>")
    why = render_explanation(model.labels, explanation) if explanation else ""
    return (
        f'<div class="foundry-answer" data-label="{html.escape(prediction.label)}" '
        f'data-confident="{str(prediction.confident).lower()}">'
        f'<div style="color:#6b7280">{html.escape(model.task)} · {html.escape(text)}</div>'
        f'<div style="font-size:150%;margin:4px 0"><span class="foundry-label" '
        f'style="color:{colour};font-weight:bold">{html.escape(prediction.label)}</span>'
        f"{badge}</div>"
        f"{render_probabilities(model.labels, prediction)}{why}</div>"
    )


def render_batch_table(df: pd.DataFrame, labels: Sequence[str]) -> str:
    """The batch table as HTML; not-sure rows are shaded."""
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{c}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        shade = "" if row.confident else " style='background:#fef3c7'"
        colour = label_colour(labels, row.label)
        body.append(
            f"<tr class='foundry-batch-row'{shade}><td style='padding:2px 8px'>{row.line}</td>"
            f"<td style='padding:2px 8px'>{html.escape(row.text)}</td>"
            f"<td style='padding:2px 8px;color:{colour}'>{html.escape(row.label)}</td>"
            f"<td style='padding:2px 8px'>{row.confidence:.3f}</td>"
            f"<td style='padding:2px 8px'>{'yes' if row.confident else 'not sure'}</td></tr>"
        )
    return (f"<table class='foundry-batch-table' style='border-collapse:collapse'><thead><tr>{head}"
            f"</tr></thead><tbody>{''.join(body)}</tbody></table>")


def render_error(exc: BaseException) -> str:
    """A visible error message: widget callbacks otherwise only log to the browser console."""
    return (f'<div class="foundry-error" style="color:#b91c1c">{html.escape(type(exc).__name__)}: '
            f"{html.escape(str(exc))}</div>")


def csv_download_link(df: pd.DataFrame, filename: str) -> str:
    """An ``<a download>`` link carrying the CSV as a data URL (no server round trip)."""
    data = base64.b64encode(batch_csv(df).encode("utf-8-sig")).decode("ascii")
    return (f'<a class="foundry-csv-link" download="{html.escape(filename)}" '
            f'href="data:text/csv;charset=utf-8;base64,{data}">⬇ download {html.escape(filename)}'
            f" ({len(df)} rows)</a>")


# ----------------------------------------------------------------------------------------
# The lab


@dataclass(frozen=True)
class Answer:
    """A prediction with its explanation, for one text."""

    task: str
    text: str
    prediction: Prediction
    explanation: Explanation


@dataclass(frozen=True)
class CorrectionResult:
    path: Path
    appended: bool
    label: str
    #: The command that forges the blueprint the correction went to.
    forge_command: str = "foundry forge <blueprint>"

    def message(self) -> str:
        if self.appended:
            return (f"Saved “{self.label}” to {self.path}; the next `{self.forge_command}` "
                    "learns it.")
        return f"Already recorded as “{self.label}” in {self.path}."


def forge_command(blueprint_dir: Path) -> str:
    """``foundry forge <name>`` for a blueprint under ``blueprints/``, else with its path."""
    from foundry import paths

    blueprint_dir = Path(blueprint_dir).resolve()
    if blueprint_dir.parent == paths.BLUEPRINTS_DIR.resolve():
        return f"foundry forge {blueprint_dir.name}"
    return f"foundry forge {blueprint_dir}"


@dataclass(frozen=True)
class _Loaded:
    stamp: tuple[int, ...]
    model: MicroModel
    weights: LinearWeights | None
    session: object | None


class Lab:
    """The tester's state: a models dir, loaded models, and where corrections go.

    Parameters
    ----------
    models_dir : path, optional
        Defaults to :func:`default_models_dir`.
    blueprint_dir : path, optional
        Blueprint folder for corrections of every task; by default each model's provenance
        names its blueprint.
    """

    def __init__(self, models_dir: str | Path | None = None,
                 blueprint_dir: str | Path | None = None) -> None:
        # Relative to the project root, not the kernel's working folder (notebooks/).
        self.models_dir = project_path(models_dir) if models_dir else default_models_dir()
        self.blueprint_dir = project_path(blueprint_dir) if blueprint_dir else None
        self._models: dict[str, _Loaded] = {}

    def __repr__(self) -> str:
        return f"Lab(models_dir={str(self.models_dir)!r}, tasks={self.tasks()})"

    def tasks(self) -> list[str]:
        """Tasks found in the models dir now: the default blueprint's first, in its order."""
        found = discover_tasks(self.models_dir)
        first = [t for t in default_blueprint_tasks() if t in found]
        return first + [t for t in found if t not in first]

    def initial_task(self) -> str | None:
        """The task the tester opens on: the one used last with this models dir, else the
        first task of the default blueprint, else the first found."""
        tasks = self.tasks()
        last = _read_state().get(str(self.models_dir.resolve()))
        return last if last in tasks else (tasks[0] if tasks else None)

    def remember(self, task: str) -> None:
        """Remember ``task`` as the last one used with this models dir (``runs/lab.json``)."""
        if task not in self.tasks():
            return
        state = _read_state()
        state[str(self.models_dir.resolve())] = task
        with contextlib.suppress(OSError):  # read-only checkout: the tester just forgets
            write_json(LAB_STATE, state)

    def _entry(self, task: str) -> _Loaded:
        if task not in self.tasks():
            raise LabError(f"no task {task!r} in {self.models_dir} (found: "
                           f"{', '.join(self.tasks()) or 'none'}); forge its blueprint with "
                           "`foundry forge <blueprint>`")
        files = (self.models_dir / f"{task}_preprocessor.bin",
                 self.models_dir / f"{task}_classifier.onnx")
        # Keyed by modification times, so a re-forge while the lab is open is picked up.
        stamp = tuple(f.stat().st_mtime_ns for f in files)
        loaded = self._models.get(task)
        if loaded is None or loaded.stamp != stamp:
            model = MicroModel.load(task, self.models_dir)
            weights = linear_weights(model.paths["onnx"], len(model.labels), model.n_features)
            # Occlusion runs the graph once per question: open its session once.
            session = open_session(model) if weights is None else None
            loaded = _Loaded(stamp, model, weights, session)
            self._models[task] = loaded
        return loaded

    def model(self, task: str) -> MicroModel:
        """The loaded model of ``task`` (reloaded when its files changed)."""
        return self._entry(task).model

    def ask(self, task: str, text: str) -> Answer:
        """Predict and explain one text."""
        loaded = self._entry(task)
        prediction = loaded.model.predict(text)
        explanation = explain(loaded.model, text, prediction, weights=loaded.weights,
                              session=loaded.session)
        return Answer(task, text, prediction, explanation)

    def render(self, answer: Answer) -> str:
        """HTML of an answer."""
        return render_answer(self.model(answer.task), answer.text, answer.prediction,
                             answer.explanation)

    def batch(self, task: str, block: str) -> pd.DataFrame:
        """Classify every non-blank line of ``block``; uncertain rows first."""
        return batch_predict(self.model(task), parse_lines(block))

    def corrections_file(self, task: str) -> Path:
        """Where corrections of ``task`` are appended."""
        bp = self.blueprint_dir or task_blueprint_dir(self.model(task))
        return corrections_path(bp, task)

    def check_learnable(self, task: str, text: str, label: str) -> None:
        """Raise :class:`LabError` if the next forge would drop this correction.

        The refinery drops a row that is too short or too long (``refine.min_chars`` /
        ``max_chars``) or that equals, or nearly equals, an exam text (the exam never trains),
        whoever wrote it. The lab asks the refinery's own test
        (:func:`foundry.refine.correction_problem`) on the blueprint the correction goes to,
        and refuses such a correction with what to do instead.
        """
        from foundry.blueprint import BlueprintError, load_blueprint
        from foundry.refine import correction_problem, load_exam

        folder = self.blueprint_dir or task_blueprint_dir(self.model(task))
        try:
            bp = load_blueprint(folder)
            spec = bp.task(task)
            exam = [row["text"] for row in load_exam(bp, spec)]
        except (BlueprintError, OSError, ValueError) as exc:
            raise LabError(f"cannot check the correction against blueprint {folder}: {exc}"
                           ) from None
        problem = correction_problem(text, label, spec, bp.spec.refine, exam)
        if problem is None:
            return
        reason, detail = problem
        advice = {
            "length": "shorten it, or change refine.min_chars / refine.max_chars in "
                      f"{folder / 'blueprint.yaml'}",
            "exam_overlap": "the exam never trains: if the exam's label is wrong, correct "
                            f"{bp.path(spec.exam)} instead",
        }.get(reason, "change the text")
        raise LabError(f"not recorded: the next forge would drop this correction ({detail}); "
                       f"{advice}")

    def correct(self, task: str, text: str, label: str, predicted: str | None = None
                ) -> CorrectionResult:
        """Record that ``text`` should be ``label`` (refused if the forge could not learn it)."""
        model = self.model(task)
        if label not in model.labels:
            raise LabError(f"{label!r} is not a label of {task} ({', '.join(model.labels)})")
        self.check_learnable(task, text, label)
        path = self.corrections_file(task)
        appended = append_correction(path, text, label, task=task, predicted=predicted)
        return CorrectionResult(path, appended, label, forge_command(path.parent.parent))
