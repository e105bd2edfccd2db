"""Baselines to beat: fastText and the original recipe on exactly the same refined train split.

    .venv/bin/python bench/baselines.py                          # default blueprint, latest run
    .venv/bin/python bench/baselines.py text_classification --run-dir runs/text_classification/<id>
    .venv/bin/python bench/baselines.py --models-dir models --latency-queries 2000
    .venv/bin/python bench/baselines.py --seeds 42,7,1,3        # one forge per seed, then pooled

For every task it compares, as one printed table:

- **ours**: the exported pair in the models dir, loaded with ``foundry.runtime.MicroModel``
  (what an application ships); if the pair is missing, the train stage's scikit-learn
  pipeline from the run (size is then the size the exporter would write);
- **fastText**: ``fasttext-wheel`` trained on the run's ``refine/<task>/train.jsonl``, on
  our normalised text split into characters (Chinese has no spaces; fastText n-grams are
  word n-grams, so ``wordNgrams=3`` over characters mirrors our 1-3 char n-grams), one thread
  and a fixed seed; both the full ``.bin`` and the quantised ``.ftz``;
- **tfidf_mlp**: the registry's non-linear trainer (one hidden layer of
  ``MLP_PARAMS["hidden"]`` ReLU units over our TF-IDF n-grams, capped at its
  ``max_features`` default by frequency, no size budget) fitted on the same rows, exported
  with ``foundry.pair.artifact_bytes`` and scored by ``MicroModel`` through ONNX Runtime;
- **original recipe**: the product description's first model, scikit-learn's
  ``TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4))`` + ``LogisticRegression(C=20)``,
  unpruned, on the same rows (its size is the pickled pipeline's).

Columns: real-text dev accuracy (the blueprint's ``dev`` split: real, human-written, never
trained on; with a 95% Wilson interval), exam accuracy (hand-written, never trained on), test
accuracy and macro-F1 (the run's test split), size on disk, and single-query latency (median
and p99 over one-text calls, after a warm-up), each on the same texts.

One forge is one draw (the grammar, the split and the CV folds follow the seed): on the ~700-840
dev texts two models a few cases apart trade places from seed to seed. ``--seeds`` forges a
seeded copy of the blueprint per seed (``bench/seeds.py``'s ``forge_seeded``: offline, in a
temporary folder), prints each seed's table, then per task and model the dev accuracy at every
seed and pooled over the seeds (correct / cases, with a Wilson interval), the pooled exam
accuracy, and at how many seeds the model's dev accuracy is at least ours.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402

from bench.scratch import scratch_dir  # noqa: E402
from bench.seeds import forge_seeded, parse_seeds  # noqa: E402
from foundry.blueprint import Task, load_blueprint  # noqa: E402
from foundry.evaluate import load_exam  # noqa: E402
from foundry.paths import MODELS_DIR  # noqa: E402
from foundry.realtext import load_real  # noqa: E402
from foundry.runs import (  # noqa: E402
    latest_run_dir,
    require_stage_output,
    resolve_run_dir,
)
from foundry.summaries import RefineSummary  # noqa: E402
from foundry.textspec import TextSpec, normalize  # noqa: E402
from foundry.train import load_split  # noqa: E402
from foundry.trained import load_trained  # noqa: E402

#: fastText settings: char unigrams + word(=char) bigrams/trigrams, like our 1-3 char n-grams.
FASTTEXT_PARAMS = {"epoch": 30, "lr": 0.5, "wordNgrams": 3, "dim": 50, "minn": 0, "maxn": 0,
                   "bucket": 200_000, "loss": "softmax", "thread": 1, "seed": 42, "verbose": 0}


def fasttext_tokens(text: str, spec: TextSpec) -> str:
    """Our normalised text as space-separated characters; ``_`` marks a word boundary."""
    return " ".join("_" if ch == " " else ch for ch in normalize(text, spec))


def train_fasttext(texts: list[str], labels: list[str], spec: TextSpec, folder: Path):
    """Train fastText on the same rows; return the model and the path of its training file."""
    import fasttext

    path = folder / "train.txt"
    with open(path, "w", encoding="utf-8") as fh:
        for text, label in zip(texts, labels, strict=True):
            fh.write(f"__label__{label} {fasttext_tokens(text, spec)}\n")
    return fasttext.train_supervised(input=str(path), **FASTTEXT_PARAMS), path


def fasttext_predictor(model, spec: TextSpec, labels: list[str]) -> Callable[[str], str]:
    """One-text prediction. ``model.predict`` breaks under NumPy 2, so call the C++ binding."""
    def predict(text: str) -> str:
        answers = model.f.predict(fasttext_tokens(text, spec) + "\n", 1, 0.0, "strict")
        return answers[0][1].removeprefix("__label__") if answers else labels[0]

    return predict


#: The original recipe: char_wb 1-4 TF-IDF + logistic regression with C = 20.
ORIGINAL_RECIPE = {"analyzer": "char_wb", "ngram_range": (1, 4), "C": 20.0}


def train_original_recipe(texts: list[str], labels: list[str]):
    """The original recipe fitted on the same rows: a scikit-learn pipeline."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(analyzer=ORIGINAL_RECIPE["analyzer"],
                        ngram_range=ORIGINAL_RECIPE["ngram_range"]),
        LogisticRegression(C=ORIGINAL_RECIPE["C"], max_iter=5000),
    ).fit(texts, labels)


