"""The nodes of one shared store (``server.store``), so that a tool result reaching another
node than the one whose run waits for it is handed to that one, on whatever host it runs.

Where each parked call waits is in Redis, under the store's key prefix: ``tool-call:<call
id>`` holds the forward address (``host:port``) of the node that parked the run, and expires
when the run would be stopped (``server.tool_result_timeout_secs``). Every node of the store
shares one random key, ``tool-bridge:key`` (made by the first node that needs it): a request
one node forwards to another carries it, which is how the other knows not to forward it
again. Who can write the store can already run agents on the workers, so its addresses are
trusted as its jobs are.
"""

from __future__ import annotations

import hmac
import os
from typing import Iterable, Optional, Tuple

from ..redisclient import Client, RedisError

KEY_NAME = "tool-bridge:key"
CALL_PREFIX = "tool-call:"


class SharedPeers:
    """The same methods as ``peers.Peers``, on a Redis ``client``: ``register`` (this node's
    forward ``host`` and port), ``parked`` (its calls), ``address_of`` (another node's call),
    ``forwarded`` and ``key``. A store that cannot be reached forwards nothing: the request is
    answered where it lands (404 ``tool_call_not_found`` for another node's call)."""

    def __init__(self, client: Client, host: str) -> None:
        self.client = client
        self.host = host
        self.address = ""
        self._key = ""

    def register(self, instance: str, port: int) -> None:
        self.address = "%s:%d" % (self.host, port)

    def unregister(self) -> None:
        """Nothing to remove: a draining node's runs stop, and a result forwarded to it
        after that finds its listener closed and is answered where it landed."""

    def parked(self, call_ids: Iterable[str], ttl: float) -> None:
        """Record that this node holds the run of ``call_ids`` for ``ttl`` seconds."""
        millis = max(1, int(ttl * 1000))
        try:
            self.client.pipeline([("SET", self.client.key(CALL_PREFIX + i), self.address,
                                   "PX", millis) for i in call_ids])
        except RedisError:
            pass                        # the result is then only answered on this node

    def address_of(self, call_id: str) -> Optional[Tuple[str, int]]:
        """(host, port) of the other node that parked ``call_id``'s run, else None."""
        try:
            value = self.client.execute("GET", self.client.key(CALL_PREFIX + call_id))
        except RedisError:
            return None
        address = (value or b"").decode("utf-8", "replace")
        if not address or address == self.address:
            return None
        return parse_address(address)

    @property
    def key(self) -> str:
        """The store's forward key ("" while the store cannot be reached)."""
        if not self._key:
            name = self.client.key(KEY_NAME)
            try:
                self.client.execute("SET", name, os.urandom(24).hex(), "NX")
                self._key = (self.client.execute("GET", name) or b"").decode("ascii")
            except (RedisError, UnicodeDecodeError):
                return ""
        return self._key

    def forwarded(self, header: str) -> bool:
        """Whether a request's forwarding header carries the store's key."""
        key = self.key if header else ""
        return bool(key) and hmac.compare_digest(header.encode(), key.encode())


def parse_address(address: str) -> Optional[Tuple[str, int]]:
    """("host", port) of ``host:port`` (an IPv6 host in brackets), else None."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)
