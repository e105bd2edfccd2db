"""Run one generation in a separate process (for the kill and Ctrl-C tests).

Usage: ``python run_generation.py BLUEPRINT_DIR RAW_JSONL QUARANTINE_JSONL TARGET``; keys and
the base URL come from the environment (``GEMINI_API_KEYS``, ``GEMINI_BASE_URL``). Prints the
report as one JSON line; exits 130 after Ctrl-C (``GenerationInterrupted``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from foundry.blueprint import load_blueprint
from foundry.generate.engine import GenerationInterrupted, Tuning, generate_llm
from foundry.generate.rawstore import RawStore


def main(argv: list[str]) -> int:
    bp_dir, raw, quarantine, target = argv
    # A process started in the background of a non-interactive shell inherits SIGINT as
    # ignored, and Python then installs no KeyboardInterrupt handler: the test's Ctrl-C would
    # be lost and the run would finish. A user at a terminal has the default handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    bp = load_blueprint(Path(bp_dir))
    store = RawStore(Path(raw))
    tuning = Tuning(backoff_base_s=0.05, backoff_max_s=0.3, progress=False)
    try:
        report = generate_llm(bp, bp.task("is_question"), provider="gemini", store=store,
                              quarantine_path=Path(quarantine), target=int(target),
                              log=lambda m: print(m, file=sys.stderr, flush=True),
                              env=dict(os.environ), tuning=tuning)
    except GenerationInterrupted as exc:
        print(json.dumps({"interrupted": True, **exc.report.as_dict()}, default=str), flush=True)
        return 130
    print(json.dumps(report.as_dict(), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