#: The perceptron of the tfidf_mlp row (the vectorizer defaults of the trainer apply).
MLP_PARAMS = {"hidden": 16}


def mlp_predictor(texts: list[str], labels: list[str], y: np.ndarray, spec: TextSpec,
                  seed: int, task: str, folder: Path) -> tuple[Callable[[str], str], int]:
    """``(predict, bytes on disk)`` of a ``tfidf_mlp`` pair fitted on the rows and loaded
    back from ``folder`` by the runtime (ONNX Runtime: the graph is not linear)."""
    from foundry.pair import artifact_bytes
    from foundry.runtime import MicroModel
    from foundry.trained import as_trained
    from foundry.trainers import get_trainer, make_pipeline

    trainer = get_trainer("tfidf_mlp")
    pipe = make_pipeline(trainer, spec, True, MLP_PARAMS, seed).fit(texts, y)
    onnx_bytes, bin_bytes = artifact_bytes(as_trained(pipe, labels, spec, True, trainer.name,
                                                      task), 0.5, task=task)
    (folder / f"{task}_classifier.onnx").write_bytes(onnx_bytes)
    (folder / f"{task}_preprocessor.bin").write_bytes(bin_bytes)
    model = MicroModel.load(task, folder)
    return (lambda t: model.predict(t).label), len(onnx_bytes) + len(bin_bytes)


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``k / n``."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def latency_us(predict: Callable[[str], object], texts: list[str], n: int) -> tuple[float, float]:
    """Median and p99 microseconds of single-text calls, cycling through ``texts``."""
    for text in texts[:50]:  # warm-up: caches, lazy initialisation
        predict(text)
    times = []
    for i in range(n):
        text = texts[i % len(texts)]
        t0 = time.perf_counter_ns()
        predict(text)
        times.append((time.perf_counter_ns() - t0) / 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.99 * len(times)))]


def score(predict: Callable[[str], str], texts: list[str], gold: list[str],
          labels: list[str]) -> tuple[float, float]:
    pred = [predict(t) for t in texts]
    return (float(accuracy_score(gold, pred)),
            float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0)))


def our_predictor(run: Path, task: Task, models_dir: Path) -> tuple[str, Callable[[str], str], int]:
    """``(source, predict, bytes on disk)`` of our model: the exported pair if present."""
    onnx = models_dir / f"{task.name}_classifier.onnx"
    binf = models_dir / f"{task.name}_preprocessor.bin"
    if onnx.is_file() and binf.is_file():
        from foundry.runtime import MicroModel

        model = MicroModel.load(task.name, models_dir=models_dir)
        return "MicroModel (.onnx+.bin)", lambda t: model.predict(t).label, \
            onnx.stat().st_size + binf.stat().st_size
    trained = load_trained(run, task.name)
    size = trained.summary.size_bytes
    pipe = trained.pipeline
    return "sklearn pipeline (not exported)", \
        lambda t: trained.labels[int(pipe.predict_proba([t])[0].argmax())], size


