"""Benchmark: how much of a rate-limited quota the generation engine turns into accepted rows.

A fake Gemini server (tests/fakes) on 127.0.0.1 limits each of 4 keys to N requests per
sliding minute and answers 429 with ``RetryInfo`` beyond it; answers take 0.2-0.8 s. The
engine runs with the blueprint's ``requests_per_minute = N`` and a target of one minute of
aggregate quota (``keys × N × samples_per_request`` rows). The table shows accepted rows per
minute as a fraction of the aggregate quota (the issue asks for more than 90 %).

Scenarios run side by side, each against its own server:

``clean``     every answer is good;
``faulty``    5 % server errors, 5 % malformed answers, 2 % timeouts and 2 % wrong labels:
              each of those still uses up a request of the quota, so the fraction drops by
              about that much.

Usage::

    python bench/generation.py                 # ~1 minute
    python bench/generation.py --rpm 30 --minutes 2 --json out.json

Note on the first minute: a perfectly paced key sends its N requests at 0, 60/N, ...,
(N-1)·60/N s, so one minute of quota is done in slightly under a minute; fractions just above
100 % are that boundary effect, not overuse (the server would have answered 429).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fakes import FakeGemini, Faults  # noqa: E402
from fakes.tiny_blueprint import write_tiny_blueprint  # noqa: E402

from foundry.blueprint import load_blueprint  # noqa: E402
from foundry.generate.engine import Tuning, generate_llm  # noqa: E402
from foundry.generate.rawstore import RawStore  # noqa: E402

SCENARIOS = {
    "clean": {},
    "faulty": {"p_500": 0.05, "p_malformed": 0.05, "p_timeout": 0.02, "p_wrong_label": 0.02},
}


def run_scenario(name: str, *, keys: int, rpm: float, spr: int, minutes: float,
                 concurrency: int, workdir: Path) -> dict:
    faults = Faults(latency_s=(0.2, 0.8), rpm_per_key=rpm, hang_s=3.0, **SCENARIOS[name])
    bp = load_blueprint(write_tiny_blueprint(
        workdir / name / "bp", samples_per_request=spr, concurrency=concurrency,
        requests_per_minute=rpm, request_timeout_s=2.0, max_retries=6))
    target = int(keys * rpm * spr * minutes)
    key_list = [f"bench-key-{i}-{name}" for i in range(keys)]
    with FakeGemini(faults, seed=17, lifetime_s=minutes * 60 * 3 + 60) as server:
        env = {"GEMINI_API_KEYS": ",".join(key_list), "GEMINI_BASE_URL": server.base_url}
        start = time.monotonic()
        report = generate_llm(
            bp, bp.task("is_question"), provider="gemini",
            store=RawStore(workdir / name / "raw.jsonl"),
            quarantine_path=workdir / name / "quarantine.jsonl", target=target,
            log=lambda _m: None, env=env,
            tuning=Tuning(backoff_base_s=0.25, backoff_max_s=5.0, progress=False))
        elapsed = time.monotonic() - start
        server_429 = sum(1 for _, _, status in server.calls if status == 429)
        sent = len(server.arrivals)
    quota_rows_per_min = keys * rpm * spr
    rows_per_min = report.rows_added / (elapsed / 60.0)
    return {"scenario": name, "keys": keys, "rpm_per_key": rpm, "rows_per_request": spr,
            "quota_rows_per_min": quota_rows_per_min, "accepted": report.rows_added,
            "rejected": report.rows_rejected, "requests": sent, "server_429": server_429,
            "elapsed_s": round(elapsed, 1), "rows_per_min": round(rows_per_min, 1),
            "fraction_of_quota": round(rows_per_min / quota_rows_per_min, 4)}


def print_table(results: list[dict]) -> None:
    head = (f"{'scenario':<9} {'keys':>4} {'rpm/key':>7} {'quota rows/min':>14} "
            f"{'accepted':>8} {'rejected':>8} {'requests':>8} {'429s':>5} {'elapsed':>8} "
            f"{'rows/min':>9} {'of quota':>8}")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['scenario']:<9} {r['keys']:>4} {r['rpm_per_key']:>7g} "
              f"{r['quota_rows_per_min']:>14,.0f} {r['accepted']:>8} {r['rejected']:>8} "
              f"{r['requests']:>8} {r['server_429']:>5} {r['elapsed_s']:>7.1f}s "
              f"{r['rows_per_min']:>9,.0f} {r['fraction_of_quota']:>8.1%}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=4)
    ap.add_argument("--rpm", type=float, default=60.0, help="requests per minute per key")
    ap.add_argument("--rows-per-request", type=int, default=20)
    ap.add_argument("--minutes", type=float, default=1.0, help="quota minutes to generate")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    names = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    print(f"fake Gemini, {args.keys} keys × {args.rpm:g} requests/min, "
          f"{args.rows_per_request} rows/request, target = {args.minutes:g} min of quota "
          f"per scenario ({', '.join(names)} side by side)\n")
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(len(names)) as pool:
        futures = [pool.submit(run_scenario, n, keys=args.keys, rpm=args.rpm,
                               spr=args.rows_per_request, minutes=args.minutes,
                               concurrency=args.concurrency, workdir=Path(tmp))
                   for n in names]
        results = [f.result() for f in futures]
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
