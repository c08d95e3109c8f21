"""Token buckets per client and the client address behind trusted proxies."""

from __future__ import annotations

import email.message
import threading

import pytest

from clinvk_lib.server.ratelimit import Decision, RateLimiter, client_ip, parse_trusted


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limiter(rps=1.0, burst=3):
    clock = FakeClock()
    return RateLimiter(rps, burst, clock=clock), clock


# --- the bucket -------------------------------------------------------------------------------


def test_new_client_may_use_its_whole_burst_then_is_refused():
    rl, _ = limiter(burst=3)
    assert [rl.check("a").allowed for _ in range(4)] == [True, True, True, False]


def test_remaining_counts_down_and_limit_is_the_burst():
    rl, _ = limiter(burst=3)
    assert [(d.limit, d.remaining) for d in (rl.check("a") for _ in range(4))] == \
        [(3, 2), (3, 1), (3, 0), (3, 0)]


def test_tokens_come_back_at_the_configured_rate():
    rl, clock = limiter(rps=2.0, burst=1)
    rl.check("a")
    clock.advance(0.4)
    assert not rl.check("a").allowed
    clock.advance(0.1)
    assert rl.check("a").allowed


def test_refill_never_exceeds_the_burst():
    rl, clock = limiter(rps=1.0, burst=3)
    rl.check("a")
    clock.advance(2.5)        # 4.5 tokens without the cap; still inside the 3 s idle window
    assert [rl.check("a").allowed for _ in range(4)] == [True, True, True, False]


def test_clients_have_separate_buckets():
    rl, _ = limiter(burst=1)
    assert rl.check("a").allowed and not rl.check("a").allowed
    assert rl.check("b").allowed


def test_retry_after_is_the_time_until_a_token_is_back():
    rl, clock = limiter(rps=2.0, burst=1)
    rl.check("a")
    assert rl.check("a").retry_after == pytest.approx(0.5)
    clock.advance(0.2)
    assert rl.check("a").retry_after == pytest.approx(0.3)


def test_allowed_decision_has_no_retry_after():
    rl, _ = limiter()
    assert rl.check("a").retry_after == 0.0


@pytest.mark.parametrize("seconds, header", [(0.3, "1"), (1.0, "1"), (1.2, "2"), (0.0, "1")])
def test_retry_after_header_is_whole_seconds_rounded_up(seconds, header):
    assert Decision(False, 1, 0, seconds).retry_after_header() == header


def test_bucket_idle_until_full_is_dropped():
    rl, clock = limiter(rps=1.0, burst=3)
    rl.check("a")
    clock.advance(3.0)
    rl.check("b")
    assert len(rl) == 1


def test_bucket_not_yet_refilled_is_kept():
    rl, clock = limiter(rps=1.0, burst=3)
    for _ in range(3):
        rl.check("a")
    clock.advance(2.9)
    rl.check("b")
    assert len(rl) == 2
    assert rl.check("a").remaining == 1       # 2.9 tokens back, one taken: not a fresh bucket


def test_memory_stays_bounded_under_many_clients():
    rl, clock = limiter(rps=1.0, burst=2)     # a bucket is full again after 2 s
    for second in range(100):
        for client in range(100):
            rl.check("%d-%d" % (second, client))
        clock.advance(1.0)
    assert len(rl) <= 300


