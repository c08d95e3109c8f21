"""The checks a request passes before its handler: client address behind trusted proxies,
rate limit, Host header, CORS, API key.

``install(app)`` puts the steps into ``App.steps`` right after the request id is assigned, in
this order, each only when its settings switch it on:

1. ``resolve_client``  - behind ``server.trusted_proxies``, the client address from
   ``X-Forwarded-For`` (logged, and keyed on by the rate limiter).
2. ``limit_rate``      - a token bucket per client: its valid API key, else its address
   (429 with ``Retry-After``). First, so that key guessing and floods of refused requests are
   throttled too.
3. ``check_host``      - on a loopback bind, a Host that is not a loopback name is 403: a web
   page cannot reach the server through DNS rebinding.
4. ``answer_preflight``- CORS preflights for ``server.cors_allowed_origins`` (browsers send no
   credentials on a preflight, so it must come before the key check).
5. ``authenticate``    - ``X-Api-Key: KEY`` or ``Authorization: Bearer KEY`` (401 otherwise);
   routes marked ``public`` (``/health``, ``/openapi.json``, ``/docs``) are exempt, and
   ``/metrics`` when ``server.metrics_public``.

Response hooks add the CORS headers (allowed origins only) and ``RateLimit-Limit`` /
``RateLimit-Remaining`` to every response. Errors are ``ApiError``s, so each is rendered in
the API style of the route (native, OpenAI, Anthropic).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Callable, List, Optional, Tuple

from ..config import ConfigError
from .app import Response
from .errors import ApiError
from .keys import ApiKeys, digest
from .ratelimit import RateLimiter, client_ip, parse_trusted

# Request headers a browser page may send cross-origin (lower case). The OpenAI and Anthropic
# SDKs add their own telemetry headers (x-stainless-*), allowed by prefix.
ALLOWED_REQUEST_HEADERS = frozenset((
    "accept", "accept-language", "content-language", "content-type", "authorization",
    "x-api-key", "x-request-id", "x-clinvk-session-id", "x-clinvk-ephemeral", "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access"))
ALLOWED_REQUEST_HEADER_PREFIXES = ("x-stainless-",)
# Response headers a browser page may read besides the CORS-safelisted ones.
EXPOSED_HEADERS = ("X-Request-Id, X-Clinvk-Session-Id, Retry-After, RateLimit-Limit, "
                   "RateLimit-Remaining")


# -- API keys on the request -------------------------------------------------------------------


def presented_key(headers) -> Optional[str]:
    """The key a request carries: ``X-Api-Key`` (what the Anthropic SDK sends) when present,
    else the token of ``Authorization: Bearer`` (the OpenAI SDK); None when neither."""
    key = (headers.get("X-Api-Key") or "").strip()
    if key:
        return key
    scheme, _, token = (headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message,
                    headers={"WWW-Authenticate": 'Bearer realm="clinvk"'})


# -- addresses and host names ------------------------------------------------------------------


def is_loopback_host(host: str) -> bool:
    """True when binding ``host`` listens on loopback only: ``localhost``, a loopback address,
    or a name every address of which is loopback. "" and wildcard addresses are not."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if not name:
        return False
    if _is_loopback_name(name):
        return True
    try:
        return _is_loopback_address(ipaddress.ip_address(name))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(
        _is_loopback_address(ipaddress.ip_address(info[4][0].split("%", 1)[0]))
        for info in infos)


