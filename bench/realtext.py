"""How well does the recipe generalise to real text it has not seen? Grouped CV and
left-out-corpus runs over the blueprint's real-text pool (never its dev split).

    .venv/bin/python bench/realtext.py                          # default blueprint, latest run
    .venv/bin/python bench/realtext.py --tasks is_question --weights 1 2 3

For every task it reads the latest run's refined training split (the generated rows; the
real rows in it are dropped and taken from the blueprint's ``real`` file instead) and prints:

- **grammar → real**: a model trained on the generated rows alone, scored on every real row;
- **grouped CV**: the real pool cut in folds that keep a dialogue and its near-duplicates
  together; every fold model also trains on all generated rows; out-of-fold accuracy;
- **left-out corpus** (a proxy for sources the project has never seen): for each corpus
  family of the pool (MASSIVE, KdConv, …), a model trained without it, scored on it, with
  the coverage and precision of confident answers at a threshold chosen on the *other*
  corpora's dev rows, without and with the unfamiliarity gate
  (``evaluate.familiarity_quantile`` of those dev rows).

Every model is the blueprint's recipe with the parameters the run's train stage chose
(``train/<task>/train.json``; else the first grid point), unpruned and uncalibrated; ``--weights`` lists the weights of real rows to
compare. The dev split only sets the thresholds; nothing here reads the exam.

``--param C=64`` overrides a chosen parameter and ``--feature max_n=4`` a text-spec field
(``foundry.textspec.TextSpec``) for every model of the bench, so a recipe change is measured
on the same generated rows:

    .venv/bin/python bench/realtext.py --param C=64 --run-dir <run>

A grammar change redraws every generated row, and one draw moves the left-out mean by about
a point, so compare grammars over several draws:

    .venv/bin/python bench/realtext.py --seeds 42,7,1 --tasks confirmation

forges a copy of the blueprint per seed (every seed set to it, as ``bench/seeds.py`` does;
stages generate, refine and train, in a temporary folder) and prints, after each seed's
table, one row per task and seed and the mean over the seeds: grammar → real, grouped CV,
the left-out mean (weighted by corpus size) and the confident errors of the left-out runs;
then one row per task and corpus family, its left-out accuracy averaged over the seeds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from sklearn.model_selection import StratifiedGroupKFold  # noqa: E402

from bench.scratch import scratch_dir  # noqa: E402
from bench.seeds import forge_seeded, parse_seeds  # noqa: E402
from foundry import minhash as mh  # noqa: E402
from foundry.blueprint import Task, load_blueprint  # noqa: E402
from foundry.evaluate import choose_threshold  # noqa: E402
from foundry.familiarity import MIN_ORDER, gate_for, unfamiliarity_many  # noqa: E402
from foundry.realtext import REAL_SOURCE, RealRow, corpus_family, load_real  # noqa: E402
from foundry.runs import (  # noqa: E402
    latest_run_dir,
    read_json,
    require_stage_output,
    resolve_run_dir,
)
from foundry.textspec import Analyzer, TextSpec, normalize  # noqa: E402
from foundry.train import load_split, text_spec  # noqa: E402
from foundry.trainers import get_trainer, make_pipeline  # noqa: E402

#: Near-duplicate threshold (character-bigram Jaccard) that keeps variants in one fold.
GROUP_THRESHOLD = 0.5


def pool_groups(rows: list[RealRow]) -> np.ndarray:
    """Group ids: the turns of one dialogue (``ref`` ``dialogue:turn``) and near-duplicates."""
    uf = mh.UnionFind(len(rows))
    first: dict[tuple[str, str], int] = {}
    for i, r in enumerate(rows):
        if ":" in r.ref:
            key = (r.corpus, r.ref.split(":")[0])
            if key in first:
                uf.union(i, first[key])
            else:
                first[key] = i
    sets = [mh.shingles(normalize(r.text, TextSpec(max_chars=10**6)), 2) for r in rows]
    sigs = mh.signatures(sets, num_perm=64, seed=1, progress=False)
    buckets = mh.lsh_buckets(sigs, threshold=GROUP_THRESHOLD, num_perm=64, progress=False)
    for edge in mh.verified_edges(buckets, sets, GROUP_THRESHOLD):
        uf.union(edge.a, edge.b)
    return np.asarray(uf.labels())


class Recipe:
    """The blueprint's trainer with the run's chosen parameters, fitted from texts."""

    def __init__(self, bp, weight: float, params: dict, features: dict | None = None,
                 task: Task | None = None) -> None:
        cfg = bp.spec.train
        self.trainer = get_trainer(cfg.trainer)
        self.spec = replace(text_spec(bp, task), **(features or {}))
        self.sublinear = (bp.features(task) if task else cfg.features).sublinear_tf
        self.params = params
        self.seed = cfg.seed
        self.weight = weight

    def fit(self, texts: list[str], y: np.ndarray, real: np.ndarray):
        pipe = make_pipeline(self.trainer, self.spec, self.sublinear, self.params, self.seed)
        return pipe.fit(texts, y, clf__sample_weight=np.where(real, self.weight, 1.0))


def confident(proba: np.ndarray, y: np.ndarray, threshold: float, admitted: np.ndarray
              ) -> tuple[float, float, int]:
    """Coverage, precision and count of confident errors of answers above ``threshold``."""
    c = (proba.max(axis=1) >= threshold) & admitted
    ok = proba.argmax(axis=1) == y
    return float(c.mean()), float(ok[c].mean()) if c.any() else float("nan"), int((c & ~ok).sum())


@dataclass
class TaskBench:
    """One task's measures at one real-row weight, and its table rows."""

    lines: list[str]
    grammar_real: float = float("nan")
    grouped_cv: float = float("nan")
    #: (corpus family, rows, accuracy, confident errors without the gate) per left-out run
    left_out: list[tuple[str, int, float, int]] = field(default_factory=list)

    @property
    def left_out_mean(self) -> float:
        """The left-out accuracy over all left-out rows (each run weighted by its size)."""
        n = sum(rows for _, rows, _, _ in self.left_out)
        return sum(rows * acc for _, rows, acc, _ in self.left_out) / n if n else float("nan")

    @property
    def left_out_errors(self) -> int:
        return sum(errors for _, _, _, errors in self.left_out)


