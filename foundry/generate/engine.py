"""The generation engine: many concurrent LLM requests, several keys, no lost or duplicated batch.

:func:`generate_llm` is the entry point. It plans numbered requests (batch ids
``<task>-llm-<n:06d>``), runs ``concurrency`` of them at a time over a :class:`KeyPool`, checks
every answer, quarantines what is rejected and appends what is accepted with
:meth:`RawStore.append_batch` (flushed and fsynced before the batch counts). It stops when the
store holds ``target`` valid rows of the task: rows already there count, so re-running after a
crash or Ctrl-C simply continues.

Why batches are never duplicated: a request's batch id is fixed when it is planned, planning
skips ids already in the store, and the store ignores an id it already holds. Why none is lost:
rows only count once fsynced; a request in flight at a crash has no rows in the store and its
number is planned again on the next run. Committing a batch is synchronous (no ``await``), so
cancelling the run can never interrupt it halfway.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from foundry.blueprint import Blueprint, Task
from foundry.errors import GenerationError
from foundry.generate.keypool import AllKeysDisabledError, Backoff, KeyPool, KeyState, KeyStats
from foundry.generate.providers import (
    Completion,
    FatalRequestError,
    KeyRejected,
    OutputSpec,
    Provider,
    RateLimited,
    Transient,
)
from foundry.generate.rawstore import RawStore
from foundry.generate.registry import ProviderEntry, make_provider, provider_entry
from foundry.generate.steering import RequestPlan, Steering
from foundry.generate.validate import (
    Checked,
    ParseError,
    Quarantine,
    RowRules,
    check_rows,
    extract_rows,
)
from foundry.secrets import ApiKey, load_env, redact, redacting
from foundry.textspec import normalize

__all__ = [
    "AllKeysDisabledError",
    "duplicate_rate_by_round",
    "GenerationError",
    "GenerationInterrupted",
    "GenerationReport",
    "MissingKeyError",
    "Tuning",
    "generate_llm",
]



class MissingKeyError(GenerationError):
    """No API key is configured for the chosen provider."""


class GenerationInterrupted(GenerationError, KeyboardInterrupt):
    """Ctrl-C: the run stopped after its last complete batch; ``report`` says how far it got.

    Also a :class:`KeyboardInterrupt`, so ``except KeyboardInterrupt`` still sees a Ctrl-C;
    the command line exits 130 as for any Ctrl-C.
    """

    exit_code = 130

    def __init__(self, report: GenerationReport) -> None:
        super().__init__(f"generation interrupted after {report.rows_total} rows; re-run to "
                         "continue")
        self.report = report


@dataclass(frozen=True)
class Tuning:
    """Engine knobs that are not blueprint settings (tests and benchmarks shorten the waits).

    Parameters
    ----------
    backoff_base_s, backoff_max_s : float
        Exponential backoff (full jitter) for 5xx/timeouts and for 429s without a delay.
    progress : bool
        Show a tqdm progress bar.
    max_failed_in_a_row : int
        Stop when this many requests in a row fail after all their retries.
    max_barren_in_a_row : int
        Stop (``stopped == "exhausted"``) when this many successful requests in a row add no
        new row: the model only repeats what is stored. The data-sufficiency gate then decides.
    max_requests, max_tokens : int, optional
        Budget; when unset, the blueprint's ``generation.max_requests`` / ``max_tokens``
        (if the blueprint defines them) apply.
    """

    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    progress: bool = True
    max_failed_in_a_row: int = 3
    max_barren_in_a_row: int = 20
    max_requests: int | None = None
    max_tokens: int | None = None


@dataclass
class GenerationReport:
    """What a run did: rows, requests, rejections by reason, keys (by fingerprint), time."""

    task: str
    provider: str
    model: str
    target: int
    rows_before: int = 0
    rows_added: int = 0
    requests_ok: int = 0
    requests_failed: int = 0
    requests_retried: int = 0
    attempts: int = 0
    rate_limited: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    #: Valid rows whose normalised text was already stored (quarantined as ``duplicate``).
    duplicates: int = 0
    category_missing: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    keys: dict[str, KeyStats] = field(default_factory=dict)
    key_state: dict[str, str] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    stopped: str = "target"  # target | budget | exhausted | interrupted | error
    requests_log: str = ""  # JSONL, one line per attempt

    @property
    def rows_total(self) -> int:
        return self.rows_before + self.rows_added

    @property
    def rows_rejected(self) -> int:
        return sum(self.quarantined.values())

    @property
    def rows_per_minute(self) -> float:
        return self.rows_added / (self.elapsed_s / 60.0) if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(rows_total=self.rows_total, rows_rejected=self.rows_rejected,
                   rows_per_minute=round(self.rows_per_minute, 1))
        return out

    to_dict = as_dict  # the name foundry.generate's dispatcher looks for

    def key_rows(self) -> list[dict[str, Any]]:
        """One dict per key (by fingerprint): for a table in the notebook."""
        return [{"key": fp, "state": self.key_state.get(fp, "ok"), **asdict(st)}
                for fp, st in self.keys.items()]

    def summary(self) -> str:
        """The summary table printed at the end of a run."""
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(self.quarantined.items())) or "none"
        labels = ", ".join(f"{k} {v}" for k, v in self.label_counts.items())
        lines = [
            f"generation summary: {self.task} via {self.provider} ({self.model}), "
            f"stopped: {self.stopped}",
            f"  rows        {self.rows_total} / target {self.target} "
            f"(before {self.rows_before}, added {self.rows_added}; {labels})",
            f"  rejected    {self.rows_rejected} ({rejected}); "
            f"no category: {self.category_missing}",
            f"  duplicates  {self.duplicates} of {self.duplicates + self.rows_added} valid rows "
            "were already stored",
            f"  requests    sent {self.attempts}, ok {self.requests_ok}, "
            f"retried {self.requests_retried}, failed {self.requests_failed}, "
            f"429s {self.rate_limited}",
            f"  tokens      in {self.tokens_in:,}, out {self.tokens_out:,}",
            f"  time        {self.elapsed_s:.1f} s, {self.rows_per_minute:,.0f} rows/min",
            f"  {'key':<13} {'requests':>8} {'ok':>6} {'429s':>6} {'5xx':>5} {'timeouts':>8} "
            f"{'rows':>6} {'cooldown':>9}  state",
        ]
        for fp, st in self.keys.items():
            lines.append(
                f"  {fp:<13} {st.requests:>8} {st.ok:>6} {st.rate_limited:>6} "
                f"{st.server_errors:>5} {st.timeouts:>8} {st.rows:>6} "
                f"{st.cooldown_s:>8.1f}s  {self.key_state.get(fp, 'ok')}")
        return "\n".join(lines)


# -- helpers ---------------------------------------------------------------------------


def batch_id(task: str, index: int) -> str:
    """The batch id of planned request ``index`` (fixed at planning: replays reuse it)."""
    return f"{task}-llm-{index:06d}"


def requests_log_path(raw_path: Path) -> Path:
    """Per-request stats of a raw file: ``<task>.requests.jsonl`` beside it."""
    return raw_path.with_name(raw_path.stem + ".requests.jsonl")


def duplicate_rate_by_round(requests_log: Path, round_size: int) -> Any:
    """Per round of ``round_size`` requests (by request number): rows returned, duplicates of
    stored rows and their rate, from the requests log (``<task>.requests.jsonl``).

    Returns a pandas DataFrame with columns ``round``, ``requests``, ``returned``,
    ``duplicates``, ``duplicate_rate``; empty when no request succeeded.
    """
    import pandas as pd

    from foundry.jsonl import iter_jsonl

    columns = ["round", "requests", "returned", "duplicates", "duplicate_rate"]
    if not Path(requests_log).is_file():
        return pd.DataFrame(columns=columns)
    records = [r for _, r in iter_jsonl(requests_log) if r.get("outcome") == "ok"]
    if not records:
        return pd.DataFrame(columns=columns)
    df = pd.DataFrame({
        "round": [int(r["batch"].rsplit("-", 1)[-1]) // max(1, round_size) + 1 for r in records],
        "returned": [int(r.get("returned", 0)) for r in records],
        "duplicates": [int(r.get("duplicates", 0)) for r in records],
    })
    table = df.groupby("round").agg(requests=("returned", "size"), returned=("returned", "sum"),
                                    duplicates=("duplicates", "sum")).reset_index()
    table["duplicate_rate"] = (table["duplicates"] / table["returned"].where(table["returned"] > 0)
                               ).fillna(0.0).round(4)
    return table[columns]


def request_seed(seed: int, index: int, attempt: int) -> int:
    """Per request and attempt, so a retry after a bad answer does not get the same answer."""
    return (seed * 1_000_003 + index * 101 + attempt) % (2**31 - 1)


def _blueprint_budget(bp: Blueprint, name: str) -> int | None:
    # max_requests / max_tokens are optional blueprint fields (issue 3, item 7); read them
    # defensively so the engine works with blueprints that do not define them.
    value = getattr(bp.spec.generation, name, None)
    return int(value) if value is not None else None


# -- the run ---------------------------------------------------------------------------


class _Run:
    """State of one generation run (lives in one event loop)."""

    def __init__(self, bp: Blueprint, task: Task, provider: Provider, keys: list[ApiKey],
                 store: RawStore, quarantine: Quarantine, target: int,
                 log: Callable[[str], None], tuning: Tuning,
                 requests_log: Quarantine | None = None) -> None:
        gen = bp.spec.generation
        self.bp, self.task, self.gen = bp, task, gen
        self.provider, self.keys, self.store = provider, keys, store
        self.quarantine, self.target, self.tuning = quarantine, target, tuning
        self.requests_log = requests_log
        self._log = log
        self.backoff = Backoff(tuning.backoff_base_s, tuning.backoff_max_s)
        self.pool = KeyPool(keys, requests_per_minute=gen.requests_per_minute,
                            backoff=self.backoff, seed=gen.seed)
        self.rules = RowRules({lab.name: tuple(lab.categories) for lab in task.labels},
                              min_chars=gen.min_chars, max_chars=gen.max_chars)
        labels = set(task.label_names)
        existing = [r for r in store.rows if r.get("label") in labels]
        template = bp.path(task.constitution).read_text(encoding="utf-8")
        self.steering = Steering(task, template, gen.diversity, target, seed=gen.seed,
                                 existing=existing)
        # Normalised texts already stored: a row the model repeats is a duplicate, not a row.
        self.seen = {normalize(str(r.get("text", ""))) for r in existing}
        self.stored = len(existing)
        self.pending_rows = 0
        self.next_index = 0
        self.max_requests = tuning.max_requests or _blueprint_budget(bp, "max_requests")
        self.max_tokens = tuning.max_tokens or _blueprint_budget(bp, "max_tokens")
        self.report = GenerationReport(task=task.name, provider=provider.name,
                                       model=provider.model, target=target,
                                       rows_before=self.stored)
        self.quarantined: Counter[str] = Counter()
        self.stop_reason: str | None = None
        self.fatal: BaseException | None = None
        self.failed_in_a_row = 0
        self.barren_in_a_row = 0
        self.bar: Any = None
        self._last_cool_log: dict[str, float] = {}

    # -- small pieces ------------------------------------------------------------------

    def log(self, message: str) -> None:
        self._log(redact(message, self.keys))

    def _stop(self, reason: str, error: BaseException | None = None) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        if error is not None and self.fatal is None:
            self.fatal = error

    def _budget_left(self) -> bool:
        if self.max_requests is not None and self.report.attempts >= self.max_requests:
            self._stop("budget")
            return False
        used = self.report.tokens_in + self.report.tokens_out
        if self.max_tokens is not None and used >= self.max_tokens:
            self._stop("budget")
            return False
        return True

    def _next_plan(self) -> RequestPlan | None:
        remaining = self.target - self.stored - self.pending_rows
        if remaining <= 0 or self.stop_reason or not self._budget_left():
            return None
        while batch_id(self.task.name, self.next_index) in self.store.batches:
            self.next_index += 1
        index = self.next_index
        self.next_index += 1
        n = min(self.gen.samples_per_request, remaining)
        self.pending_rows += n
        return self.steering.plan(index, batch_id(self.task.name, index), n)

    def _provenance(self, plan: RequestPlan, comp: Completion, key: KeyState) -> dict[str, Any]:
        return {"source": "llm", "provider": self.provider.name, "model": self.provider.model,
                "request_id": comp.request_id, "prompt_sha256": plan.prompt_sha256,
                "hint": plan.hint, "key": key.fingerprint}

    # -- committing --------------------------------------------------------------------

    def _quarantine_unparseable(self, plan: RequestPlan, comp: Completion, key: KeyState,
                                reason: str) -> None:
        record = {"reason": "unparseable", "detail": reason, "raw": (comp.text or "")[:4000],
                  "task": self.task.name, "batch": plan.batch_id,
                  **self._provenance(plan, comp, key)}
        self.quarantine.write([record])
        self.quarantined["unparseable"] += 1

    def _commit(self, plan: RequestPlan, comp: Completion, key: KeyState,
                checked: Checked) -> list[dict[str, Any]]:
        """Quarantine the rejects, then append the accepted rows (synchronous: never torn)."""
        prov = self._provenance(plan, comp, key)
        fresh, repeats = self._split_repeats(checked.rows)
        rows = [{**r, **prov} for r in fresh]
        # A row holding a secret (an echoed key, a URL password) never reaches the raw data.
        clean: list[dict[str, Any]] = []
        leaking: list[dict[str, Any]] = []
        for r in rows:
            (leaking if redact(r["text"], self.keys) != r["text"] else clean).append(r)
        rows = clean
        room = max(0, self.target - self.stored)
        keep, surplus = rows[:room], rows[room:]
        records = [{"reason": rej.reason, "detail": rej.detail, "item": rej.item,
                    "task": self.task.name, "batch": plan.batch_id, **prov}
                   for rej in checked.rejected]
        records += [{"reason": "duplicate", "detail": "already stored (normalised text)",
                     "item": r, "task": self.task.name, "batch": plan.batch_id, **prov}
                    for r in repeats]
        records += [{"reason": "secret", "detail": "the text holds a key or credentials",
                     "item": r, "task": self.task.name, "batch": plan.batch_id, **prov}
                    for r in leaking]
        # Rows beyond the target are kept visible (and recoverable), not dropped.
        records += [{"reason": "over_target", "detail": "", "item": r, "task": self.task.name,
                     "batch": plan.batch_id, **prov} for r in surplus]
        # Quarantine first: a crash in between leaves an extra quarantine record at worst,
        # never a committed batch whose rejects were not recorded.
        self.quarantine.write(records)
        for rec in records:
            self.quarantined[rec["reason"]] += 1
        added = self.store.append_batch(plan.batch_id, keep)
        self.stored += added
        self.report.rows_added += added
        self.report.duplicates += len(repeats)
        self.seen.update(normalize(r["text"]) for r in keep)
        self.steering.note_repeats(r["text"] for r in repeats)
        self.barren_in_a_row = 0 if added or not room else self.barren_in_a_row + 1
        if self.barren_in_a_row >= self.tuning.max_barren_in_a_row:
            self._stop("exhausted")
        self.report.category_missing += sum(
            1 for r in keep if r["category"] is None and self.rules.labels[r["label"]])
        key.stats.rows += added
        if self.bar is not None:
            self.bar.update(added)
        return keep

    def _split_repeats(self, rows: list[dict[str, Any]]
                       ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Rows whose normalised text is new, and those already stored (or earlier in ``rows``)."""
        fresh, repeats, keys = [], [], set()
        for r in rows:
            key = normalize(r["text"])
            (repeats if key in self.seen or key in keys else fresh).append(r)
            keys.add(key)
        return fresh, repeats

    # -- one request -------------------------------------------------------------------

    def _note_cooldown(self, key: KeyState, delay: float) -> None:
        now = time.monotonic()
        if now - self._last_cool_log.get(key.fingerprint, -1e9) >= 10.0:
            self._last_cool_log[key.fingerprint] = now
            self.log(f"{key.fingerprint}: rate limited (429); cooling down {delay:.1f}s, "
                     "other keys continue")

    def _record(self, plan: RequestPlan, key: KeyState, attempt: int, started: float,
                outcome: str, **extra: Any) -> None:
        """One line per attempt in the requests log (per-request stats, never a key)."""
        if self.requests_log is None:
            return
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                  "task": self.task.name, "batch": plan.batch_id, "attempt": attempt,
                  "key": key.fingerprint, "outcome": outcome,
                  "latency_s": round(time.monotonic() - started, 3), **extra}
        if "detail" in record:
            record["detail"] = redact(str(record["detail"]), self.keys)
        self.requests_log.write([record])

    async def _execute(self, plan: RequestPlan) -> list[dict[str, Any]]:
        """Run one planned request to a committed batch, or give up; returns the stored rows."""
        spec = OutputSpec(plan.n, self.task.label_names,
                          sorted({c for lab in self.task.labels for c in lab.categories}))
        failures = 0
        tries = 0
        last_error = ""
        while True:
            key = await self._next_key()
            if key is None:
                return []
            self.report.attempts += 1
            if tries:
                self.report.requests_retried += 1
            tries += 1
            started = time.monotonic()
            try:
                comp = await self.provider.complete(
                    key.key, plan.prompt, spec,
                    seed=request_seed(self.gen.seed, plan.index, tries))
            except RateLimited as exc:
                self._rate_limited(plan, key, tries, started, exc)
                continue
            except KeyRejected as exc:
                self._key_rejected(plan, key, tries, started, exc)
                continue
            except Transient as exc:
                self.pool.report_server_error(key, timeout=exc.kind == "timeout")
                last_error = redact(str(exc), self.keys)
                failures += 1
                self._record(plan, key, tries, started, exc.kind, detail=last_error)
            except FatalRequestError as exc:
                self._refused(plan, key, tries, started, exc)
                return []
            else:
                kept, last_error = self._answered(plan, key, tries, started, comp)
                if kept is not None:
                    return kept
                failures += 1
            finally:
                self.pool.release(key)
            if failures > self.gen.max_retries:
                self._give_up(plan, last_error)
                return []
            await asyncio.sleep(self.backoff.delay(failures, self.pool.rng))

    async def _next_key(self) -> KeyState | None:
        """A key for the next attempt, or None when the run stops (budget, error, no keys)."""
        if self.stop_reason or not self._budget_left():
            return None
        try:
            key = await self.pool.acquire()
        except AllKeysDisabledError as exc:
            self._stop("error", exc)
            return None
        if self.stop_reason:  # stopped while we waited for a key
            self.pool.release(key)
            return None
        return key

    def _rate_limited(self, plan: RequestPlan, key: KeyState, tries: int, started: float,
                      exc: RateLimited) -> None:
        self.report.rate_limited += 1
        delay = self.pool.report_rate_limited(key, exc.retry_after_s)
        self._note_cooldown(key, delay)
        self._record(plan, key, tries, started, "rate_limited",
                     retry_after_s=exc.retry_after_s, cooldown_s=round(delay, 3))

    def _key_rejected(self, plan: RequestPlan, key: KeyState, tries: int, started: float,
                      exc: KeyRejected) -> None:
        reason = redact(str(exc), self.keys)
        if key.disabled is None:
            self.pool.disable(key, reason)
            self.log(f"{key.fingerprint}: disabled, the server rejected it ({reason}); "
                     f"{len(self.pool.live)} key(s) left")
        self._record(plan, key, tries, started, "key_rejected", detail=reason)

    def _refused(self, plan: RequestPlan, key: KeyState, tries: int, started: float,
                 exc: FatalRequestError) -> None:
        msg = redact(str(exc), self.keys)
        self._record(plan, key, tries, started, "fatal", detail=msg)
        self._stop("error", GenerationError(
            f"{self.provider.name} refused the request for model "
            f"{self.provider.model!r}: {msg}"))

    def _answered(self, plan: RequestPlan, key: KeyState, tries: int, started: float,
                  comp: Completion) -> tuple[list[dict[str, Any]] | None, str]:
        """Parse, check and commit an answer: ``(stored rows, "")``, or ``(None, error)``
        when the answer held no list of rows (it is quarantined and the request retried)."""
        self.pool.report_ok(key, tokens_in=comp.tokens_in, tokens_out=comp.tokens_out)
        self.report.tokens_in += comp.tokens_in
        self.report.tokens_out += comp.tokens_out
        tokens = {"request_id": comp.request_id, "tokens_in": comp.tokens_in,
                  "tokens_out": comp.tokens_out}
        try:
            items = extract_rows(comp.text)
        except ParseError as exc:
            self._quarantine_unparseable(plan, comp, key, str(exc))
            self._record(plan, key, tries, started, "unparseable", detail=str(exc), **tokens)
            return None, f"unparseable answer ({exc})"
        self.report.requests_ok += 1
        self.failed_in_a_row = 0
        checked = check_rows(items, self.rules)
        duplicates_before = self.report.duplicates
        kept = self._commit(plan, comp, key, checked)
        self._record(plan, key, tries, started, "ok", asked=plan.n,
                     returned=len(items), accepted=len(kept),
                     duplicates=self.report.duplicates - duplicates_before,
                     rejected=dict(Counter(r.reason for r in checked.rejected)), **tokens)
        return kept, ""

    def _give_up(self, plan: RequestPlan, last_error: str) -> None:
        self.report.requests_failed += 1
        self.failed_in_a_row += 1
        self.log(f"{plan.batch_id}: gave up after {self.gen.max_retries} retries "
                 f"(last error: {last_error}); it will be planned again")
        if self.failed_in_a_row >= self.tuning.max_failed_in_a_row:
            self._stop("error", GenerationError(
                f"{self.failed_in_a_row} requests in a row failed after "
                f"{self.gen.max_retries} retries each; last error: {last_error}"))

    # -- workers -----------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            plan = self._next_plan()
            if plan is None:
                if self.stop_reason or self.stored >= self.target:
                    return
                # Requests in flight may still fail and need replanning: wait and look again.
                await asyncio.sleep(0.02)
                continue
            rows: list[dict[str, Any]] = []
            try:
                rows = await self._execute(plan)
            finally:
                self.pending_rows -= plan.n
                # A number that failed is not reused in this run (another request might
                # hold the next ones); the next run fills such gaps, as after a crash.
                self.steering.settle(plan, rows)

    async def run(self) -> GenerationReport:
        start = time.monotonic()
        workers = [asyncio.ensure_future(self._worker())
                   for _ in range(self.gen.concurrency)]
        self._workers = workers
        try:
            await asyncio.gather(*workers, return_exceptions=False)
        except asyncio.CancelledError:
            self._stop("interrupted")
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        except BaseException as exc:
            self._stop("error", exc)
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        finally:
            await self.provider.aclose()
        if self.stop_reason is None:
            self.stop_reason = "target" if self.stored >= self.target else "error"
        r = self.report
        r.elapsed_s = time.monotonic() - start
        r.stopped = self.stop_reason
        r.requests_log = str(self.requests_log.path) if self.requests_log else ""
        r.quarantined = dict(self.quarantined)
        r.label_counts = self.steering.balance()
        r.keys = {s.fingerprint: s.stats for s in self.pool.states}
        r.key_state = {s.fingerprint: f"disabled: {s.disabled}" if s.disabled else "ok"
                       for s in self.pool.states}
        return r

    def interrupt(self) -> None:
        """Called in the loop's thread on Ctrl-C: cancel requests in flight, keep what is stored."""
        self._stop("interrupted")
        for w in getattr(self, "_workers", []):
            w.cancel()