def bench_task(bp, run: Path, task: Task, models_dir: Path, queries: int) -> list[dict]:
    labels = task.label_names
    train = load_split(require_stage_output(run, "refine", task.name, "train.jsonl"), labels)
    test = load_split(require_stage_output(run, "refine", task.name, "test.jsonl"), labels)
    exam = load_exam(bp.path(task.exam), labels)
    dev = load_real(bp, task, "dev")
    spec = load_trained(run, task.name).spec
    test_gold = [labels[i] for i in test.y]
    probe = exam["text"].tolist() + test.texts
    rows = []
    common = (exam, test, test_gold, labels, probe, queries, dev)

    source, ours, size = our_predictor(run, task, models_dir)
    rows.append(_row(task.name, f"ours: {source}", ours, size, *common))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        model, path = train_fasttext(train.texts, [labels[i] for i in train.y], spec, tmp)
        fit_s = time.perf_counter() - t0
        model.save_model(str(tmp / "model.bin"))
        rows.append(_row(task.name, f"fastText .bin (fit {fit_s:.1f}s)",
                         fasttext_predictor(model, spec, labels), (tmp / "model.bin").stat().st_size,
                         *common))
        model.quantize(input=str(path), qnorm=True, retrain=True, cutoff=50_000, thread=1)
        model.save_model(str(tmp / "model.ftz"))
        rows.append(_row(task.name, "fastText .ftz (quantised)",
                         fasttext_predictor(model, spec, labels), (tmp / "model.ftz").stat().st_size,
                         *common))
        t0 = time.perf_counter()
        mlp, mlp_size = mlp_predictor(train.texts, labels, train.y, spec, bp.spec.train.seed,
                                      task.name, tmp)
        fit_s = time.perf_counter() - t0
        rows.append(_row(task.name, f"tfidf_mlp, hidden {MLP_PARAMS['hidden']}, no budget "
                         f"(fit {fit_s:.1f}s)", mlp, mlp_size, *common))
    t0 = time.perf_counter()
    original = train_original_recipe(train.texts, [labels[i] for i in train.y])
    fit_s = time.perf_counter() - t0
    import pickle

    rows.append(_row(task.name, f"original recipe (fit {fit_s:.1f}s)",
                     lambda t: str(original.predict([t])[0]), len(pickle.dumps(original)),
                     *common))
    return rows


def _row(task, name, predict, size, exam, test, test_gold, labels, probe, queries, dev) -> dict:
    exam_acc, _ = score(predict, exam["text"].tolist(), exam["gold"].tolist(), labels) \
        if len(exam) else (float("nan"), float("nan"))
    test_acc, test_f1 = score(predict, test.texts, test_gold, labels)
    dev_acc, _ = score(predict, [r.text for r in dev], [r.label for r in dev], labels) \
        if dev else (float("nan"), float("nan"))
    median, p99 = latency_us(predict, probe, queries)
    dev_correct = round(dev_acc * len(dev)) if dev else 0
    return {"task": task, "model": name, "dev_acc": dev_acc, "dev_n": len(dev),
            "dev_correct": dev_correct,
            "dev_acc_ci": wilson_interval(dev_correct, len(dev)) if dev
            else (float("nan"), float("nan")),
            "exam_acc": exam_acc, "exam_n": len(exam),
            "exam_correct": round(exam_acc * len(exam)) if len(exam) else 0,
            "test_acc": test_acc, "test_macro_f1": test_f1, "size_kib": size / 1024,
            "latency_median_us": median, "latency_p99_us": p99}


def format_table(rows: list[dict]) -> str:
    header = ("| task | model | real-text dev acc [95% CI] | exam acc | test acc "
              "| test macro-F1 | size KiB | latency median µs | latency p99 µs |")
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        low, high = r["dev_acc_ci"]
        dev = (f"{r['dev_acc']:.1%} [{low:.1%}, {high:.1%}] ({r['dev_n']})" if r["dev_n"]
               else "n/a")
        lines.append(
            f"| {r['task']} | {r['model']} | {dev} | {r['exam_acc']:.1%} ({r['exam_n']}) "
            f"| {r['test_acc']:.1%} | {r['test_macro_f1']:.4f} | {r['size_kib']:,.1f} "
            f"| {r['latency_median_us']:,.0f} | {r['latency_p99_us']:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("blueprint", nargs="?", default="text_classification")
    ap.add_argument("--run-dir", default="",
                    help="run folder or id; default: the latest complete run")
    ap.add_argument("--models-dir", default=str(MODELS_DIR))
    ap.add_argument("--tasks", nargs="*", help="default: every task of the blueprint")
    ap.add_argument("--latency-queries", type=int, default=1000)
    ap.add_argument("--json", action="store_true", help="also print the rows as JSON")
    ap.add_argument("--seeds", type=parse_seeds, default="",
                    help="comma list: forge a seeded copy per seed, measure each, then pool the "
                         "dev accuracy over the seeds (--run-dir and --models-dir do not apply)")
    args = ap.parse_args(argv)

    bp = load_blueprint(args.blueprint)
    if args.seeds:
        if args.run_dir:
            ap.error("--seeds forges its own runs: leave out --run-dir")
        by_seed = seeded_rows(args.blueprint, args.seeds, args.tasks, args.latency_queries)
        print("\n" + "\n".join(pooled_table(by_seed)))
        if args.json:
            print(json.dumps(by_seed, ensure_ascii=False, default=_jsonable))
        return 0
    run = resolve_run_dir(bp.name, args.run_dir or latest_run_dir(bp.name))
    rows = run_rows(bp, run, args.tasks, Path(args.models_dir), args.latency_queries)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, default=_jsonable))
    return 0


