"""The refine stage with its LSH index in a real Redis (datasketch ``storage_config``).

The test starts its own ``redis-server`` on 127.0.0.1 on a free port, with no persistence,
and stops it afterwards. CI (``.ci/run``) installs Debian's ``redis-server`` first.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
from test_refine import LONG, TASK, paraphrase_rows, random_groups, row

from foundry import minhash as mh
from foundry.blueprint import Refine
from foundry.refine import refine_rows

REDIS = shutil.which("redis-server")
LONG2 = "请帮我把明天上午九点和市场部同事开会讨论下季度预算的事情记到日程里并且提前半小时提醒我准备材料"
pytestmark = pytest.mark.skipif(
    REDIS is None,
    reason="redis-server not found; install it with `apt-get install redis-server` "
    "(Debian/Ubuntu) to run the Redis-backed LSH test",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_config():
    import redis

    port = _free_port()
    proc = subprocess.Popen(
        [REDIS, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            pytest.fail(f"redis-server on 127.0.0.1:{port} did not answer within 5 s")
        yield {"type": "redis", "redis": {"host": "127.0.0.1", "port": port}}, client
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_redis_buckets_equal_in_memory_buckets(redis_config):
    config, client = redis_config
    texts = [LONG, LONG[:10] + "去" + LONG[11:], LONG[:30] + "啊" + LONG[31:], "完全不同的一句话"]
    sets = [mh.shingles(t, 3) for t in texts]
    sigs = mh.signatures(sets, num_perm=128, seed=1, progress=False)
    in_redis = mh.lsh_buckets(sigs, threshold=0.8, num_perm=128, storage_config=config)
    in_memory = mh.lsh_buckets(sigs, threshold=0.8, num_perm=128)
    assert in_redis and in_redis == in_memory
    # The index is removed from Redis afterwards.
    assert client.dbsize() == 0


def test_refine_rows_with_redis_matches_in_memory(redis_config):
    config, client = redis_config
    rows = random_groups(12) + paraphrase_rows(10) + [
        row(LONG), row(LONG[:-1] + "熊", "Statement"),  # a conflict
        row(LONG2, "Statement"), row(LONG2[:5] + "想" + LONG2[6:], "Statement")]  # near-dups
    cfg = Refine(drop_punctuation_augment=0.5)
    with_redis = refine_rows(rows, TASK, cfg, exam_texts=["北京明天的天气预报如何"],
                             storage_config=config)
    in_memory = refine_rows(rows, TASK, cfg, exam_texts=["北京明天的天气预报如何"])
    assert with_redis.train_bytes() == in_memory.train_bytes()
    assert with_redis.test_bytes() == in_memory.test_bytes()
    assert with_redis.summary == in_memory.summary
    removed = with_redis.summary.removed_by_reason
    assert removed["near_duplicate"] >= 1 and removed["conflict"] >= 2
    assert client.dbsize() == 0
