"""How fast is the shipped runtime? Side by side with fastText and scikit-learn, one process.

    .venv/bin/python bench/runtime.py                    # forged models/ + the latest run
    .venv/bin/python bench/runtime.py --rounds 9         # more rounds, steadier medians
    .venv/bin/python bench/runtime.py --tiny             # no forge needed: tiny test models

Two sets of texts: a fixed list of assistant inputs (:data:`INPUTS`: short and long, Chinese
and mixed), and real human-written text with a user-like length distribution, the MASSIVE
zh-CN validation utterances (``--real-texts``, default
``<repo>/../shared/datasets/massive_zh_cn/validation.csv``; never the test split), reported by
length bucket. For each default task (``is_question``, ``confirmation``) it measures

- single-query latency, p50 and p99 of one-text calls (``MicroModel.predict``; the pipeline's
  ``predict_proba([text])``; fastText's ``predict``),
- batch throughput in texts/s of ``predict_many`` (resp. ``predict_proba`` on a list,
  fastText's list ``predict``) at batch sizes 1, 32 and 1024,

for these engines:

- ``foundry native``: :class:`foundry.runtime.MicroModel` on its native fast path (the Rust
  crate, ``make native``; the default when built), plus ``foundry native proba``, its
  ``predict_proba`` (an ``[N, K]`` array instead of ``Prediction`` objects) for batches;
- ``foundry numpy`` / ``foundry ort``: :class:`foundry.runtime.MicroModel` on the forged pair,
  backend ``numpy`` (the pure-Python default for linear graphs) and ``onnxruntime`` (the
  reference);
- ``foundry-rt CLI``: the Rust CLI (``make rust``) as another program uses it, one process
  kept open: a single query is one line written to its stdin and one JSON line read back (the
  pipe round trip), a batch is written by a thread while the answers are read;
- ``sklearn``: the train stage's pipeline (``runs/<bp>/<run>/train/<task>/model.joblib``);
- ``fastText``: ``fasttext-wheel`` trained on the run's ``refine/<task>/train.jsonl``, on the
  raw text with character n-grams 1-3 (``minn=1, maxn=3``, as our features), one thread. Its
  ``predict`` is a copy of ``fasttext.FastText._FastText.predict`` with the one NumPy 2 fix
  (``np.asarray`` for ``np.array(copy=False)``), asking for every label's probability.

``--many-labels RUN_DIR MODELS_DIR`` adds the tasks of a benchmark forge (``bench/intents.py``
prints the folders), e.g. the 150-label ``intent_clinc``, as more rows of the same tables, on the
same texts. ``--real-texts`` may be given more than once (a real-text table per set; CSV with a
``text`` column or JSONL with a ``text`` field): an English many-label model does most of its
work on English text, so measure it there too, e.g.
``--real-texts <shared>/datasets/massive_zh_cn/validation.csv --real-texts
blueprints/clinc150/data/val.jsonl``.

Every figure is the median over ``--rounds`` rounds in this one process, engines interleaved
round by round, so that the machine's load hits them alike. A second table runs each engine
in fresh processes: import time, time to load both default models, and peak RSS.
Numeric libraries are held to one thread (the targets are per core).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before NumPy loads: one core, as the targets say

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.scratch import scratch_dir  # noqa: E402

TASKS = ("is_question", "confirmation")
BATCH_SIZES = (1, 32, 1024)
RUST_CLI = ROOT / "runtimes" / "rust" / "target" / "release" / "foundry-rt"
#: Length buckets (characters) of the real-text table: [low, high).
BUCKETS = ((0, 8), (8, 16), (16, 24), (24, 32), (32, 10_000))
#: shared/ sits beside the clone (CI, /work/main); a worktree deeper down finds /work/shared.
REAL_TEXTS = next((p for p in (ROOT.parent / "shared", Path("/work/shared"))
                   if (p / "datasets").is_dir()), ROOT.parent / "shared"
                  ) / "datasets" / "massive_zh_cn" / "validation.csv"
FASTTEXT_PARAMS = {"epoch": 30, "lr": 0.5, "dim": 50, "minn": 1, "maxn": 3, "wordNgrams": 1,
                   "bucket": 200_000, "loss": "softmax", "thread": 1, "seed": 42, "verbose": 0}

#: Realistic inputs of an offline assistant: short and long, Chinese, mixed with English,
#: digits, full-width punctuation and emoji.
INPUTS: tuple[str, ...] = (
    "好的", "嗯", "不要", "ok", "可以", "取消吧", "对", "算了", "行啊", "好滴👌",
    "今天天气怎么样？", "明天会下雨吗", "几点了", "帮我打开客厅的灯", "设个七点的闹钟",
    "你叫什么名字？", "播放周杰伦的歌", "提醒我明天交报告", "这个多少钱", "为什么天是蓝的",
    "是的，就这么办", "不用了谢谢", "等一下，我再想想", "好的，但是改成明天下午三点",
    "yes please 就发吧", "sure，没问题", "no no no 先别删", "为什么要删除它？",
    "帮我查一下从北京到上海的高铁，最好是明天上午出发的",
    "我觉得这部电影还可以，就是结尾有点仓促，你怎么看？",
    "你能不能给我讲讲黑洞是怎么形成的，还有它为什么连光都跑不出来",
    "把下周一上午十点的会议改到周二下午，然后通知一下项目组的所有人",
    "iPhone 15 Pro 和 Pixel 8 哪个拍照更好？",
    "帮我在 Google Calendar 里加一个 meeting，时间是 3pm",
    "明天 9:30 的 flight 还准时吗",
    "刚才那个 PDF 文件你帮我 share 给 Alice 了吗？",
    "ＯＫ，没问题！！！",
    "请问附近有没有24小时营业的药店？",
    "我今天跑了5公里，感觉还不错😄",
    "好吧好吧，那就按你说的来",
    "嗯嗯嗯，知道了知道了",
    "这个周末天气好的话我们去爬山，不好的话就在家看电影，你觉得呢",
    "Can you 帮我 translate 这句话 into English？",
    "what's the weather like in 深圳 tomorrow",
)


# -- engines -------------------------------------------------------------------------------


@dataclass
class Engine:
    """One way of answering: ``one(text)`` for single queries, ``many(texts)`` for batches."""

    name: str
    one: Callable[[str], object]
    many: Callable[[list[str]], object]
    #: Relative cost, to scale the number of calls per round (sklearn is ~100x slower).
    slow: bool = False
    #: Only measured in batches (a second batch API of an engine measured already).
    batch_only: bool = False


def foundry_engine(task: str, models_dir: Path, backend: str) -> Engine:
    from foundry.runtime import MicroModel

    model = MicroModel.load(task, models_dir=models_dir, backend=backend)
    short = {"numpy": "numpy", "onnxruntime": "ort", "native": "native"}[backend]
    return Engine(f"foundry {short}", model.predict, model.predict_many)


def native_proba_engine(task: str, models_dir: Path) -> Engine:
    from foundry.runtime import MicroModel

    model = MicroModel.load(task, models_dir=models_dir, backend="native")
    return Engine("foundry native proba", model.predict, model.predict_proba, batch_only=True)


class RustCli:
    """``foundry-rt`` kept running on pipes, as an application in another language uses it."""

    def __init__(self, task: str, models_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [str(RUST_CLI), "--models-dir", str(models_dir), "--task", task],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
        )
        # stdin unbuffered (each query leaves at once); stdout buffered: readline() on an
        # unbuffered pipe reads one byte per system call, which timed the reading of a
        # 151-label answer line (~4 KB) instead of the program (~4 ms a query).
        self.stdin, self.stdout = self.proc.stdin, io.BufferedReader(self.proc.stdout, 1 << 16)

    def one(self, text: str) -> bytes:
        self.stdin.write(text.encode() + b"\n")
        return self.stdout.readline()

    def many(self, texts: list[str]) -> list[bytes]:
        data = "".join(t + "\n" for t in texts).encode()
        writer = threading.Thread(target=self.stdin.write, args=(data,))
        writer.start()  # a large batch would fill both pipes if written before reading
        lines = [self.stdout.readline() for _ in texts]
        writer.join()
        return lines

    def close(self) -> None:
        self.stdin.close()
        self.proc.wait(timeout=30)


def rust_cli_engine(task: str, models_dir: Path, opened: list[RustCli]) -> Engine:
    cli = RustCli(task, models_dir)
    opened.append(cli)
    return Engine("foundry-rt CLI (pipe)", cli.one, cli.many)


def sklearn_engine(pipeline) -> Engine:
    return Engine("sklearn", lambda text: pipeline.predict_proba([text]), pipeline.predict_proba,
                  slow=True)


def fasttext_predict(model, text: str | list[str], k: int = -1, threshold: float = 0.0):
    """``fasttext.FastText._FastText.predict`` with its NumPy 2 bug fixed, nothing else."""
    def check(entry: str) -> str:
        if entry.find("\n") != -1:
            raise ValueError("predict processes one line at a time (remove '\\n')")
        return entry + "\n"

    if isinstance(text, list):
        return model.f.multilinePredict([check(t) for t in text], k, threshold, "strict")
    predictions = model.f.predict(check(text), k, threshold, "strict")
    probs, labels = zip(*predictions, strict=True) if predictions else ([], ())
    return labels, np.asarray(probs)


def train_fasttext(rows: Sequence[tuple[str, str]], folder: Path):
    """fastText on the raw texts (newlines flattened) with character n-grams 1-3."""
    import fasttext

    path = folder / "train.txt"
    with open(path, "w", encoding="utf-8") as fh:
        for text, label in rows:
            flat = " ".join(text.split("\n"))
            fh.write(f"__label__{label} {flat}\n")
    return fasttext.train_supervised(input=str(path), **FASTTEXT_PARAMS)


def fasttext_engine(model) -> Engine:
    return Engine("fastText", lambda text: fasttext_predict(model, text),
                  lambda texts: fasttext_predict(model, texts))


# -- measurements --------------------------------------------------------------------------


@dataclass
class Samples:
    """Per-round figures of one engine on one task; reported as medians over rounds."""

    p50_us: list[float] = field(default_factory=list)
    p99_us: list[float] = field(default_factory=list)
    throughput: dict[int, list[float]] = field(default_factory=dict)


def latency_round(one: Callable[[str], object], texts: Sequence[str], passes: int,
                  ) -> tuple[float, float]:
    """p50 and p99 microseconds of single calls over ``passes`` passes through ``texts``."""
    clock = time.perf_counter_ns
    times = []
    for _ in range(passes):
        for text in texts:
            start = clock()
            one(text)
            times.append(clock() - start)
    p50, p99 = np.percentile(np.asarray(times, dtype=np.float64), [50, 99])
    return p50 / 1000, p99 / 1000


def throughput_round(many: Callable[[list[str]], object], batches: list[list[str]]) -> float:
    """Texts per second over ``batches``: the median of the batches' own rates, so that the
    other processes of a busy machine (a preemption spoils one batch, not the round) count
    as little for a 0.5 ms batch as for a 5 µs single query (whose p50 is already robust)."""
    clock = time.perf_counter
    rates = []
    for batch in batches:
        start = clock()
        many(batch)
        rates.append(len(batch) / (clock() - start))
    return statistics.median(rates)


def make_batches(texts: Sequence[str], size: int, total: int) -> list[list[str]]:
    """``total // size`` (at least 1) batches of ``size`` texts cycling through ``texts``."""
    n = max(1, total // size)
    pool = [texts[i % len(texts)] for i in range(n * size)]
    return [pool[i * size:(i + 1) * size] for i in range(n)]


def measure(engines: list[Engine], texts: Sequence[str], rounds: int, texts_per_round: int,
            ) -> dict[str, Samples]:
    """Interleave the engines round by round; collect per-round figures."""
    samples = {e.name: Samples() for e in engines}
    for engine in engines:  # warm-up: lazy tables, caches, first-call allocations
        engine.many(list(texts))
        for text in texts:
            engine.one(text)
    for _ in range(rounds):
        for engine in engines:
            budget = texts_per_round // (50 if engine.slow else 1)
            s = samples[engine.name]
            passes = max(1, budget // len(texts))
            if not engine.batch_only:
                p50, p99 = latency_round(engine.one, texts, passes)
                s.p50_us.append(p50)
                s.p99_us.append(p99)
            for size in BATCH_SIZES:
                batches = make_batches(texts, size, max(budget, size))
                s.throughput.setdefault(size, []).append(throughput_round(engine.many, batches))
    return samples


def read_real_texts(path: Path) -> list[str]:
    """The ``text`` column of a MASSIVE-style CSV, or the ``text`` field of a JSONL file
    (CLINC150's ``val.jsonl`` in ``blueprints/clinc150/data``), one utterance per line."""
    import csv

    if path.suffix == ".jsonl":
        lines = path.read_text(encoding="utf-8").splitlines()
        return [" ".join(json.loads(line)["text"].split("\n")) for line in lines if line.strip()]
    with open(path, encoding="utf-8", newline="") as fh:
        return [" ".join(row["text"].split("\n")) for row in csv.DictReader(fh)]


def bucket_of(text: str) -> int:
    return next(i for i, (low, high) in enumerate(BUCKETS) if low <= len(text) < high)


@dataclass
class RealSamples:
    """Per-round p50 per length bucket and overall, and batch-1024 throughput."""

    bucket_p50_us: dict[int, list[float]] = field(default_factory=dict)
    p50_us: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)


def measure_real(engines: list[Engine], texts: list[str], rounds: int,
                 ) -> dict[str, RealSamples]:
    """One timed pass of single queries over ``texts`` and ~8k texts in batches of 1024 per
    engine and round, engines interleaved round by round."""
    clock = time.perf_counter_ns
    buckets = np.array([bucket_of(t) for t in texts])
    batches = make_batches(texts, 1024, 32 * 1024)
    samples = {e.name: RealSamples() for e in engines}
    for engine in engines:  # warm-up
        engine.many(texts[:1024])
        for text in texts[:256]:
            engine.one(text)
    for _ in range(rounds):
        for engine in engines:
            s = samples[engine.name]
            if not engine.batch_only:
                times = np.empty(len(texts))
                for i, text in enumerate(texts):
                    start = clock()
                    engine.one(text)
                    times[i] = clock() - start
                times /= 1000
                s.p50_us.append(float(np.median(times)))
                for b in range(len(BUCKETS)):
                    if (buckets == b).any():
                        s.bucket_p50_us.setdefault(b, []).append(float(np.median(times[buckets == b])))
            s.throughput.append(throughput_round(engine.many, batches))
    return samples


# -- fresh-process load time and memory ---------------------------------------------------

_LOAD_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
kind, models_dir, run_dir = sys.argv[1], sys.argv[2], sys.argv[3]
tasks = sys.argv[4:]
if kind.startswith("foundry"):
    from foundry.runtime import MicroModel
    t1 = time.perf_counter()
    backend = kind.split(":")[1]
    models = [MicroModel.load(t, models_dir=models_dir, backend=backend) for t in tasks]
    t2 = time.perf_counter()
    for m in models:
        m.predict("今天天气怎么样？")
elif kind == "sklearn":
    import joblib
    t1 = time.perf_counter()
    models = [joblib.load(f"{run_dir}/train/{t}/model.joblib") for t in tasks]
    t2 = time.perf_counter()
    for m in models:
        m["pipeline"].predict_proba(["今天天气怎么样？"])
else:
    import fasttext
    t1 = time.perf_counter()
    models = [fasttext.load_model(f"{models_dir}/{t}.ftbin") for t in tasks]
    t2 = time.perf_counter()
    for m in models:
        m.f.predict("今天天气怎么样？\n", -1, 0.0, "strict")
# VmHWM, not ru_maxrss: the latter keeps the forking parent's high-water mark across exec.
peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status")
                if line.startswith("VmHWM:"))
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "peak_mib": peak_kib / 1024}))
"""


def load_probe(kind: str, models_dir: Path, run_dir: Path | None, tasks: Sequence[str],
               repeats: int) -> dict[str, float]:
    """Median import time, load time of all ``tasks`` and peak RSS over fresh processes."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", _LOAD_PROBE, kind, str(models_dir), str(run_dir), *tasks],
            check=True, capture_output=True, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