def _run_in_thread(run: _Run) -> GenerationReport:
    """Run the event loop in a helper thread, so this works inside Jupyter (whose own loop is
    already running) and Ctrl-C reaches the main thread, which then stops the loop cleanly."""
    loop = asyncio.new_event_loop()
    outcome: dict[str, Any] = {}
    # An Event, not Thread.join: in Python 3.11 a Ctrl-C inside join() can leave the thread
    # looking finished while it still runs (the bpo-45274 fix releases its state lock).
    done = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            outcome["report"] = loop.run_until_complete(run.run())
        except BaseException as exc:  # handed over to the calling thread
            outcome["error"] = exc
        finally:
            loop.close()
            done.set()

    if run.tuning.progress:
        from tqdm.auto import tqdm

        # Made here, in the caller's thread: a notebook widget must be displayed from the
        # thread that runs the cell; updates from the loop's thread are fine.
        run.bar = tqdm(total=run.target, initial=run.stored, unit="row",
                       desc=f"{run.task.name} ({run.provider.name})", file=sys.stderr,
                       mininterval=0.5, dynamic_ncols=True)
    thread = threading.Thread(target=main, name="foundry-generate", daemon=True)
    thread.start()
    interrupted = False
    while not done.is_set():
        try:
            done.wait(0.2)
        except KeyboardInterrupt:
            if interrupted:
                raise  # second Ctrl-C: leave now (complete batches are on disk already)
            interrupted = True
            run.log("interrupted: stopping after the last complete batch ...")
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(run.interrupt)
    if run.bar is not None:
        run.bar.close()
    if "error" in outcome:
        raise outcome["error"]
    # report.stopped says "interrupted" only if the Ctrl-C reached the run before it ended.
    return outcome["report"]


