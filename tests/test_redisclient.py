"""The standard-library Redis client: URLs, the RESP reader, and every feature against a real
redis-server (tests/redisutil.py starts one per test on a free loopback port)."""

from __future__ import annotations

import io
import ssl
import threading

import pytest

from clinvk_lib.redisclient import (Client, ReplyError, ReplyReader, RedisUnavailable, Script,
                                    encode_command, parse_url)
from tests.redisutil import RedisServer, free_port


@pytest.fixture
def redis(tmp_path):
    with RedisServer(str(tmp_path)) as server:
        yield server


def read_all(data: bytes):
    reader = ReplyReader(io.BufferedReader(io.BytesIO(data)))
    return reader.read()


# -- URLs ------------------------------------------------------------------------------------


def test_url_gives_host_port_database_and_credentials():
    url = parse_url("redis://app:s%40cret@cache.internal:6380/4")
    assert (url.tls, url.host, url.port, url.db, url.username, url.password) == \
        (False, "cache.internal", 6380, 4, "app", "s@cret")


def test_url_defaults_to_port_6379_and_database_0():
    url = parse_url("rediss://cache")
    assert (url.tls, url.port, url.db, url.protocol) == (True, 6379, 0, 2)


def test_redacted_url_never_shows_the_password():
    assert parse_url("redis://app:hunter2@h:1/2").redacted() == "redis://app:***@h:1/2"
    assert parse_url("redis://:hunter2@h/0").redacted() == "redis://:***@h:6379/0"


@pytest.mark.parametrize("url, words", [
    ("http://h:6379/0", "redis:// or rediss://"),
    ("redis://h:6379/zero", "database must be a number"),
    ("redis:///0", "names no host"),
    ("redis://h:99999/0", "not a Redis URL"),
    ("redis://h/0?timeout=3", "protocol=2 or protocol=3"),
])
def test_bad_url_is_refused_saying_what_is_wrong(url, words):
    with pytest.raises(ValueError, match=words):
        parse_url(url)


def test_bad_url_error_does_not_repeat_the_password():
    with pytest.raises(ValueError) as err:
        parse_url("http://app:hunter2@h/0")
    assert "hunter2" not in str(err.value)


# -- the protocol ----------------------------------------------------------------------------


def test_command_is_an_array_of_bulk_strings():
    assert encode_command(["SET", "k", 12]) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n"


def test_command_argument_of_another_type_is_refused():
    with pytest.raises(TypeError, match="bytes, str, int or float"):
        encode_command(["SET", "k", None])


@pytest.mark.parametrize("data, value", [
    (b"+OK\r\n", "OK"),
    (b":-7\r\n", -7),
    (b"$3\r\na\r\n\r\n", b"a\r\n"),
    (b"$-1\r\n", None),
    (b"*2\r\n:1\r\n$1\r\nx\r\n", [1, b"x"]),
    (b"_\r\n", None),
    (b"#t\r\n", True),
    (b",1.5\r\n", 1.5),
    (b",inf\r\n", float("inf")),
    (b"(123456789012345678901234567890\r\n", 123456789012345678901234567890),
    (b"=7\r\ntxt:abc\r\n", b"abc"),
    (b"~1\r\n+a\r\n", ["a"]),
    (b"%1\r\n+k\r\n:2\r\n", {"k": 2}),
    (b"|1\r\n+ttl\r\n:3\r\n:9\r\n", 9),
])
def test_reader_parses_resp2_and_resp3_replies(data, value):
    assert read_all(data) == value


def test_error_reply_is_returned_not_raised_with_its_code():
    reply = read_all(b"-WRONGTYPE Operation against a key\r\n")
    assert isinstance(reply, ReplyError) and reply.code == "WRONGTYPE"


def test_reader_refuses_bytes_that_are_not_resp():
    with pytest.raises(RedisUnavailable, match="unexpected reply type"):
        read_all(b"HTTP/1.1 400 Bad Request\r\n")


def test_reader_says_when_the_server_closed_mid_reply():
    with pytest.raises(RedisUnavailable, match="closed"):
        read_all(b"$10\r\nabc")


# -- against redis-server --------------------------------------------------------------------


def test_set_and_get_through_the_pool(redis):
    client = Client(redis.url)
    assert client.execute("SET", "k", "v") == "OK"
    assert client.execute("GET", "k") == b"v"
    client.close()


def test_pipeline_sends_every_command_and_returns_replies_in_order(redis):
    client = Client(redis.url)
    commands = [("RPUSH", "list", i) for i in range(200)] + [("LRANGE", "list", 0, 2)]
    replies = client.pipeline(commands)
    assert replies[:200] == list(range(1, 201))
    assert replies[200] == [b"0", b"1", b"2"]


def test_pipeline_returns_an_error_in_its_commands_place(redis):
    client = Client(redis.url)
    replies = client.pipeline([("SET", "s", "x"), ("INCR", "s"), ("GET", "s")])
    assert replies[0] == "OK" and replies[2] == b"x"
    assert isinstance(replies[1], ReplyError) and "not an integer" in str(replies[1])


