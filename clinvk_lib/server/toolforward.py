"""A tool result that reached the wrong server process, handed to the one that holds the run.

Behind a load balancer (several ``clinvk serve`` sharing one CLINVK_HOME, or nodes sharing one
``server.store``), the request that carries a tool result may land on another instance than
the one whose run is parked: nothing in an OpenAI or Anthropic client's request says where the
run is. The call id does: the home's registry (``toolbridge.peers``: the id names the instance,
reached on 127.0.0.1) or the store's (``toolbridge.peers_redis``: the node that parked the call,
on its forward address) says where its run waits. The request is forwarded there as it came
(the client's own API key and headers, so the holder applies its guards and sees whose call it
is), marked with the shared forward key so that it is never forwarded again, and the answer is
relayed, streamed or whole. Only one hop, only to a process registered by the same home or
store.
"""

from __future__ import annotations

import http.client
from typing import Any, Iterable, Iterator, List, Optional, Tuple

from ..toolbridge.peers import instance_of
from .context import Context
from .http import Response, StreamResponse

FORWARDED_HEADER = "X-Clinvk-Forwarded"
CONNECT_SECS = 5.0
# A whole (not streamed) answer relayed at most this big: a round's reply.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
# Request headers not passed on (hop by hop, or set here), and answer headers this server sets
# itself.
_REQUEST_SKIP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                 "proxy-connection", "content-length", "expect", FORWARDED_HEADER.lower()}
_ANSWER_SKIP = {"connection", "keep-alive", "transfer-encoding", "content-length",
                "content-type", "date", "server", "x-request-id", "cache-control",
                "x-accel-buffering"}


def forward(ctx: Context, call_ids: Iterable[str]) -> Optional[Any]:
    """The holder's answer when the calls were made by another live instance of this home
    or node of this store (None: handle the request here, as for an unknown id)."""
    bridge = ctx.app.tool_bridge
    peers = getattr(bridge, "peers", None)
    ids = list(call_ids)
    if peers is None or any(instance_of(i) in (None, bridge.instance) for i in ids) or \
            peers.forwarded(ctx.headers.get(FORWARDED_HEADER, "")):
        return None
    addresses = {peers.address_of(i) for i in ids}
    if len(addresses) != 1 or None in addresses:
        return None
    host, port = addresses.pop()
    return relay(ctx, host, port, peers.key)


def relay(ctx: Context, host: str, port: int, key: str) -> Optional[Any]:
    body = ctx.read_body()
    conn = http.client.HTTPConnection(host, port, timeout=CONNECT_SECS)
    try:
        conn.putrequest(ctx.method, ctx.target, skip_host=True, skip_accept_encoding=True)
        for name, value in ctx.headers.items():
            if name.lower() not in _REQUEST_SKIP:
                conn.putheader(name, value)
        conn.putheader(FORWARDED_HEADER, key)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        if conn.sock is not None:
            # A round may take as long as the holder lets it (its own timeouts apply).
            conn.sock.settimeout(None)
        answer = conn.getresponse()
    except OSError:
        conn.close()
        return None                     # the holder is gone: its runs are too
    content_type = answer.getheader("Content-Type") or "application/json"
    headers = answer_headers(answer.getheaders())
    if content_type.startswith("text/event-stream"):
        return StreamResponse(_chunks(conn, answer), content_type, answer.status, headers)
    try:
        data = answer.read(MAX_ANSWER_BYTES)
    finally:
        conn.close()
    return Response(answer.status, data, content_type, headers)


def answer_headers(headers: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() not in _ANSWER_SKIP]


def _chunks(conn: http.client.HTTPConnection, answer: Any) -> Iterator[bytes]:
    try:
        while True:
            data = answer.read1(65536)
            if not data:
                return
            yield data
    except OSError:
        return
    finally:
        conn.close()
