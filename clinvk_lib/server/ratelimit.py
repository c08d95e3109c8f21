"""Per-client rate limiting: a token bucket per client key, the address to key on when the
server sits behind trusted reverse proxies, and the share of the address space one client is
(an IPv4 address, or an IPv6 /64)."""

from __future__ import annotations

import collections
import email.message
import ipaddress
import logging
import math
import re
import threading
import time
from typing import Callable, Iterable, List, NamedTuple, Optional, Tuple, Union

from ..config import setting

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

log = logging.getLogger("clinvk.server")


class Decision(NamedTuple):
    """The outcome of one ``RateLimiter.check``: the values of the 429 and RateLimit headers."""

    allowed: bool
    limit: int              # bucket size (RateLimit-Limit)
    remaining: int          # whole tokens left after this request (RateLimit-Remaining)
    retry_after: float      # seconds until a token is back; 0.0 when allowed

    def retry_after_header(self) -> str:
        """The Retry-After value: whole seconds, rounded up, at least 1."""
        return str(max(1, math.ceil(self.retry_after)))


# Clients with a bucket of their own unless given: server.rate_limit_max_clients' default. One
# bucket costs about 300 bytes (measured on CPython 3.12), so 100,000 stay near 30 MB.
DEFAULT_MAX_CLIENTS = setting("server.rate_limit_max_clients").default


class RateLimiter:
    """A token bucket per client key: ``burst`` tokens, refilled at ``rps`` tokens a second;
    each request takes one. Thread-safe.

    A bucket idle long enough to have refilled completely (``burst / rps`` seconds) is the same
    as a new one, so it is dropped: memory holds only clients seen within that window, and
    dropping one never lets a client past its limit.

    At most ``max_clients`` buckets are kept, and a bucket that has not refilled is never
    evicted to make room: evicting a drained bucket hands its client a fresh burst, and with
    least-recently-seen eviction anyone who can send from ``max_clients`` new keys (an IPv6 /48
    holds 65,536 /64s) could reset every limited client, himself included, at will. Instead,
    while the table is full, clients without a bucket share one overflow bucket of the same
    size. A flood of new addresses thus slows down only clients that are new while it lasts;
    it cannot reset or enlarge anyone's allowance, nor grow memory. Keys from a small fixed
    set (the configured API keys) are ``reserved``: they get a bucket of their own even then.
    """

    # Seconds between two warnings that the table is full.
    WARN_EVERY_SECS = 60.0

    def __init__(self, rps: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = DEFAULT_MAX_CLIENTS) -> None:
        if not rps > 0:
            raise ValueError("rate_limit_rps must be greater than 0: got %r" % (rps,))
        if int(burst) < 1:
            raise ValueError("rate_limit_burst must be at least 1: got %r" % (burst,))
        if int(max_clients) < 1:
            raise ValueError("rate_limit_max_clients must be at least 1: got %r"
                             % (max_clients,))
        self.rps = float(rps)
        self.burst = int(burst)
        self.max_clients = int(max_clients)
        self._clock = clock
        self._full_after = self.burst / self.rps
        # key -> [tokens, last seen]; least recently seen first, so idle buckets are at the front.
        self._buckets: "collections.OrderedDict[str, List[float]]" = collections.OrderedDict()
        self._overflow = [float(self.burst), clock()]
        self._warned_at: Optional[float] = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)

    def check(self, key: str, reserved: bool = False) -> Decision:
        """Take one token from ``key``'s bucket if it has one. Without a bucket, ``key`` gets
        a new one while the table has room (or when ``reserved``), else it draws from the
        shared overflow bucket."""
        with self._lock:
            now = self._clock()
            self._drop_full_buckets(now)
            bucket = self._buckets.get(key)
            if bucket is not None:
                self._buckets.move_to_end(key)
            elif reserved or len(self._buckets) < self.max_clients:
                bucket = self._buckets[key] = [float(self.burst), now]
            else:
                bucket = self._overflow
                self._warn_full(now)
            return self._take(bucket, now)

    def _take(self, bucket: List[float], now: float) -> Decision:
        bucket[0] = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rps)
        bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return Decision(True, self.burst, int(bucket[0]), 0.0)
        return Decision(False, self.burst, 0, (1.0 - bucket[0]) / self.rps)

    def _drop_full_buckets(self, now: float) -> None:
        # Amortised O(1): each bucket is dropped at most once after being created.
        buckets = self._buckets
        while buckets:
            key = next(iter(buckets))
            if now - buckets[key][1] < self._full_after:
                return
            del buckets[key]

    def _warn_full(self, now: float) -> None:
        if self._warned_at is None or now - self._warned_at >= self.WARN_EVERY_SECS:
            self._warned_at = now
            log.warning("rate limiting: %d clients seen within %gs, the table is full "
                        "(server.rate_limit_max_clients); new clients share one bucket until "
                        "entries expire", self.max_clients, self._full_after)