def test_multi_exec_in_a_pipeline_runs_as_one_transaction(redis):
    client = Client(redis.url)
    replies = client.pipeline([("MULTI",), ("INCR", "n"), ("INCR", "n"), ("EXEC",)])
    assert replies == ["OK", "QUEUED", "QUEUED", [1, 2]]


def test_error_reply_raises_naming_the_url(redis):
    client = Client(redis.url)
    with pytest.raises(ReplyError, match=r"unknown command.*redis://127\.0\.0\.1:%d/0"
                       % redis.port):
        client.execute("NOSUCHCOMMAND")


def test_password_is_sent_with_auth(tmp_path):
    with RedisServer(str(tmp_path), password="hunter2") as server:
        assert Client(server.url).execute("PING") == "PONG"


def test_wrong_password_fails_naming_the_url_without_the_password(tmp_path):
    with RedisServer(str(tmp_path), password="hunter2") as server:
        client = Client("redis://:wrong-pass@127.0.0.1:%d/0" % server.port)
        with pytest.raises(ReplyError) as err:
            client.execute("PING")
        assert err.value.code == "WRONGPASS"
        assert "redis://:***@127.0.0.1" in str(err.value) and "wrong-pass" not in str(err.value)


def test_database_in_the_url_is_selected(redis):
    Client(redis.url.replace("/0", "/3")).execute("SET", "where", "three")
    assert Client(redis.url).execute("GET", "where") is None
    assert Client(redis.url.replace("/0", "/3")).execute("GET", "where") == b"three"


def test_protocol_3_gives_maps_as_dicts(redis):
    client = Client(redis.url + "?protocol=3")
    client.execute("HSET", "h", "a", "1")
    assert client.execute("HGETALL", "h") == {b"a": b"1"}


def test_key_puts_the_prefix_in_front(redis):
    client = Client(redis.url, prefix="team1:")
    client.execute("SET", client.key("jobs"), "x")
    assert Client(redis.url).execute("GET", "team1:jobs") == b"x"


def test_script_runs_atomically_and_is_loaded_once(redis):
    client = Client(redis.url)
    script = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert client.run_script(script, ["c"], [5]) == 5
    assert client.execute("SCRIPT", "EXISTS", script.sha1) == [1]
    assert client.run_script(script, ["c"], [5]) == 10


def test_pool_never_opens_more_than_max_connections(redis):
    client = Client(redis.url, max_connections=2)
    errors = []

    def work():
        try:
            for _ in range(50):
                client.execute("INCR", "hits")
        except Exception as exc:   # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert client.execute("GET", "hits") == b"400"
    clients = Client(redis.url).execute("CLIENT", "LIST").decode().strip().splitlines()
    assert len(clients) <= 3     # the pool's two and the one asking


def test_pooled_connection_survives_a_redis_restart(redis):
    client = Client(redis.url)
    client.execute("SET", "k", "v")
    redis.stop()
    redis.start()
    assert client.execute("GET", "k") is None     # a new, empty server: reached again


def test_unreachable_redis_is_named_and_then_refused_at_once(redis):
    redis.stop()
    client = Client(redis.url, connect_attempts=2)
    with pytest.raises(RedisUnavailable, match=r"redis://127\.0\.0\.1:\d+/0: cannot connect"):
        client.execute("PING")
    with pytest.raises(RedisUnavailable, match="unreachable; the next attempt is in"):
        client.execute("PING")


def test_back_off_window_passes_and_redis_is_reached_again(redis):
    now = [0.0]
    client = Client(redis.url, connect_attempts=1, clock=lambda: now[0])
    redis.stop()
    with pytest.raises(RedisUnavailable):
        client.execute("PING")
    redis.start()
    with pytest.raises(RedisUnavailable, match="next attempt"):
        client.execute("PING")
    now[0] += Client.MAX_BACKOFF_SECS
    assert client.execute("PING") == "PONG"


def test_read_timeout_breaks_a_command_that_does_not_answer(redis):
    client = Client(redis.url, read_timeout=0.2)
    with pytest.raises(RedisUnavailable, match="timed out"):
        client.execute("BLPOP", "never", 0)
    assert client.execute("BLPOP", "never", 0.1, timeout=5) is None


def test_nothing_listening_is_unavailable_not_a_crash():
    client = Client("redis://:hunter2@127.0.0.1:%d/0" % free_port(), connect_attempts=1)
    with pytest.raises(RedisUnavailable, match="cannot connect") as err:
        client.execute("PING")
    assert "hunter2" not in str(err.value)


def test_tls_url_talks_tls_with_the_given_certificate_authority(tmp_path):
    with RedisServer(str(tmp_path), tls=True) as server:
        context = ssl.create_default_context(cafile=server.ca_file)
        client = Client(server.tls_url, ssl_context=context)
        assert client.execute("PING") == "PONG"
        untrusting = Client(server.tls_url, connect_attempts=1)
        with pytest.raises(RedisUnavailable, match="rediss://localhost"):
            untrusting.execute("PING")
