"""KeyPool: rotation, cooldown after 429, pacing, disabling — on a fake clock."""

from __future__ import annotations

import asyncio
import random

import pytest

from foundry.generate.keypool import AllKeysDisabledError, Backoff, KeyPool, KeyState
from foundry.secrets import ApiKey


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def pool_of(n: int, **kw) -> tuple[KeyPool, Clock]:
    clock = Clock()
    return KeyPool([ApiKey(f"secret-{i}") for i in range(n)], clock=clock, **kw), clock


def take(pool: KeyPool) -> KeyState:
    got = pool.try_acquire()
    assert isinstance(got, KeyState), f"no key ready, wait {got}"
    pool.release(got)
    return got


def test_keys_rotate_round_robin():
    pool, _ = pool_of(3)
    names = [take(pool).key.reveal() for _ in range(6)]
    assert names == ["secret-0", "secret-1", "secret-2"] * 2


def test_least_busy_key_is_preferred():
    pool, _ = pool_of(2)
    first = pool.try_acquire()  # held, in flight
    assert isinstance(first, KeyState)
    for _ in range(3):
        assert take(pool) is not first


def test_cooled_down_key_is_skipped_until_its_delay_passes():
    pool, clock = pool_of(2)
    a = take(pool)
    assert pool.report_rate_limited(a, 5.0) == 5.0
    for _ in range(4):
        assert take(pool) is not a
    clock.t += 4.9
    assert all(take(pool) is not a for _ in range(3))
    clock.t += 0.2
    assert any(take(pool) is a for _ in range(2))


def test_all_cooling_returns_wait_until_first_ready():
    pool, clock = pool_of(2)
    a, b = take(pool), take(pool)
    pool.report_rate_limited(a, 3.0)
    pool.report_rate_limited(b, 1.5)
    assert pool.try_acquire() == pytest.approx(1.5)
    clock.t += 1.5
    assert take(pool) is b


def test_429_without_delay_uses_growing_jittered_backoff():
    pool, _ = pool_of(1, backoff=Backoff(base_s=1.0, cap_s=8.0), seed=3)
    a = pool.states[0]
    delays = [pool.report_rate_limited(a, None) for _ in range(6)]
    assert all(0.5 <= d <= 8.0 for d in delays)
    ceilings = [min(8.0, 2 ** i) for i in range(6)]
    assert all(d <= c for d, c in zip(delays, ceilings, strict=True))
    pool.report_ok(a)
    assert a.consecutive_429 == 0


def test_backoff_is_bounded_and_never_zero():
    b = Backoff(base_s=0.1, cap_s=2.0)
    rng = random.Random(0)
    ds = [b.delay(k, rng) for k in range(1, 30)]
    assert min(ds) >= 0.05 and max(ds) <= 2.0


def test_requests_per_minute_paces_each_key_evenly():
    pool, clock = pool_of(2, requests_per_minute=30)  # one request per 2 s per key
    a, b = take(pool), take(pool)
    assert a is not b
    assert pool.try_acquire() == pytest.approx(2.0)
    clock.t += 2.0
    assert take(pool) is a and take(pool) is b
    # Over 60 s each key is handed out 30 times, never more.
    pool, clock = pool_of(1, requests_per_minute=30)
    handed = 0
    while clock.t < 1060.0:
        got = pool.try_acquire()
        if isinstance(got, KeyState):
            pool.release(got)
            handed += 1
        else:
            clock.t += got
    assert handed == 30


def test_disabled_keys_are_never_used_and_all_disabled_raises():
    pool, _ = pool_of(2)
    a, b = pool.states
    pool.disable(a, "401: Incorrect API key provided.")
    assert all(take(pool) is b for _ in range(3))
    pool.disable(b, "403: PERMISSION_DENIED")
    with pytest.raises(AllKeysDisabledError) as info:
        pool.try_acquire()
    msg = str(info.value)
    assert a.fingerprint in msg and b.fingerprint in msg and "PERMISSION_DENIED" in msg
    assert "secret-0" not in msg and "secret-1" not in msg


def test_async_acquire_waits_for_cooldown():
    pool = KeyPool([ApiKey("only")])
    s = pool.states[0]
    pool.report_rate_limited(s, 0.15)

    async def go() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        got = await pool.acquire()
        assert got is s
        return loop.time() - t0

    assert 0.14 <= asyncio.run(go()) < 1.0


def test_stats_count_per_key():
    pool, _ = pool_of(1)
    s = take(pool)
    pool.report_ok(s, tokens_in=10, tokens_out=20)
    pool.report_server_error(s)
    pool.report_server_error(s, timeout=True)
    pool.report_rate_limited(s, 1.0)
    st = s.stats
    assert (st.requests, st.ok, st.server_errors, st.timeouts, st.rate_limited) == (1, 1, 1, 1, 1)
    assert (st.tokens_in, st.tokens_out, st.cooldown_s) == (10, 20, 1.0)


def test_empty_pool_is_an_error():
    with pytest.raises(ValueError, match="at least one key"):
        KeyPool([])
