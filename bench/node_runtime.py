"""How fast is the JavaScript runtime? Its two backends side by side, in one Node process.

    .venv/bin/python bench/node_runtime.py                       # the forged default models
    .venv/bin/python bench/node_runtime.py --many-labels /tmp/foundry-bench-intents intent_clinc \\
        --real-texts blueprints/clinc150/data/val.jsonl          # + a 150-label model, English text

For each task it loads the forged pair twice in ``runtimes/node``: backend ``linear`` (the
default for linear graphs: ``src/graph.js`` reads the weights, ``src/linear.js`` scores a
text's non-zero features) and ``onnxruntime`` (onnxruntime-node on the dense feature row), and
reports, on real human-written texts (default: the MASSIVE zh-CN validation utterances; never a
test split):

- single-query latency, p50 and p99 of ``await model.predict(text)``, one call per text;
- throughput in texts/s of ``predictMany`` on batches of ``--batch`` texts;
- the load time of each backend.

Figures are medians over ``--rounds`` rounds, engines interleaved round by round
(``runtimes/node/tools/latency.js`` does the timing; this script prints the table). Needs
``make node``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from runtime import read_real_texts  # noqa: E402  (bench/runtime.py, beside this file)

LATENCY_JS = ROOT / "runtimes" / "node" / "tools" / "latency.js"
DEFAULT_TEXTS = ROOT.parent / "shared" / "datasets" / "massive_zh_cn" / "validation.csv"


def run_node(texts: list[str], models: list[tuple[Path, str]], rounds: int,
             batch: int) -> list[dict]:
    """One ``latency.js`` run: a row per (task, backend)."""
    node = shutil.which("node")
    if node is None or not (LATENCY_JS.parents[1] / "node_modules").is_dir():
        raise SystemExit("bench/node_runtime.py: the JavaScript runtime is not installed; "
                         "run `make node` first")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "texts.jsonl"
        path.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts),
                        encoding="utf-8")
        specs = [f"{folder.resolve()}:{task}" for folder, task in models]
        done = subprocess.run([node, str(LATENCY_JS), str(path), str(rounds), str(batch), *specs],
                              capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench/node_runtime.py: latency.js failed:\n{done.stderr}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def format_table(rows: list[dict]) -> str:
    """Markdown table: one line per task and backend, with the speed-up over ONNX Runtime."""
    ort = {r["task"]: r for r in rows if r["backend"] == "onnxruntime"}
    lines = ["| task | backend | p50 µs | p99 µs | p50 vs onnxruntime | batch texts/s | load ms |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["backend"] == "onnxruntime" or r["task"] not in ort:
            ratio = "—"
        else:
            ratio = f"{ort[r['task']]['p50_us'] / r['p50_us']:.1f}x faster"
        lines.append(f"| {r['task']} | {r['backend']} | {r['p50_us']:.1f} | {r['p99_us']:.1f} | "
                     f"{ratio} | {r['batch_texts_per_s']:,.0f} | {r['load_ms']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--tasks", nargs="*", default=["is_question", "confirmation"],
                        help="tasks in --models-dir (default: the default blueprint's)")
    parser.add_argument("--many-labels", nargs=2, action="append", default=[],
                        metavar=("MODELS_DIR", "TASK"), help="one more task, from another folder")
    parser.add_argument("--real-texts", type=Path, default=DEFAULT_TEXTS,
                        help="CSV with a text column or JSONL with a text field")
    parser.add_argument("--limit", type=int, default=1000, help="texts per round (the first N)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1024)
    args = parser.parse_args(argv)
    texts = read_real_texts(args.real_texts)[: args.limit]
    models = [(args.models_dir, t) for t in args.tasks]
    models += [(Path(folder), task) for folder, task in args.many_labels]
    rows = run_node(texts, models, args.rounds, args.batch)
    mean = sum(map(len, texts)) / len(texts)
    print(f"JavaScript runtime (Node {_node_version()}), {len(texts)} texts of "
          f"{args.real_texts.name} (mean {mean:.0f} characters), median of {args.rounds} rounds\n")
    print(format_table(rows))
    return 0


def _node_version() -> str:
    node = shutil.which("node") or "node"
    return subprocess.run([node, "--version"], capture_output=True, text=True,
                          check=False).stdout.strip()


if __name__ == "__main__":
    raise SystemExit(main())