def _configured_keys(entry: ProviderEntry, variables: Mapping[str, str]) -> list[ApiKey]:
    """The provider's keys, or :class:`MissingKeyError` when the environment lacks them."""
    if not any(variables.get(var, "").strip() for var in entry.key_variables):
        raise MissingKeyError(entry.missing_key)
    assert entry.keys is not None  # every LLM entry reads keys
    return entry.keys(variables)


def _open_run(bp: Blueprint, task: Task, entry: ProviderEntry, variables: Mapping[str, str],
              keys: list[ApiKey], model: str, store: RawStore, quarantine_path: Path,
              target: int, log: Callable[[str], None], tuning: Tuning) -> _Run:
    """The client, the quarantine and request logs (both redacted) and the run state."""
    gen = bp.spec.generation
    llm = make_provider(entry.name, variables, model=model, temperature=gen.temperature,
                        timeout_s=gen.request_timeout_s, on_notice=log)
    quarantine = Quarantine(quarantine_path, scrub=lambda line: redact(line, keys))
    requests_log = Quarantine(requests_log_path(store.path), scrub=lambda line: redact(line, keys))
    # The store holds its file's lock (RawStore): one generation per raw file at a time.
    run = _Run(bp, task, llm, keys, store, quarantine, target, log, tuning, requests_log)
    where = variables.get(entry.url_variable) if entry.url_variable else None
    run.log(f"{task.name}: {run.stored}/{target} rows stored; generating with {entry.name} "
            f"{model!r}{' at ' + where if where else ''} using {len(keys)} key(s) "
            f"({', '.join(k.fingerprint for k in keys)}), concurrency {gen.concurrency}")
    return run


