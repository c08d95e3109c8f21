"""Rate limits with the buckets in Redis (server.store): one global limit across nodes, and
the fail-closed / fail-open choice while Redis is down. A real redis-server per test."""

from __future__ import annotations

import threading

import pytest

from clinvk_lib.config import ConfigError, load
from clinvk_lib.redisclient import Client, RedisUnavailable
from clinvk_lib.server.ratelimit_shared import SharedRateLimiter
from tests.redisutil import RedisServer
from tests.serveproc import ServeProcess
from tests.serverutil import start_server  # noqa: F401  (a fixture)



def node(redis, burst=5, rps=0.001, fail_open=False) -> SharedRateLimiter:
    """One node's limiter, with its own connections, as another process would have."""
    return SharedRateLimiter(Client(redis.url, prefix="t:", connect_attempts=1), rps, burst,
                             fail_open)


def limited(redis, **extra):
    """Settings for a node on ``redis``: two requests per client, refilled so slowly that
    none comes back within a test."""
    return dict({"server.store": redis.url, "server.rate_limit_enabled": True,
                 "server.rate_limit_rps": 0.01, "server.rate_limit_burst": 2}, **extra)


# -- the limiter -------------------------------------------------------------------------------


def test_two_nodes_together_admit_one_burst_not_two(redis):
    a, b = node(redis), node(redis)
    admitted = [limiter.check("ip:10.0.0.1").allowed for _ in range(5) for limiter in (a, b)]
    assert sum(admitted) == 5


def test_concurrent_checks_on_two_nodes_never_exceed_the_burst(redis):
    nodes = [node(redis, burst=40), node(redis, burst=40)]
    results = []
    lock = threading.Lock()

    def client(limiter):
        mine = [limiter.check("shared").allowed for _ in range(30)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=client, args=(nodes[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 40


def test_refused_request_says_when_a_token_is_back(redis):
    limiter = node(redis, burst=1, rps=0.5)
    assert limiter.check("k").allowed
    refused = limiter.check("k")
    assert not refused.allowed and refused.remaining == 0
    assert 0 < refused.retry_after <= 2.0


def test_remaining_counts_down_from_the_burst(redis):
    limiter = node(redis, burst=3)
    assert [limiter.check("k").remaining for _ in range(3)] == [2, 1, 0]


def test_each_client_has_its_own_bucket(redis):
    limiter = node(redis, burst=1)
    assert limiter.check("ip:10.0.0.1").allowed and limiter.check("ip:10.0.0.2").allowed
    assert not limiter.check("ip:10.0.0.1").allowed


def test_bucket_lives_under_the_prefix_and_expires_once_refilled(redis):
    node(redis, burst=2, rps=1.0).check("ip:10.0.0.1")
    ttl_ms = Client(redis.url).execute("PTTL", "t:ratelimit:ip:10.0.0.1")
    assert 0 < ttl_ms <= 3000       # burst / rps seconds, and one more


def test_store_down_fails_closed_by_default(redis):
    limiter = node(redis)
    redis.stop()
    with pytest.raises(RedisUnavailable, match=r"redis://127\.0\.0\.1:\d+/0"):
        limiter.check("k")


def test_store_down_with_fail_open_admits(redis):
    limiter = node(redis, fail_open=True)
    redis.stop()
    assert limiter.check("k").allowed


# -- the server --------------------------------------------------------------------------------


def test_two_servers_share_one_limit(redis, start_server):
    a, b = start_server(**limited(redis)), start_server(**limited(redis))
    statuses = [srv.get("/health").status for srv in (a, b, a, b)]
    assert statuses == [200, 200, 429, 429]


def test_server_with_the_store_down_answers_503_naming_the_setting(redis, start_server):
    srv = start_server(**limited(redis))
    redis.stop()
    reply = srv.get("/health")
    assert reply.status == 503 and reply.headers["Retry-After"] == "1"
    body = reply.json()
    assert body["error"] == "rate_limit_store_unavailable"
    assert "server.rate_limit_fail_open" in body["message"]


def test_server_with_the_store_down_and_fail_open_serves(redis, start_server):
    srv = start_server(**limited(redis, **{"server.rate_limit_fail_open": True}))
    redis.stop()
    assert [srv.get("/health").status for _ in range(4)] == [200] * 4


def test_503_in_the_openai_shape(redis, start_server):
    srv = start_server(**limited(redis))
    redis.stop()
    reply = srv.post("/openai/v1/chat/completions",
                     {"model": "claude", "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status == 503 and reply.json()["error"]["code"] == "rate_limit_store_unavailable"


def test_password_of_the_store_never_reaches_the_client(tmp_path, start_server):
    with RedisServer(str(tmp_path / "r"), password="hunter2") as server:
        srv = start_server(**limited(server))
        server.stop()
        reply = srv.get("/health")
    assert reply.status == 503 and "hunter2" not in reply.body.decode()


def test_store_url_is_checked_when_the_settings_load(tmp_path):
    with pytest.raises(ConfigError, match=r"server\.store.*redis:// or rediss://"):
        load(None, env={"CLINVK_HOME": str(tmp_path)},
             flags={"server.store": "http://cache:6379/0"})


def test_store_url_is_masked_in_the_settings_listing(tmp_path):
    cfg = load(None, env={"CLINVK_HOME": str(tmp_path)},
               flags={"server.store": "redis://:hunter2@cache:6379/0"})
    assert dict((key, value) for key, value, _, _ in cfg.rows())["server.store"] == "****"


def test_two_serve_processes_on_one_redis_share_one_limit(redis, tmp_path):
    config = {"server": {"store": redis.url, "rate_limit_enabled": True,
                         "rate_limit_rps": 0.01, "rate_limit_burst": 3}}
    nodes = [ServeProcess(str(tmp_path / name), config=config) for name in ("a", "b")]
    try:
        statuses = [srv.get("/health").status for _ in range(3) for srv in nodes]
    finally:
        for srv in nodes:
            srv.stop()
    assert sorted(statuses) == [200] * 3 + [429] * 3