# -- data sources ---------------------------------------------------------------------------


@dataclass
class TaskSources:
    task: str
    models_dir: Path
    pipeline: object
    train_rows: list[tuple[str, str]]


def forged_sources(task: str, models_dir: Path, run_dir: Path) -> TaskSources:
    from foundry.trained import load_trained

    trained = load_trained(run_dir, task)
    rows = []
    train_path = run_dir / "refine" / task / "train.jsonl"
    for line in train_path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rows.append((row["text"], str(row["label"])))
    return TaskSources(task, models_dir, trained.pipeline, rows)


def tiny_sources(folder: Path) -> list[TaskSources]:
    """Stand-ins built in seconds by ``tests/conftest.py`` (before a forge exists)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import QUESTIONS, STATEMENTS, write_tiny_models

    out = []
    for task in TASKS:
        trained = write_tiny_models(folder, task=task)
        rows = [(t, "Question") for t in QUESTIONS] + [(t, "Statement") for t in STATEMENTS]
        out.append(TaskSources(task, folder, trained.pipeline, rows * 20))
    return out


def latest_run(blueprint: str, runs_root: Path) -> Path:
    marker = runs_root / blueprint / "LATEST"
    if not marker.is_file():
        raise SystemExit(
            f"{marker} not found: forge first (`make forge`) or run with --tiny"
        )
    return runs_root / blueprint / marker.read_text(encoding="utf-8").strip()


# -- report --------------------------------------------------------------------------------


def _med(values: list[float]) -> float:
    return statistics.median(values)


def _rate(x: float) -> str:
    return f"{x / 1000:,.1f}k" if x < 1e6 else f"{x / 1e6:,.2f}M"


def _bucket_name(b: int) -> str:
    low, high = BUCKETS[b]
    return f"≥{low}" if high >= 10_000 else f"{low}–{high - 1}"


def format_real_table(results: dict[str, dict[str, RealSamples]], texts: list[str]) -> str:
    counts = [sum(bucket_of(t) == b for t in texts) for b in range(len(BUCKETS))]
    cols = " | ".join(f"p50 µs {_bucket_name(b)} chars (n={counts[b]})" for b in range(len(BUCKETS)))
    lines = [f"| task | engine | {cols} | p50 µs all | vs fastText (p50 all) | batch 1024 texts/s "
             "| vs fastText (batch) |",
             "|---|---|" + "---:|" * (len(BUCKETS) + 4)]
    for task, by_engine in results.items():
        ft = by_engine.get("fastText")
        for name, s in by_engine.items():
            cells = " | ".join(f"{_med(s.bucket_p50_us[b]):.2f}" if b in s.bucket_p50_us else "—"
                               for b in range(len(BUCKETS)))
            p50 = f"{_med(s.p50_us):.2f}" if s.p50_us else "—"
            vs = f"{_med(s.p50_us) / _med(ft.p50_us):.2f}×" if ft and s.p50_us else "—"
            thr = _med(s.throughput)
            vs_thr = f"{thr / _med(ft.throughput):.2f}×" if ft else "—"
            lines.append(f"| {task} | {name} | {cells} | {p50} | {vs} | {_rate(thr)} | {vs_thr} |")
    return "\n".join(lines)


def format_speed_table(results: dict[str, dict[str, Samples]]) -> str:
    head = ("| task | engine | single p50 µs | single p99 µs | batch 1 texts/s | batch 32 texts/s "
            "| batch 1024 texts/s | speed-up vs fastText (p50) | vs sklearn (p50) "
            "| vs fastText (batch 1024) |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for task, by_engine in results.items():
        ft = by_engine.get("fastText")
        sk = by_engine.get("sklearn")
        for name, s in by_engine.items():
            thr = {b: _med(v) for b, v in s.throughput.items()}
            thr_ft = f"{thr[1024] / _med(ft.throughput[1024]):.2f}×" if ft else "n/a"
            if s.p50_us:
                p50 = _med(s.p50_us)
                single = f"{p50:.1f} | {_med(s.p99_us):.1f}"
                vs_ft = f"{_med(ft.p50_us) / p50:.2f}×" if ft else "n/a"
                vs_sk = f"{_med(sk.p50_us) / p50:.1f}×" if sk else "n/a"
            else:
                single, vs_ft, vs_sk = "— | —", "—", "—"
            lines.append(
                f"| {task} | {name} | {single} | {_rate(thr[1])} "
                f"| {_rate(thr[32])} | {_rate(thr[1024])} | {vs_ft} | {vs_sk} | {thr_ft} |"
            )
    return "\n".join(lines)


def format_load_table(loads: dict[str, dict[str, float]]) -> str:
    lines = ["| engine (fresh process, both models) | import s | load both ms | peak RSS MiB |",
             "|---|---:|---:|---:|"]
    for name, r in loads.items():
        lines.append(f"| {name} | {r['import_s']:.3f} | {1000 * r['load_s']:.1f} "
                     f"| {r['peak_mib']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blueprint", default="text_classification")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    parser.add_argument("--tiny", action="store_true",
                        help="benchmark tiny stand-in models (no forge needed)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--texts-per-round", type=int, default=4096)
    parser.add_argument("--load-repeats", type=int, default=5)
    parser.add_argument("--real-texts", type=Path, action="append", default=None,
                        help="CSV with a 'text' column or JSONL with a 'text' field of real "
                             "utterances (default: MASSIVE zh-CN validation); repeatable, a "
                             "table per set (e.g. blueprints/clinc150/data/val.jsonl for the "
                             "English intent_clinc)")
    parser.add_argument("--real-rounds", type=int, default=5)
    parser.add_argument("--many-labels", nargs=2, action="append", default=[],
                        metavar=("RUN_DIR", "MODELS_DIR"),
                        help="also measure every task of a benchmark forge (e.g. clinc150's "
                             "150-label intent_clinc) on the same texts: its run folder and "
                             "models dir (repeatable; bench/intents.py forge prints both)")
    args = parser.parse_args(argv)
    with scratch_dir("bench-runtime-") as tmp:  # fastText models: tens of MB
        return _bench(args, tmp)


_STARTED = time.monotonic()


def _progress(what: str) -> None:
    """One line on stderr per stage: a full run with many-label tasks takes tens of minutes."""
    print(f"[{time.monotonic() - _STARTED:6.0f} s] {what}", file=sys.stderr, flush=True)


def _bench(args: argparse.Namespace, tmp: Path) -> int:
    if args.tiny:
        sources, run_dir = tiny_sources(tmp), None
    else:
        run_dir = latest_run(args.blueprint, args.runs_dir)
        sources = [forged_sources(t, args.models_dir, run_dir) for t in TASKS]
    for extra_run, extra_models in args.many_labels:  # the many-label rows, same texts
        for task_dir in sorted((Path(extra_run) / "train").iterdir()):
            sources.append(forged_sources(task_dir.name, Path(extra_models), Path(extra_run)))
    from foundry import native

    texts = list(INPUTS)
    real_paths = args.real_texts or [REAL_TEXTS]
    real_sets = {path: read_real_texts(path) for path in real_paths if path.is_file()}
    results: dict[str, dict[str, Samples]] = {}
    real: dict[Path, dict[str, dict[str, RealSamples]]] = {path: {} for path in real_sets}
    clis: list[RustCli] = []
    for src in sources:
        ft_model = train_fasttext(src.train_rows, tmp)
        ft_model.save_model(str(tmp / f"{src.task}.ftbin"))
        engines = []
        if native.available():
            engines += [foundry_engine(src.task, src.models_dir, "native"),
                        native_proba_engine(src.task, src.models_dir)]
        engines += [
            foundry_engine(src.task, src.models_dir, "numpy"),
            foundry_engine(src.task, src.models_dir, "onnxruntime"),
            fasttext_engine(ft_model),
        ]
        if RUST_CLI.is_file():
            engines.append(rust_cli_engine(src.task, src.models_dir, clis))
        for path, real_texts in real_sets.items():
            _progress(f"{src.task}: {len(real_texts)} real texts of {path.name}, "
                      f"{args.real_rounds} rounds")
            real[path][src.task] = measure_real(engines, real_texts, args.real_rounds)
        engines.append(sklearn_engine(src.pipeline))
        _progress(f"{src.task}: {len(texts)} fixed inputs, {args.rounds} rounds")
        results[src.task] = measure(engines, texts, args.rounds, args.texts_per_round)
    for cli in clis:
        cli.close()

    models_dir = sources[0].models_dir
    loads = {
        "foundry numpy": load_probe("foundry:numpy", models_dir, run_dir, TASKS, args.load_repeats),
        **({"foundry native": load_probe("foundry:native", models_dir, run_dir, TASKS,
                                         args.load_repeats)} if native.available() else {}),
        "foundry ort": load_probe("foundry:onnxruntime", models_dir, run_dir, TASKS,
                                  args.load_repeats),
        "fastText": load_probe("fasttext", tmp, run_dir, TASKS, args.load_repeats),
    }
    if run_dir is not None:
        loads["sklearn (joblib)"] = load_probe("sklearn", models_dir, run_dir, TASKS,
                                               args.load_repeats)

    load_avg = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# bench/runtime.py — {len(texts)} inputs, medians of {args.rounds} rounds, "
          f"{'tiny stand-in models' if args.tiny else f'models from {run_dir}'}, "
          f"load average {load_avg}, {os.cpu_count()} CPUs\n")
    missing = [what for what, ok in (("foundry native (make native)", native.available()),
                                     ("foundry-rt CLI (make rust)", RUST_CLI.is_file())) if not ok]
    if missing:
        print(f"not built, not measured: {', '.join(missing)}\n")
    for path, real_texts in real_sets.items():
        print(f"## Real text: {len(real_texts)} utterances of {path} (mean "
              f"{statistics.mean(map(len, real_texts)):.1f} characters), medians of "
              f"{args.real_rounds} rounds; single queries by length in characters\n")
        print(format_real_table(real[path], real_texts))
        print()
    for path in (p for p in real_paths if p not in real_sets):
        print(f"(no real-text table: {path} not found; pass --real-texts)\n")
    print(f"## The fixed assistant inputs ({len(texts)} texts)\n")
    print(format_speed_table(results))
    print()
    print(format_load_table(loads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
