"""Check a generation run against what a fake server says it delivered.

:func:`audit` proves, from the files alone:

* the raw file has only complete JSON lines (no torn line) and exactly ``target`` rows;
* no duplicate: every text once, every batch id once with all its rows, no answer (request
  id) committed in two batches;
* every stored row is a row the server sent, with the label the server gave;
* nothing lost: every delivered answer is accounted for, each of its items either in the raw
  file or in the quarantine (malformed answers as one ``unparseable`` record).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import FakeLLMServer

_TAG = re.compile(r"样本(r\d{6})-\d{3}")


def _rid(request_id: str) -> str:
    return request_id.removeprefix("chatcmpl-")


def read_lines_strict(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path`` as JSON; fails on a torn or non-JSON line."""
    if not path.exists():
        return []
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path}: torn last line"
    return [json.loads(line) for line in data.splitlines() if line.strip()]


@dataclass
class AuditResult:
    rows: list[dict[str, Any]]
    quarantine: list[dict[str, Any]]
    unaccounted: list[str] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)


def audit(server: FakeLLMServer, raw: Path, quarantine: Path, target: int, *,
          allow_unaccounted: int = 0) -> AuditResult:
    rows = read_lines_strict(raw)
    qrecs = read_lines_strict(quarantine)
    assert len(rows) == target, f"{len(rows)} rows stored, target {target}"

    texts = Counter(r["text"] for r in rows)
    dupes = [t for t, c in texts.items() if c > 1]
    assert not dupes, f"duplicate rows: {dupes[:3]}"

    batches: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        batches[r["batch"]].append(r)
    rid_batches: dict[str, set[str]] = defaultdict(set)
    for b, rs in batches.items():
        assert all(r["batch_size"] == len(rs) for r in rs), f"batch {b} incomplete"
        assert len({r["request_id"] for r in rs}) == 1, f"batch {b} mixes answers"
        rid_batches[_rid(rs[0]["request_id"])].add(b)
    twice = {rid: bs for rid, bs in rid_batches.items() if len(bs) > 1}
    assert not twice, f"answers committed in several batches: {twice}"

    for r in rows:
        m = _TAG.search(r["text"])
        assert m, f"row not from the fake server: {r['text']!r}"
        rid = m.group(1)
        assert _rid(r["request_id"]) == rid, (r["request_id"], rid)
        assert rid in server.delivered, f"row of an answer never delivered: {rid}"
        sent = {(i["text"], i["label"]) for i in server.delivered[rid].items}
        assert (r["text"], r["label"]) in sent, f"row differs from what was sent: {r}"
        assert r["source"] == "llm" and r["key"].startswith("key:")

    # Nothing lost: each delivered item is stored or quarantined.
    stored = Counter((_rid(r["request_id"]), r["text"]) for r in rows)
    quarantined: Counter = Counter()
    unparseable: set[str] = set()
    reasons: Counter = Counter()
    for q in qrecs:
        reasons[q["reason"]] += 1
        rid = _rid(q["request_id"])
        if q["reason"] == "unparseable":
            unparseable.add(rid)
        else:
            item = q["item"]
            quarantined[(rid, item.get("text") if isinstance(item, dict) else None)] += 1
    unaccounted = []
    for rid, d in server.delivered.items():
        if d.kind == "malformed":
            if rid not in unparseable:
                unaccounted.append(rid)
            continue
        sent = Counter((rid, i["text"]) for i in d.items)
        if rid in {k[0] for k in stored} | {k[0] for k in quarantined}:
            for k, n in sent.items():
                assert stored[k] + quarantined[k] == n, f"{k}: sent {n}, " \
                    f"stored {stored[k]}, quarantined {quarantined[k]}"
        else:
            unaccounted.append(rid)
    assert len(unaccounted) <= allow_unaccounted, f"delivered but lost: {unaccounted}"
    return AuditResult(rows, qrecs, unaccounted, reasons)