def _jsonable(x):
    return float(np.asarray(x))


def run_rows(bp, run: Path, task_names: list[str] | None, models_dir: Path,
             latency_queries: int) -> list[dict]:
    """Every task's rows for one run, printed as one table."""
    tasks = [bp.task(t) for t in task_names] if task_names else bp.tasks
    rows = []
    for task in tasks:
        rows += bench_task(bp, run, task, models_dir, latency_queries)
    refined = RefineSummary.load(run, tasks[0].name)
    print(f"run: {run}   (train rows of {tasks[0].name}: {refined.train_rows})")
    print(f"fastText: {json.dumps(FASTTEXT_PARAMS)}")
    print(format_table(rows), flush=True)
    return rows


def seeded_rows(blueprint: str, seeds: list[int], task_names: list[str] | None,
                latency_queries: int) -> dict[int, list[dict]]:
    """Forge a seeded copy of ``blueprint`` per seed and measure it: ``{seed: rows}``."""
    out = {}
    with scratch_dir("bench-baselines-") as tmp:
        for seed in seeds:
            bp_dir, result = forge_seeded(blueprint, seed, tmp)
            print(f"\n## seed {seed}")
            out[seed] = run_rows(load_blueprint(bp_dir), result.run_dir, task_names,
                                 tmp / f"seed-{seed}" / "models", latency_queries)
    return out


def model_key(name: str) -> str:
    """A row's model name without its fit time: ``"fastText .bin (fit 1.7s)"`` → ``"fastText .bin"``."""
    return re.sub(r"\s*\(fit [^)]*\)", "", name)


def pooled_table(by_seed: dict[int, list[dict]]) -> list[str]:
    """Dev accuracy per seed and pooled over the seeds, per task and model (markdown).

    Pooled accuracy is correct answers over cases across the seeds (every seed scores the same
    dev texts, so this is the mean); ``>= ours`` counts the seeds at which the model's dev
    accuracy is at least the first row's (ours) of the same task and seed ("—" on ours).
    """
    seeds = list(by_seed)
    out = ["| task | model | " + " | ".join(f"dev, seed {s}" for s in seeds)
           + " | dev pooled [95% CI] | exam pooled | seeds >= ours |",
           "|---|---|" + "---:|" * (len(seeds) + 3)]
    keys = list(dict.fromkeys((r["task"], model_key(r["model"])) for s in seeds
                              for r in by_seed[s]))
    for task, model in keys:
        per_seed = {s: next((r for r in by_seed[s]
                             if (r["task"], model_key(r["model"])) == (task, model)), None)
                    for s in seeds}
        ours = {s: next(r for r in by_seed[s] if r["task"] == task) for s in seeds}
        cells, dev_k, dev_n, exam_k, exam_n, at_least = [], 0, 0, 0, 0, 0
        for s, r in per_seed.items():
            if r is None or not r["dev_n"]:
                cells.append("n/a")
                continue
            cells.append(f"{r['dev_acc']:.1%}")
            dev_k, dev_n = dev_k + r["dev_correct"], dev_n + r["dev_n"]
            exam_k, exam_n = exam_k + r["exam_correct"], exam_n + r["exam_n"]
            at_least += r["dev_correct"] >= ours[s]["dev_correct"]
        low, high = wilson_interval(dev_k, dev_n)
        pooled = f"{dev_k / dev_n:.1%} [{low:.1%}, {high:.1%}]" if dev_n else "n/a"
        exam = f"{exam_k / exam_n:.1%}" if exam_n else "n/a"
        is_ours = all(r is ours[s] for s, r in per_seed.items())
        versus = "—" if is_ours else f"{at_least} of {len(seeds)}"
        out.append(f"| {task} | {model} | " + " | ".join(cells)
                   + f" | {pooled} | {exam} | {versus} |")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
