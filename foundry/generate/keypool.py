"""A pool of API keys, each with its own cooldown, pacing and health.

Rules (issue 3):

* a 429 puts *that* key into cooldown for the server's ``RetryInfo`` / ``Retry-After`` delay,
  or for an exponential backoff with full jitter when the server gives none; other keys keep
  working;
* a 400/401/403 disables the key for the rest of the run (the message names its fingerprint);
* an optional per-key requests-per-minute limit paces each key evenly (one request every
  ``60 / rpm`` seconds), so a well-configured run never hits the server's limit at all;
* when every key is disabled, :meth:`KeyPool.acquire` raises :class:`AllKeysDisabledError`.

The pool is used from a single asyncio event loop; it needs no locks because it never awaits
between reading and updating a key's state.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from foundry.errors import GenerationError
from foundry.secrets import ApiKey


class AllKeysDisabledError(GenerationError):
    """Every key of the pool was rejected by the server; the message lists fingerprints only."""


@dataclass
class KeyStats:
    """Counters of one key, reported by fingerprint."""

    requests: int = 0
    ok: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    timeouts: int = 0
    rows: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cooldown_s: float = 0.0


@dataclass
class KeyState:
    """Mutable state of one key in the pool."""

    key: ApiKey
    cooldown_until: float = 0.0
    next_slot: float = 0.0
    consecutive_429: int = 0
    disabled: str | None = None
    in_flight: int = 0
    stats: KeyStats = field(default_factory=KeyStats)

    @property
    def fingerprint(self) -> str:
        return self.key.fingerprint


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**(attempt-1)))``.

    A floor of ``base / 2`` keeps a retry from firing instantly.
    """

    base_s: float = 1.0
    cap_s: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.cap_s, self.base_s * 2 ** max(0, attempt - 1))
        return max(self.base_s / 2, rng.uniform(0, ceiling))


class KeyPool:
    """Hands out keys that are usable now, or waits until one is.

    Parameters
    ----------
    keys : sequence of ApiKey
        At least one key.
    requests_per_minute : float, optional
        Per-key pacing; ``None`` means no client-side limit.
    backoff : Backoff
        Cooldown used after a 429 that carries no delay.
    clock : callable
        Monotonic seconds (tests may pass a fake clock).
    seed : int
        Seed of the jitter.
    """

    def __init__(self, keys: Sequence[ApiKey], *, requests_per_minute: float | None = None,
                 backoff: Backoff | None = None, clock: Callable[[], float] = time.monotonic,
                 seed: int = 0) -> None:
        if not keys:
            raise ValueError("KeyPool needs at least one key")
        self.states = [KeyState(k) for k in keys]
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.rng = random.Random(seed)
        self._turn = 0

    # -- choosing a key --------------------------------------------------------------

    def _ready_at(self, s: KeyState) -> float:
        return max(s.cooldown_until, s.next_slot)

    def try_acquire(self) -> KeyState | float:
        """A key usable now (its pacing slot is taken), or the seconds until one will be.

        Among ready keys the one with fewest requests in flight wins, ties broken in
        round-robin order so that the load spreads over all keys.

        Raises
        ------
        AllKeysDisabledError
            When no key is left.
        """
        live = [s for s in self.states if s.disabled is None]
        if not live:
            raise AllKeysDisabledError(self.describe_disabled())
        now = self.clock()
        n = len(self.states)
        ready = [s for s in live if self._ready_at(s) <= now]
        if not ready:
            return min(self._ready_at(s) for s in live) - now
        order = {id(s): (i - self._turn) % n for i, s in enumerate(self.states)}
        best = min(ready, key=lambda s: (s.in_flight, order[id(s)]))
        self._turn = (self.states.index(best) + 1) % n
        if self.interval:
            # Even pacing: the next slot follows this one, never earlier than now.
            best.next_slot = max(now, best.next_slot) + self.interval
        best.in_flight += 1
        best.stats.requests += 1
        return best

    async def acquire(self, *, max_wait_s: float = 1.0) -> KeyState:
        """Wait until a key is usable and return it (call :meth:`release` when done)."""
        while True:
            got = self.try_acquire()
            if isinstance(got, KeyState):
                return got
            # Sleep in short steps: another coroutine may take the slot we wait for.
            await asyncio.sleep(min(max(got, 0.001), max_wait_s))

    def release(self, s: KeyState) -> None:
        s.in_flight = max(0, s.in_flight - 1)

    # -- outcomes --------------------------------------------------------------------

    def report_ok(self, s: KeyState, *, tokens_in: int = 0, tokens_out: int = 0) -> None:
        s.consecutive_429 = 0
        s.stats.ok += 1
        s.stats.tokens_in += tokens_in
        s.stats.tokens_out += tokens_out

    def report_rate_limited(self, s: KeyState, retry_after_s: float | None) -> float:
        """Put the key into cooldown; returns the delay chosen."""
        s.consecutive_429 += 1
        s.stats.rate_limited += 1
        if retry_after_s is None or retry_after_s < 0:
            delay = self.backoff.delay(s.consecutive_429, self.rng)
        else:
            delay = retry_after_s
        s.cooldown_until = max(s.cooldown_until, self.clock() + delay)
        s.stats.cooldown_s += delay
        return delay

    def report_server_error(self, s: KeyState, *, timeout: bool = False) -> None:
        if timeout:
            s.stats.timeouts += 1
        else:
            s.stats.server_errors += 1

    def disable(self, s: KeyState, reason: str) -> None:
        """Take the key out of the pool for the rest of the run."""
        if s.disabled is None:
            s.disabled = reason

    # -- reporting -------------------------------------------------------------------

    @property
    def live(self) -> list[KeyState]:
        return [s for s in self.states if s.disabled is None]

    def describe_disabled(self) -> str:
        reasons = "; ".join(f"{s.fingerprint}: {s.disabled}" for s in self.states)
        return f"all {len(self.states)} API key(s) were rejected by the server ({reasons})"