def parse_overrides(pairs: list[str] | None, what: str, allowed: set[str] | None = None
                    ) -> dict[str, int | float | bool]:
    """``["C=64", "sublinear_tf=false"]`` → ``{"C": 64, "sublinear_tf": False}``.

    Values are read as YAML scalars, as in ``blueprint.yaml``; ``allowed`` (when given) lists
    the keys that may be set. Raises ``SystemExit`` naming ``what`` and the pair.
    """
    out: dict[str, int | float | bool] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SystemExit(f"--{what} {pair!r}: expected KEY=VALUE, e.g. C=64")
        if allowed is not None and key not in allowed:
            raise SystemExit(f"--{what} {key!r}: not one of {', '.join(sorted(allowed))}")
        value = yaml.safe_load(raw)
        if not isinstance(value, (int, float, bool)):
            raise SystemExit(f"--{what} {pair!r}: the value must be a number, true or false")
        out[key] = value
    return out


#: The text-spec fields ``--feature`` may set.
FEATURE_FIELDS = {f.name for f in fields(TextSpec)}


def bench_task(bp, task: Task, run: Path, weight: float, quantile: float,
               params: dict | None = None, features: dict | None = None) -> TaskBench:
    """One task's grammar → real, grouped CV and left-out runs; ``params`` and ``features``
    override the run's chosen parameters and the blueprint's text spec."""
    labels = task.label_names
    split = load_split(require_stage_output(run, "refine", task.name, "train.jsonl"), labels)
    keep = [s != REAL_SOURCE for s in split.sources] if split.sources else [True] * len(split)
    gen_texts = [t for t, k in zip(split.texts, keep, strict=True) if k]
    gen_y = split.y[np.asarray(keep)]
    if len(set(gen_y.tolist())) < 2:
        raise SystemExit(f"{run}: the generated training rows of {task.name} hold one label "
                         "only; a model of the generated rows needs both (forge more rows: "
                         "--target)")
    pool, dev = load_real(bp, task, "real"), load_real(bp, task, "dev")
    if not pool:
        return TaskBench([f"| {task.name} | (no real pool: tasks[].real) |"])
    pool_y = np.asarray([labels.index(r.label) for r in pool])
    dev_y = np.asarray([labels.index(r.label) for r in dev])
    chosen = run / "train" / task.name / "train.json"
    params = {**(read_json(chosen)["best_params"] if chosen.is_file() else {
        k: v[0] for k, v in bp.spec.train.grid.items()}), **(params or {})}
    recipe = Recipe(bp, weight, params, features, task)
    lines = []
    left_out = []

    def fit(pool_idx: np.ndarray):
        texts = gen_texts + [pool[i].text for i in pool_idx]
        y = np.r_[gen_y, pool_y[pool_idx]]
        real = np.r_[np.zeros(len(gen_texts), bool), np.ones(len(pool_idx), bool)]
        return recipe.fit(texts, y, real)

    t0 = time.perf_counter()
    alone = fit(np.zeros(0, dtype=int)).predict_proba([r.text for r in pool])
    grammar_acc = float((alone.argmax(1) == pool_y).mean())
    oof = np.zeros((len(pool), len(labels)))
    groups = pool_groups(pool)
    folds = StratifiedGroupKFold(5, shuffle=True, random_state=bp.spec.train.seed)
    for tr, te in folds.split(np.zeros(len(pool)), pool_y, groups):
        oof[te] = fit(tr).predict_proba([pool[i].text for i in te])
    cv_acc = float((oof.argmax(1) == pool_y).mean())
    lines.append(f"| {task.name} | w={weight:g} {params} | all | {len(pool)} | {grammar_acc:.4f} "
                 f"| {cv_acc:.4f} | | | | |")
    fams = np.asarray([corpus_family(r.corpus) for r in pool])
    dev_fams = np.asarray([corpus_family(r.corpus) for r in dev])
    target = bp.spec.evaluate.target_precision
    for fam in sorted(set(fams)):
        held = np.flatnonzero(fams == fam)
        model = fit(np.flatnonzero(fams != fam))
        vocab = model.named_steps["tfidf"].vocabulary_
        analyzer = Analyzer(recipe.spec)
        others = np.flatnonzero(dev_fams != fam)
        p_dev = model.predict_proba([dev[i].text for i in others])
        u_dev = unfamiliarity_many([dev[i].text for i in others], analyzer, vocab, MIN_ORDER)
        gate = gate_for(u_dev, quantile)
        p = model.predict_proba([pool[i].text for i in held])
        u = unfamiliarity_many([pool[i].text for i in held], analyzer, vocab, MIN_ORDER)
        y = pool_y[held]
        plain_t = choose_threshold(p_dev, dev_y[others], target)
        admitted_dev = u_dev <= gate.max_unfamiliar
        gated_t = choose_threshold(np.where(admitted_dev[:, None], p_dev, p_dev * 1e-12),
                                   dev_y[others], target)
        plain = confident(p, y, plain_t, np.ones(len(y), bool))
        gated = confident(p, y, gated_t, u <= gate.max_unfamiliar)
        acc = float((p.argmax(1) == y).mean())
        left_out.append((fam, len(held), acc, plain[2]))
        lines.append(
            f"| {task.name} | w={weight:g} | left out: {fam} | {len(held)} | | | {acc:.4f} "
            f"| {plain[0]:.1%} / {plain[1]:.4f} ({plain[2]}) "
            f"| {gated[0]:.1%} / {gated[1]:.4f} ({gated[2]}) |")
    lines[-1] += f"  <!-- {time.perf_counter() - t0:.0f}s -->"
    return TaskBench(lines, grammar_acc, cv_acc, left_out)