class TrustedProxies:
    """A set of proxy addresses and networks; ``address in trusted`` tests membership."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks: Tuple[Network, ...] = tuple(networks)

    def __contains__(self, address: Address) -> bool:
        return any(address in net for net in self.networks)

    def __bool__(self) -> bool:
        return bool(self.networks)


def parse_trusted(entries: Iterable[str]) -> TrustedProxies:
    """``server.trusted_proxies`` entries (IP addresses and CIDR networks) parsed once.

    Raises ValueError naming the bad entry."""
    networks = []
    for entry in entries:
        text = entry.strip()
        try:
            # Host bits are forgiven (10.0.0.1/8 is 10.0.0.0/8), as config.py accepts them.
            network = ipaddress.ip_network(text, strict=False)
        except ValueError as exc:
            raise ValueError("trusted_proxies: %r is not an IP address or CIDR network (%s); "
                             "write e.g. 10.0.0.1, 10.0.0.0/8 or fd00::/8" % (entry, exc)) from None
        networks.append(network)
    return TrustedProxies(networks)


def client_ip(peer_ip: str, headers: email.message.Message, trusted: TrustedProxies,
              header: str = "x-forwarded-for") -> str:
    """The address to key the client on.

    ``peer_ip`` is the socket's peer; ``headers`` the request headers (an
    ``http.client.HTTPMessage``, or anything with ``get_all``). Only when the peer is a trusted
    proxy is ``header`` consulted: ``"x-forwarded-for"`` or ``"forwarded"`` (RFC 7239), whichever
    the proxy writes; the other is ignored because a client could have sent it. The chosen
    address is the right-most hop that is not itself a trusted proxy: every hop left of it was
    written by the client and cannot be believed. A malformed hop before that point, or no
    header, gives the peer.
    """
    peer = _parse_address(peer_ip)
    if peer is None:
        return peer_ip
    if peer not in trusted:
        return str(peer)
    if header == "forwarded":
        hops = _forwarded_hops(headers.get_all("Forwarded") or [])
    elif header == "x-forwarded-for":
        hops = _x_forwarded_for_hops(headers.get_all("X-Forwarded-For") or [])
    else:
        raise ValueError("proxy header must be 'x-forwarded-for' or 'forwarded': got %r"
                         % (header,))
    for hop in reversed(hops):
        if hop is None:
            return str(peer)
        if hop not in trusted:
            return str(hop)
    return str(hops[0]) if hops else str(peer)


def rate_key(client: str) -> str:
    """The share of the address space that counts as one client for rate limiting: an IPv4
    address, or the /64 network of an IPv6 address, since a host owns a whole /64 (SLAAC,
    RFC 4862) and may send from as many addresses in it as it likes (temporary addresses,
    RFC 8981). An IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 peer) is
    its IPv4 address. Anything that is not an IP address is returned unchanged."""
    address = _parse_address(client)
    if address is None:
        return client
    if address.version == 6:
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


def _x_forwarded_for_hops(lines: List[str]) -> List[Optional[Address]]:
    return [_parse_address(item) for item in ",".join(lines).split(",") if item.strip()]


def _forwarded_hops(lines: List[str]) -> List[Optional[Address]]:
    hops: List[Optional[Address]] = []
    for element in _split_unquoted(",".join(lines), ","):
        if not element.strip():
            continue
        node = None
        for pair in _split_unquoted(element, ";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name.strip().lower() == "for":
                node = _unquote(value.strip())
        # A hop without for=, or with for=unknown / an obfuscated name, tells us nothing.
        hops.append(_parse_address(node) if node is not None else None)
    return hops


def _split_unquoted(text: str, separator: str) -> List[str]:
    """``text`` split at ``separator`` outside double-quoted strings."""
    parts, current, quoted, escaped = [], [], False, False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


_PORT = re.compile(r"^:\d{1,5}$")


def _parse_address(text: str) -> Optional[Address]:
    """An IP address from a header hop or peer: ``1.2.3.4``, ``1.2.3.4:80``, ``::1``,
    ``[::1]:80``; IPv4-mapped IPv6 (a dual-stack socket's view of an IPv4 peer) becomes IPv4.
    None if it is not an address."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not _PORT.match(rest)):
            return None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not _PORT.match(":" + port):
            return None
    else:
        host = text
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
