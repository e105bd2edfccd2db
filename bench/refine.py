"""Benchmark of the refine stage: rows per second for 10k, 100k and 300k synthetic rows.

    .venv/bin/python bench/refine.py                 # 10k, 100k, 300k; median of 3/3/1 runs
    .venv/bin/python bench/refine.py --sizes 10000 --repeats 5
    .venv/bin/python bench/refine.py --profile 100000   # where the time goes (cProfile)

Synthetic rows imitate generated data: template sentences with slot fills (so there are
exact duplicates and template chains), 5% long one-character variants of earlier rows
(near-duplicates), two labels in a 60/40 mix, a
share of trailing question marks, a few invalid labels, empty rows and exam copies.
The exam probe (a model fit) is not part of the timing; everything in ``refine_rows``
is: normalisation, MinHash, both LSH indexes, clustering, the grouped split and its
exact leak check, balance, the shortcut audit.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from foundry.blueprint import Label, Refine, Task  # noqa: E402
from foundry.refine import refine_rows  # noqa: E402
from foundry.summaries import RefineSummary  # noqa: E402

TASK = Task(
    name="is_question",
    labels=[Label(name="Question", definition="asks"), Label(name="Statement", definition="says")],
    constitution="c.md",
    exam="exam.jsonl",
)
_CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 2500)]
_QUESTION = ["{a}{b}怎么样", "{a}的{b}是什么", "你知道{a}{b}吗", "{a}{b}在哪里", "为什么{a}会{b}",
             "{a}和{b}哪个好", "{a}{b}多少钱", "请问{a}{b}几点开始"]
_STATEMENT = ["帮我查一下{a}{b}", "把{a}{b}记下来", "提醒我{a}{b}", "{a}{b}挺好的",
              "打开{a}{b}", "我觉得{a}{b}不错", "明天去{a}看{b}", "{a}{b}已经处理完了"]


def synthetic_rows(n: int, seed: int = 0) -> tuple[list[dict], list[str]]:
    """``n`` generated-looking rows and a 200-text exam (some of it copied into the rows)."""
    rnd = random.Random(seed)
    vocab = ["".join(rnd.choice(_CJK) for _ in range(rnd.randint(1, 4))) for _ in range(4000)]
    rows: list[dict] = []
    while len(rows) < n:
        question = rnd.random() < 0.6
        template = rnd.choice(_QUESTION if question else _STATEMENT)
        text = template.format(a=rnd.choice(vocab), b=rnd.choice(vocab))
        if rnd.random() < 0.3:
            text += "".join(rnd.choice(_CJK) for _ in range(rnd.randint(1, 8)))
        if rows and rnd.random() < 0.05:
            # A one-character variant of an earlier row, lengthened so it is a near-duplicate.
            prev = rows[rnd.randrange(len(rows))]
            base = prev["text"].rstrip("？?。") + "".join(rnd.choice(_CJK) for _ in range(40))
            cut = rnd.randrange(len(base))
            rows.append({**prev, "text": base})
            text, question = base[:cut] + rnd.choice(_CJK) + base[cut + 1 :], prev["label"] == "Question"
            template = prev["category"]
        if question and rnd.random() < 0.7:
            text += rnd.choice("？?")
        elif not question and rnd.random() < 0.3:
            text += "。"
        rows.append({"text": text, "label": "Question" if question else "Statement",
                     "category": template[:4], "source": rnd.choice(("grammar", "llm"))})
        if len(rows) >= n:
            break
    rows = rows[:n]
    for i in range(0, n, 997):
        rows[i] = {**rows[i], "label": "Unknown"}
    for i in range(1, n, 1499):
        rows[i] = {**rows[i], "text": "  "}
    exam = [rows[i]["text"] for i in range(2, n, max(n // 200, 1))][:200]
    return rows, exam


def run_once(rows: list[dict], exam: list[str], cfg: Refine) -> tuple[float, RefineSummary]:
    start = time.perf_counter()
    result = refine_rows(rows, TASK, cfg, exam_texts=exam, progress=False)
    return time.perf_counter() - start, result.summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 300_000])
    parser.add_argument("--repeats", type=int, nargs="+", default=None,
                        help="runs per size (default 3, and 1 for sizes above 200k)")
    parser.add_argument("--profile", type=int, default=0, help="profile one run of this size")
    args = parser.parse_args(argv)
    cfg = Refine()
    if args.profile:
        import cProfile
        import pstats

        rows, exam = synthetic_rows(args.profile)
        cProfile.runctx("run_once(rows, exam, cfg)", globals(), locals(), "/tmp/refine.prof")
        pstats.Stats("/tmp/refine.prof").sort_stats("cumulative").print_stats(30)
        return 0
    repeats = args.repeats or [3 if n <= 200_000 else 1 for n in args.sizes]
    if len(repeats) == 1:
        repeats = repeats * len(args.sizes)
    print(f"refine_rows, default Refine config ({cfg.num_perm} permutations, dedup "
          f"{cfg.dedup_threshold}, split {cfg.split_threshold}); median of N runs")
    print(f"{'rows':>8} {'N':>2} {'median s':>9} {'rows/s':>9} {'s/100k':>7} "
          f"{'train':>7} {'test':>6} {'near-dup':>8} {'exam':>5}")
    previous = None
    for n, k in zip(args.sizes, repeats, strict=True):
        rows, exam = synthetic_rows(n)
        times, summary = [], None
        for _ in range(k):
            t, summary = run_once(rows, exam, cfg)
            times.append(t)
        med = statistics.median(times)
        removed = summary.removed_by_reason
        print(f"{n:>8} {k:>2} {med:>9.2f} {n / med:>9.0f} {med / n * 1e5:>7.2f} "
              f"{summary.train_rows:>7} {summary.test_rows:>6} "
              f"{removed.get('near_duplicate', 0):>8} {removed.get('exam_overlap', 0):>5}",
              flush=True)
        if previous:
            pn, pt = previous
            print(f"{'':>8}    x{n / pn:.0f} rows -> x{med / pt:.1f} time")
        previous = (n, med)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