def seeded_runs(blueprint: str, seeds: list[int], folder: Path, target: int | None):
    """Yield ``(seed, blueprint, run folder)``: ``bench/seeds.py``'s seeded copy of
    ``blueprint`` per seed, forged through train in ``folder``."""
    for seed in seeds:
        bp_dir, result = forge_seeded(blueprint, seed, folder, steps="generate,refine,train",
                                      target=target)
        yield seed, load_blueprint(bp_dir), result.run_dir


def measure(runs, task_names: list[str] | None, weights: list[float] | None,
            params: dict | None = None, features: dict | None = None
            ) -> list[tuple[str, float, object, TaskBench]]:
    """Print the table of every ``(key, blueprint, run)`` (``runs`` may be a generator: each
    run is measured as it comes); return ``(task, weight, key, bench)`` rows."""
    rows = []
    for key, bp, run in runs:
        quantile = bp.spec.evaluate.familiarity_quantile
        print(f"{key}: {run}; unfamiliarity gate at the {quantile:g} quantile of the other "
              "corpora's dev rows; thresholds for target precision "
              f"{bp.spec.evaluate.target_precision} on those dev rows"
              + (f"; overrides {params or {}} {features or {}}" if params or features else ""))
        print("| task | real weight | rows | n | grammar → real acc | grouped CV acc "
              "| left-out acc | confident: coverage / precision (errors) | with the gate |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|")
        for task in [bp.task(t) for t in task_names] if task_names else bp.tasks:
            for w in weights or [bp.source_weights(task).get(REAL_SOURCE, 1.0)]:
                bench = bench_task(bp, task, run, w, quantile, params, features)
                print("\n".join(bench.lines), flush=True)
                rows.append((task.name, w, key, bench))
    return rows