def _report_stop(run: _Run, report: GenerationReport, target: int) -> None:
    """Log why the run stopped; raise when it was interrupted or failed."""
    task = run.task
    if report.stopped == "interrupted":
        run.log(report.summary())
        raise GenerationInterrupted(report)
    if run.fatal is not None:
        run.log(report.summary())
        err = run.fatal
        if isinstance(err, (GenerationError, AllKeysDisabledError)):
            err.report = report  # type: ignore[attr-defined]
        raise err
    if report.stopped == "exhausted":
        run.log(f"{task.name}: stopped with {report.rows_total}/{target} rows: "
                f"{run.tuning.max_barren_in_a_row} answers in a row added no new row (the "
                "model repeats what is stored); add diversity hints, raise the temperature "
                "or use a larger model")
    if report.stopped == "budget":
        run.log(f"{task.name}: stopped at the budget (max_requests={run.max_requests}, "
                f"max_tokens={run.max_tokens}) with {report.rows_total}/{target} rows; "
                "raise the budget and re-run to continue")


def generate_llm(bp: Blueprint, task: Task, *, provider: str, store: RawStore,
                 quarantine_path: Path, target: int, log: Callable[[str], None] = print,
                 env: Mapping[str, str] | None = None,
                 tuning: Tuning | None = None) -> GenerationReport:
    """Generate rows with an LLM until ``store`` holds ``target`` valid rows of ``task``.

    Parameters
    ----------
    bp : Blueprint
        Supplies ``generation`` settings (model, concurrency, pacing, retries, bounds,
        diversity) and the task's constitution prompt.
    task : Task
        The task to generate for; rows of other labels in the store do not count.
    provider : str
        An LLM provider of :mod:`foundry.generate.registry`: ``gemini`` (keys
        ``GEMINI_API_KEYS``, endpoint ``GEMINI_BASE_URL``) or ``openai``, any
        OpenAI-compatible server (``OPENAI_BASE_URL``, ``OPENAI_API_KEY`` may be empty).
    store : RawStore
        Where accepted rows go, one fsynced batch per request; rows already in it count.
    quarantine_path : Path
        JSONL file receiving every rejected row / unparseable answer with its reason.
    target : int
        Valid rows wanted in the store in total.
    log : callable
        Receives progress messages and the summary table (keys appear as fingerprints).
    env : mapping, optional
        Environment variables to use instead of ``os.environ`` + ``.env``.
    tuning : Tuning, optional
        Backoff, progress bar and budget overrides.

    Returns
    -------
    GenerationReport

    Raises
    ------
    MissingKeyError
        The environment does not configure the provider (its registry entry says how).
    AllKeysDisabledError
        The server rejected every key (message lists fingerprints and reasons).
    GenerationError
        Another reason the run cannot go on (unknown model, repeated failures, ...).
    GenerationInterrupted
        Ctrl-C; complete batches are stored, re-running continues.
    """
    if target < 0:
        raise ValueError(f"target must be >= 0, got {target}")
    entry = provider_entry(provider, llm=True)
    variables = load_env(env)
    keys = _configured_keys(entry, variables)
    model = getattr(bp.spec.generation, entry.model_field or "model")
    # Everything this run says or writes passes through the redaction (a server may echo a
    # key, or the credentials of its URL, back in an error body).
    log = redacting(log, keys)
    run = _open_run(bp, task, entry, variables, keys, model, store, quarantine_path, target,
                    log, tuning or Tuning())
    report = _run_in_thread(run)
    _report_stop(run, report, target)
    run.log(report.summary())
    return report