def host_name(host_header: str) -> str:
    """The name part of a Host header value, lower case, without port or trailing dot
    (``[::1]:8080`` -> ``::1``, ``LocalHost.:80`` -> ``localhost``)."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def is_local_host_header(host_header: str, allowed: frozenset) -> bool:
    """True when a Host header names this machine's loopback interface (``localhost``,
    ``*.localhost``, a loopback address) or a name in ``allowed`` (lower case, no port)."""
    name = host_name(host_header)
    if name in allowed or _is_loopback_name(name):
        return True
    try:
        return _is_loopback_address(ipaddress.ip_address(name))
    except ValueError:
        return False


def _is_loopback_name(name: str) -> bool:
    # RFC 6761: localhost and every name under it are loopback; browsers never ask DNS.
    return name == "localhost" or name.endswith(".localhost")


def _is_loopback_address(address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


# -- CORS origins ------------------------------------------------------------------------------


def normalize_origin(origin: str) -> str:
    return origin.strip().lower().rstrip("/")


def origin_allowed(origin: str, allowed: Tuple[str, ...]) -> bool:
    """True when ``origin`` matches an entry of ``allowed`` (normalised): the same origin,
    ``*`` (any), or a pattern with one ``*`` standing for at least one character
    (``http://localhost:*``)."""
    origin = normalize_origin(origin)
    for entry in allowed:
        if entry == "*" or entry == origin:
            return True
        if "*" in entry:
            head, _, tail = entry.partition("*")
            if (len(origin) > len(head) + len(tail) and origin.startswith(head)
                    and origin.endswith(tail)):
                return True
    return False


def header_allowed(name: str) -> bool:
    return name in ALLOWED_REQUEST_HEADERS or name.startswith(ALLOWED_REQUEST_HEADER_PREFIXES)


# -- the guards --------------------------------------------------------------------------------


class Guards:
    """The checks configured for one server; ``steps`` and ``hooks`` are what ``install``
    adds to the App."""

    def __init__(self, cfg, keys: ApiKeys, allowed_methods: Callable[[str], Tuple[str, ...]],
                 metrics=None) -> None:
        self.keys = keys
        self.metrics = metrics
        self.allowed_methods = allowed_methods      # path -> methods it answers (router)
        self.metrics_public = bool(cfg.get("server.metrics_public"))
        self.trusted = parse_trusted(cfg.get("server.trusted_proxies"))
        self.limiter: Optional[RateLimiter] = None
        if cfg.get("server.rate_limit_enabled"):
            self.limiter = RateLimiter(cfg.get("server.rate_limit_rps"),
                                       cfg.get("server.rate_limit_burst"))
        self.check_hosts = is_loopback_host(cfg.get("server.host"))
        self.allowed_hosts = frozenset(host_name(h) for h in cfg.get("server.allowed_hosts"))
        self.origins = tuple(normalize_origin(o) for o in cfg.get("server.cors_allowed_origins"))
        self.credentials = bool(cfg.get("server.cors_allow_credentials"))
        self.max_age = cfg.get("server.cors_max_age")
        if self.credentials and "*" in self.origins:
            raise ConfigError("server.cors_allow_credentials: true cannot be combined with "
                              "server.cors_allowed_origins '*' (any web page could send "
                              "credentialed requests); list the origins instead")

    @property
    def steps(self) -> List[Callable]:
        steps: List[Callable] = []
        if self.trusted:
            steps.append(self.resolve_client)
        if self.limiter is not None:
            steps.append(self.limit_rate)
        if self.check_hosts:
            steps.append(self.check_host)
        if self.origins:
            steps.append(self.answer_preflight)
        if self.keys:
            steps.append(self.authenticate)
        return steps

    @property
    def hooks(self) -> List[Callable]:
        hooks: List[Callable] = []
        if self.origins:
            hooks.append(self.add_cors_headers)
        if self.limiter is not None:
            hooks.append(self.add_rate_limit_headers)
        return hooks

    # -- steps --------------------------------------------------------------------------------

    def resolve_client(self, ctx) -> None:
        """Behind a trusted proxy, the client is the right-most untrusted X-Forwarded-For hop;
        from anyone else the header is ignored (a client cannot choose its own address)."""
        peer = ctx.client
        ctx.client = client_ip(peer, ctx.headers, self.trusted)
        # The scheme the client used (for the URLs in /openapi.json and /docs): a TLS-
        # terminating proxy says so in X-Forwarded-Proto; only a trusted one is believed.
        proto = (ctx.headers.get("X-Forwarded-Proto") or "").strip().lower()
        if proto in ("http", "https") and self.trusted and _is_trusted(peer, self.trusted):
            ctx.scheme = proto

    def limit_rate(self, ctx) -> None:
        """Take a token from the client's bucket, or 429. The client is its API key when it
        sent a valid one (so it is limited the same from every address), else its address;
        an invalid key counts against the address, so guessing keys is throttled too."""
        key = presented_key(ctx.headers) if self.keys else None
        if key is not None and self.keys.matches(key):
            client = "key:" + digest(key).hex()
        else:
            client = "ip:" + ctx.client
        decision = self.limiter.check(client)
        # Read by add_rate_limit_headers when the response goes out.
        ctx.rate_limit = decision
        if not decision.allowed:
            if self.metrics is not None:
                self.metrics.rate_limited.inc()
            raise ApiError(429, "rate_limited",
                           "rate limit exceeded: at most %g requests per second with bursts "
                           "of %d (server.rate_limit_rps, server.rate_limit_burst); retry in "
                           "%s s" % (self.limiter.rps, self.limiter.burst,
                                     decision.retry_after_header()),
                           headers={"Retry-After": decision.retry_after_header()})

    def check_host(self, ctx) -> None:
        """403 for a Host that is not this machine's loopback (or in server.allowed_hosts):
        a page on another site resolving its own name to 127.0.0.1 is refused."""
        host = ctx.headers.get("Host") or ""
        # Browsers always send Host; a client that sends none is not a web page.
        if host and not is_local_host_header(host, self.allowed_hosts):
            raise ApiError(403, "forbidden_host",
                           "Host %r is not a loopback name: a server bound to loopback only "
                           "answers requests for localhost or a loopback address (protection "
                           "against DNS rebinding); add the name to server.allowed_hosts if "
                           "clients reach the server under it" % host[:100])

    def answer_preflight(self, ctx):
        """Answer a CORS preflight (OPTIONS with Origin and Access-Control-Request-Method) for
        a known path: 204 with the allowed methods and headers, or 403 saying what is not
        allowed."""
        origin = ctx.headers.get("Origin")
        wanted = (ctx.headers.get("Access-Control-Request-Method") or "").strip().upper()
        if ctx.method != "OPTIONS" or not origin or not wanted:
            return None
        methods = self.allowed_methods(ctx.path)
        if not methods:
            return None                     # an unknown path: 404 (or 401) as usual
        if not origin_allowed(origin, self.origins):
            raise ApiError(403, "cors_forbidden", "origin %r is not allowed; add it to "
                           "server.cors_allowed_origins" % origin[:200])
        if wanted not in methods:
            raise ApiError(403, "cors_forbidden", "method %s is not allowed on %s (allowed: "
                           "%s)" % (wanted[:20], ctx.path[:200], ", ".join(methods)))
        requested = [h.strip().lower() for h in
                     (ctx.headers.get("Access-Control-Request-Headers") or "").split(",")
                     if h.strip()]
        refused = [h for h in requested if not header_allowed(h)]
        if refused:
            raise ApiError(403, "cors_forbidden", "request header %r is not allowed "
                           "cross-origin (allowed: %s, x-stainless-*)"
                           % (refused[0][:100], ", ".join(sorted(ALLOWED_REQUEST_HEADERS))))
        headers = [("Access-Control-Allow-Methods", ", ".join(methods)),
                   ("Access-Control-Max-Age", str(self.max_age)),
                   ("Vary", "Access-Control-Request-Method, Access-Control-Request-Headers")]
        if requested:
            headers.append(("Access-Control-Allow-Headers", ", ".join(requested)))
        return Response(204, headers=headers)

    def authenticate(self, ctx) -> None:
        """401 unless the request carries one of the keys (public routes exempt)."""
        spec = ctx.endpoint.spec if ctx.endpoint is not None else None
        if spec is not None and (spec.public or (
                self.metrics_public and spec.operation_id == "getMetrics")):
            return
        key = presented_key(ctx.headers)
        if key is None:
            self._count_auth_failure()
            raise unauthorized("missing API key: send it as 'X-Api-Key: KEY' or "
                               "'Authorization: Bearer KEY'")
        if not self.keys.matches(key):
            self._count_auth_failure()
            raise unauthorized("invalid API key")

    def _count_auth_failure(self) -> None:
        if self.metrics is not None:
            self.metrics.auth_failures.inc()

    # -- response hooks -----------------------------------------------------------------------

    def add_cors_headers(self, ctx, headers: List[Tuple[str, str]]) -> None:
        """For an allowed Origin: Access-Control-Allow-Origin (and -Credentials, and the
        exposed headers on an actual request). Nothing for any other origin."""
        headers.append(("Vary", "Origin"))
        origin = ctx.headers.get("Origin")
        if not origin or not origin_allowed(origin, self.origins):
            return
        any_origin = "*" in self.origins
        headers.append(("Access-Control-Allow-Origin", "*" if any_origin else origin.strip()))
        if self.credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        if ctx.method != "OPTIONS":
            headers.append(("Access-Control-Expose-Headers", EXPOSED_HEADERS))

    def add_rate_limit_headers(self, ctx, headers: List[Tuple[str, str]]) -> None:
        # A request answered before limit_rate ran (none today) carries no decision.
        decision = getattr(ctx, "rate_limit", None)
        if decision is not None:
            headers.append(("RateLimit-Limit", str(decision.limit)))
            headers.append(("RateLimit-Remaining", str(decision.remaining)))


def install(app) -> Guards:
    """Build the guards from ``app.cfg`` and add their steps (after the request id) and
    hooks to ``app``. ConfigError when a key source or the CORS settings cannot be used."""
    guards = Guards(app.cfg, ApiKeys.from_config(app.cfg, on_error=app.log.error),
                    app.router.allowed, app.metrics)
    app.steps[1:1] = guards.steps
    app.response_hooks.extend(guards.hooks)
    return guards


def _is_trusted(peer: str, trusted) -> bool:
    import ipaddress
    try:
        return ipaddress.ip_address(peer.split("%", 1)[0]) in trusted
    except ValueError:
        return False