def seed_table(rows: list[tuple[str, float, object, TaskBench]]) -> list[str]:
    """Rows ``(task, weight, seed, bench)`` as one table, then the mean per task and weight."""
    out = ["| task | real weight | seed | grammar → real | grouped CV | left-out (weighted) "
           "| confident errors, left-out runs |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, weight, seed, b in rows:
        out.append(f"| {name} | {weight:g} | {seed} | {b.grammar_real:.4f} | {b.grouped_cv:.4f} "
                   f"| {b.left_out_mean:.4f} | {b.left_out_errors} |")
    for name, weight in dict.fromkeys((n, w) for n, w, _, _ in rows):
        group = [b for n, w, _, b in rows if (n, w) == (name, weight)]
        out.append(
            f"| {name} | {weight:g} | mean of {len(group)} "
            f"| {statistics.fmean(b.grammar_real for b in group):.4f} "
            f"| {statistics.fmean(b.grouped_cv for b in group):.4f} "
            f"| {statistics.fmean(b.left_out_mean for b in group):.4f} "
            f"| {statistics.fmean(b.left_out_errors for b in group):.1f} |")
    return out


def family_table(rows: list[tuple[str, float, object, TaskBench]]) -> list[str]:
    """Each left-out corpus family's accuracy per task and weight, averaged over the seeds.

    A task's families differ in kind (replies to an assistant's question beside replies
    between people), so a change is read per family as well as in the weighted mean.
    """
    out = ["| task | real weight | left out | rows | accuracy, mean over seeds | per seed "
           "| confident errors, mean |", "|---|---:|---|---:|---:|---|---:|"]
    for name, weight in dict.fromkeys((n, w) for n, w, _, _ in rows):
        runs = [b.left_out for n, w, _, b in rows if (n, w) == (name, weight)]
        for fam in sorted({f for run in runs for f, *_ in run}):
            seen = [(size, acc, errors) for run in runs for f, size, acc, errors in run
                    if f == fam]
            accs = [acc for _, acc, _ in seen]
            out.append(f"| {name} | {weight:g} | {fam} | {seen[0][0]} | {statistics.fmean(accs):.4f} "
                       f"| {' / '.join(f'{a:.4f}' for a in accs)} "
                       f"| {statistics.fmean(e for _, _, e in seen):.1f} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("blueprint", nargs="?", default="text_classification")
    ap.add_argument("--run-dir", default="", help="run folder or id; default: the latest run")
    ap.add_argument("--tasks", nargs="*", help="default: every task with a real pool")
    ap.add_argument("--seeds", type=parse_seeds, default="",
                    help="comma list: forge a seeded copy per seed (generate, refine, train) "
                         "and measure each; default: measure the run")
    ap.add_argument("--target", type=int, default=None,
                    help="with --seeds: generated rows per task (default: the blueprint's)")
    ap.add_argument("--weights", nargs="*", type=float, default=None,
                    help="weights of real rows to compare, for every task (default: each "
                         "task's own, tasks[].source_weights over train.source_weights)")
    ap.add_argument("--param", action="append", metavar="KEY=VALUE",
                    help="override a chosen trainer parameter for every model, e.g. C=64")
    ap.add_argument("--feature", action="append", metavar="KEY=VALUE",
                    help="override a text-spec field for every model, e.g. max_n=4")
    args = ap.parse_args(argv)
    params = parse_overrides(args.param, "param")
    features = parse_overrides(args.feature, "feature", FEATURE_FIELDS)
    bp = load_blueprint(args.blueprint)
    if args.seeds:
        with scratch_dir("realtext-seeds-") as tmp:
            rows = measure(seeded_runs(args.blueprint, args.seeds, tmp, args.target),
                           args.tasks, args.weights, params, features)
        print("\n" + "\n".join(seed_table(rows)))
        print("\n" + "\n".join(family_table(rows)))
        return 0
    run = resolve_run_dir(bp.name, args.run_dir or latest_run_dir(bp.name))
    measure([("run", bp, run)], args.tasks, args.weights, params, features)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