def test_concurrent_checks_never_hand_out_more_than_the_burst():
    rl, _ = limiter(burst=50)                 # the fake clock stands still: no refill
    results = []
    lock = threading.Lock()

    def worker():
        mine = [rl.check("shared").allowed for _ in range(100)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 50


@pytest.mark.parametrize("rps, burst", [(0, 5), (-1, 5), (1, 0)])
def test_invalid_rate_or_burst_is_refused(rps, burst):
    with pytest.raises(ValueError):
        RateLimiter(rps, burst)


# --- client address ---------------------------------------------------------------------------

PROXIES = parse_trusted(["10.0.0.0/8", "192.168.1.1", "fd00::/8"])


def headers(*pairs):
    msg = email.message.Message()
    for name, value in pairs:
        msg[name] = value
    return msg


def test_forged_x_forwarded_for_from_an_untrusted_peer_is_ignored():
    assert client_ip("203.0.113.9", headers(("X-Forwarded-For", "1.2.3.4")), PROXIES) == \
        "203.0.113.9"


def test_rightmost_untrusted_hop_is_the_client():
    h = headers(("X-Forwarded-For", "6.6.6.6, 198.51.100.7, 10.1.2.3"))
    assert client_ip("192.168.1.1", h, PROXIES) == "198.51.100.7"


def test_hops_left_of_the_client_may_be_garbage():
    h = headers(("X-Forwarded-For", "not-an-ip, 198.51.100.7"))
    assert client_ip("10.0.0.1", h, PROXIES) == "198.51.100.7"


def test_malformed_hop_written_by_a_trusted_proxy_falls_back_to_the_peer():
    h = headers(("X-Forwarded-For", "198.51.100.7, garbage"))
    assert client_ip("10.0.0.1", h, PROXIES) == "10.0.0.1"


def test_all_hops_trusted_gives_the_leftmost():
    h = headers(("X-Forwarded-For", "10.9.9.9, 10.0.0.2"))
    assert client_ip("10.0.0.1", h, PROXIES) == "10.9.9.9"


def test_several_x_forwarded_for_lines_form_one_list():
    h = headers(("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-For", "10.0.0.3"))
    assert client_ip("10.0.0.1", h, PROXIES) == "198.51.100.7"


def test_trusted_peer_without_the_header_is_the_client():
    assert client_ip("10.0.0.1", headers(), PROXIES) == "10.0.0.1"


def test_x_forwarded_for_hop_with_a_port():
    h = headers(("X-Forwarded-For", "198.51.100.7:4711, [2001:db8::1]:80"))
    assert client_ip("10.0.0.1", h, PROXIES) == "2001:db8::1"


def test_forwarded_header_with_quoted_ipv6_and_port():
    h = headers(("Forwarded", 'for=198.51.100.7;proto=http, for="[2001:db8:cafe::17]:4711"'))
    assert client_ip("10.0.0.1", h, PROXIES, header="forwarded") == "2001:db8:cafe::17"


def test_forwarded_parameters_are_case_insensitive_and_may_come_in_any_order():
    h = headers(("Forwarded", 'proto=https;For="198.51.100.7:80";by=10.0.0.1'))
    assert client_ip("10.0.0.1", h, PROXIES, header="forwarded") == "198.51.100.7"


def test_forwarded_rightmost_untrusted_hop_is_the_client():
    h = headers(("Forwarded", "for=6.6.6.6"), ("Forwarded", "for=198.51.100.7, for=10.0.0.9"))
    assert client_ip("10.0.0.1", h, PROXIES, header="forwarded") == "198.51.100.7"


def test_forwarded_unknown_or_obfuscated_hop_falls_back_to_the_peer():
    for value in ("for=unknown", "for=_hidden", "proto=http"):
        h = headers(("Forwarded", value))
        assert client_ip("10.0.0.1", h, PROXIES, header="forwarded") == "10.0.0.1"


def test_header_the_proxy_does_not_write_is_ignored():
    # The proxy appends to X-Forwarded-For; a Forwarded header can only come from the client.
    h = headers(("Forwarded", "for=1.2.3.4"), ("X-Forwarded-For", "198.51.100.7"))
    assert client_ip("10.0.0.1", h, PROXIES) == "198.51.100.7"


def test_ipv4_mapped_ipv6_peer_matches_an_ipv4_entry():
    h = headers(("X-Forwarded-For", "198.51.100.7"))
    assert client_ip("::ffff:10.0.0.1", h, PROXIES) == "198.51.100.7"


def test_ipv6_peer_inside_a_trusted_network():
    h = headers(("X-Forwarded-For", "2001:db8::5"))
    assert client_ip("fd00::1", h, PROXIES) == "2001:db8::5"


def test_untrusted_ipv6_peer_is_returned_normalised():
    assert client_ip("2001:DB8:0::1", headers(), PROXIES) == "2001:db8::1"


def test_bad_trusted_proxy_entry_is_named():
    with pytest.raises(ValueError, match="trusted_proxies: 'proxy.local' is not an IP address"):
        parse_trusted(["10.0.0.1", "proxy.local"])


def test_trusted_network_written_with_host_bits_means_the_whole_network():
    trusted = parse_trusted(["10.0.0.1/8"])
    assert client_ip("10.200.0.1", headers(("X-Forwarded-For", "1.2.3.4")), trusted) == "1.2.3.4"


def test_empty_trusted_list_trusts_nobody():
    trusted = parse_trusted([])
    assert not trusted
    assert client_ip("10.0.0.1", headers(("X-Forwarded-For", "1.2.3.4")), trusted) == "10.0.0.1"
