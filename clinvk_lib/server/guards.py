"""The checks a request passes before its handler: client address behind trusted proxies,
rate limit, Host header, cross-site refusal, CORS, API key, JSON body.

``install(app)`` puts the steps into ``App.steps`` right after the request id is assigned, in
this order, each only when its settings switch it on:

1. ``resolve_client``  - behind ``server.trusted_proxies``, the client address from
   ``X-Forwarded-For`` (logged, and keyed on by the rate limiter).
2. ``limit_rate``      - a token bucket per client: its valid API key, else its address
   (429 with ``Retry-After``). First, so that key guessing and floods of refused requests are
   throttled too.
3. ``check_host``      - on a loopback bind, a Host that is not a loopback name is 403: a web
   page cannot reach the server through DNS rebinding.
4. ``refuse_cross_site`` - always: a request a browser sent for a page on another origin
   (another site, or another port of this host) is 403 unless that origin is in
   ``server.cors_allowed_origins``. Before the key check and every handler, so no web page
   can drive an agent, read sessions or probe keys (see ``cross_site_refusal``).
5. ``answer_preflight``- CORS preflights for ``server.cors_allowed_origins`` (browsers send no
   credentials on a preflight, so it must come before the key check).
6. ``authenticate``    - ``X-Api-Key: KEY`` or ``Authorization: Bearer KEY`` (401 otherwise),
   remembered on the request as ``ctx.api_key`` (its ``keys.KeyIdentity``);
   routes marked ``public`` (``/health``, ``/openapi.json``, ``/docs``) are exempt, and
   ``/metrics`` when ``server.metrics_public``.
7. ``require_json_body`` - always: a request with a body, or any POST, PUT or PATCH, on a
   known route must send ``Content-Type: application/json`` (or ``application/*+json``),
   else 415 before the handler reads anything.

Response hooks add the CORS headers (allowed origins only) and ``RateLimit-Limit`` /
``RateLimit-Remaining`` to every response. Errors are ``ApiError``s, so each is rendered in
the API style of the route (native, OpenAI, Anthropic).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Callable, List, Optional, Tuple, Union
from urllib.parse import urlsplit

from ..config import Config, ConfigError
from ..redisclient import Client, RedisError
from .app import App
from .http import Response, is_json_media_type
from .errors import ApiError, unsupported_media_type
from .keys import ApiKeys, digest
from .ratelimit import RateLimiter, client_ip, parse_trusted, rate_key
from .ratelimit_shared import SharedRateLimiter

# Request headers a browser page may send cross-origin (lower case). The OpenAI and Anthropic
# SDKs add their own telemetry headers (x-stainless-*), allowed by prefix.
ALLOWED_REQUEST_HEADERS = frozenset((
    "accept", "accept-language", "content-language", "content-type", "authorization",
    "x-api-key", "x-request-id", "x-clinvk-session-id", "x-clinvk-ephemeral", "anthropic-version",
    "anthropic-beta", "idempotency-key",
    "anthropic-dangerous-direct-browser-access"))
ALLOWED_REQUEST_HEADER_PREFIXES = ("x-stainless-",)
# Response headers a browser page may read besides the CORS-safelisted ones.
EXPOSED_HEADERS = ("X-Request-Id, X-Clinvk-Session-Id, Retry-After, RateLimit-Limit, "
                   "RateLimit-Remaining, Idempotent-Replayed")


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


# -- cross-site requests -----------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Sec-Fetch-Site values that mean the page and the URL share an origin, or that no page is
# involved at all (the user typed the URL or opened a bookmark). W3C Fetch Metadata, 2.1.
_SAME_ORIGIN_SITES = ("same-origin", "none")


def origin_parts(origin: str) -> Optional[Tuple[str, str, int]]:
    """``(scheme, host, port)`` of an http(s) origin (``http://LocalHost`` ->
    ``("http", "localhost", 80)``); None for ``null``, another scheme, or anything that is not
    a bare origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if (scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None
            or parts.path not in ("", "/") or parts.query or parts.fragment):
        return None
    return scheme, parts.hostname, _DEFAULT_PORTS[scheme] if port is None else port


def same_origin(origin: str, own_origin: str) -> bool:
    """True when ``origin`` is ``own_origin`` (RFC 6454: scheme, host and port; default ports
    filled in)."""
    parts = origin_parts(origin)
    return parts is not None and parts == origin_parts(own_origin)


def cross_site_refusal(origin: Optional[str], fetch_site: str, own_origin: str,
                       allowed: Tuple[str, ...]) -> str:
    """Why a request must be refused as sent by a web page on another origin, or "" when it
    may go on. ``origin`` is the Origin header (None when absent), ``fetch_site`` the
    Sec-Fetch-Site header (lower case, "" when absent), ``own_origin`` this server's origin as
    the client reached it (``scheme://Host``, the scheme from a trusted proxy's
    X-Forwarded-Proto), ``allowed`` the normalised server.cors_allowed_origins.

    The decisions, in order:

    - An Origin listed in server.cors_allowed_origins is a CORS request the operator allowed.
    - Sec-Fetch-Site other than ``same-origin`` or ``none`` is refused. ``same-site`` too:
      browsers send it for another port of the same host, and a page on 127.0.0.1:9000
      calling a server on 127.0.0.1:8080 is exactly the attack on a loopback server.
    - ``Sec-Fetch-Site: same-origin`` is the browser vouching that the page and the URL it
      fetched share an origin; it is believed even when a proxy rewrote Host (nginx's
      default), because a page cannot set Sec-Fetch-* headers.
    - Otherwise (a browser without Fetch Metadata) an Origin must equal ``own_origin``.
    - A request with neither header comes from no browser page (curl, the SDKs, scripts),
      or is an old browser's no-cors GET whose answer the page cannot read: it goes on.
    """
    if origin is not None and origin_allowed(origin, allowed):
        return ""
    shown = "Origin %r" % origin[:200] if origin is not None else "no Origin"
    if fetch_site and fetch_site not in _SAME_ORIGIN_SITES:
        return ("cross-site request refused: the browser marked it 'Sec-Fetch-Site: %s' (sent "
                "for a page on another site, or on another port of this host) with %s, which "
                "is not in server.cors_allowed_origins; a web page may only call this server "
                "from an origin listed there" % (fetch_site[:40], shown))
    if fetch_site == "same-origin" or origin is None or same_origin(origin, own_origin):
        return ""
    return ("cross-origin request refused: %s is neither this server's own origin (%s) nor in "
            "server.cors_allowed_origins; add it there if that page may call this server"
            % (shown, own_origin))


# -- the guards --------------------------------------------------------------------------------


class Guards:
    """The checks configured for one server; ``steps`` and ``hooks`` are what ``install``
    adds to the App."""

    def __init__(self, cfg: Config, keys: ApiKeys,
                 allowed_methods: Callable[[str], Tuple[str, ...]], metrics=None,
                 shared_store: Optional[Client] = None) -> None:
        self.keys = keys
        self.metrics = metrics
        self.allowed_methods = allowed_methods      # path -> methods it answers (router)
        self.metrics_public = bool(cfg.get("server.metrics_public"))
        self.trusted = parse_trusted(cfg.get("server.trusted_proxies"))
        self.limiter: Union[RateLimiter, SharedRateLimiter, None] = None
        if cfg.get("server.rate_limit_enabled") and shared_store is not None:
            self.limiter = SharedRateLimiter(shared_store, cfg.get("server.rate_limit_rps"),
                                             cfg.get("server.rate_limit_burst"),
                                             cfg.get("server.rate_limit_fail_open"))
        elif cfg.get("server.rate_limit_enabled"):
            self.limiter = RateLimiter(cfg.get("server.rate_limit_rps"),
                                       cfg.get("server.rate_limit_burst"),
                                       max_clients=cfg.get("server.rate_limit_max_clients"))
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
        steps.append(self.refuse_cross_site)
        if self.origins:
            steps.append(self.answer_preflight)
        if self.keys:
            steps.append(self.authenticate)
        steps.append(require_json_body)
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
        sent a valid one (so it is limited the same from every address), else its address
        (an IPv6 client by its /64); an invalid key counts against the address, so guessing
        keys is throttled too."""
        key = presented_key(ctx.headers) if self.keys else None
        valid_key = key is not None and self.keys.matches(key)
        if valid_key:
            client = "key:" + digest(key).hex()
        else:
            client = "ip:" + rate_key(ctx.client)
        # A valid key always has a bucket of its own: a flood of new addresses filling the
        # table must not push an authenticated client into the shared overflow bucket.
        try:
            decision = self.limiter.check(client, reserved=valid_key)
        except RedisError as exc:
            raise ApiError(503, "rate_limit_store_unavailable",
                           "the rate limit cannot be checked: %s; requests are refused until "
                           "the store (server.store) is back (server.rate_limit_fail_open: "
                           "true admits them unlimited instead)" % exc,
                           headers={"Retry-After": "1"}) from None
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

    def refuse_cross_site(self, ctx) -> None:
        """403 for a request a browser sent for a page on another origin that
        server.cors_allowed_origins does not list (``cross_site_refusal`` decides), on every
        route, keys or not: it does not depend on anything else guarding the route."""
        reason = cross_site_refusal(ctx.headers.get("Origin"),
                                    (ctx.headers.get("Sec-Fetch-Site") or "").strip().lower(),
                                    ctx.base_url(), self.origins)
        if reason:
            raise ApiError(403, "cross_site_forbidden", reason)

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
        identity = self.keys.identify(key)
        if identity is None:
            self._count_auth_failure()
            raise unauthorized("invalid API key")
        ctx.api_key = identity      # whose sessions the request may use (Context.session_access)

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
        decision = ctx.rate_limit
        if decision is not None:
            headers.append(("RateLimit-Limit", str(decision.limit)))
            headers.append(("RateLimit-Remaining", str(decision.remaining)))


# Methods whose requests carry a body by definition, so a missing Content-Type is refused
# even when the body is empty.
_BODY_METHODS = ("POST", "PUT", "PATCH")


def require_json_body(ctx) -> None:
    """415 when a request to a known route carries a body, or is a POST, PUT or PATCH, and
    its Content-Type is not JSON. A missing Content-Type is refused too: a page's
    ``fetch(url, {method: "POST", mode: "no-cors", body: new Blob([json])})`` sends none,
    and needs no CORS preflight. Unknown paths and methods keep their 404 / 405."""
    if ctx.endpoint is None or not (ctx.method in _BODY_METHODS or ctx.has_body()):
        return
    content_type = ctx.headers.get("Content-Type") or ""
    if not is_json_media_type(content_type):
        raise unsupported_media_type(content_type)


def install(app: App) -> Guards:
    """Build the guards from ``app.cfg`` and add their steps (after the request id) and
    hooks to ``app``. ConfigError when a key source or the CORS settings cannot be used."""
    guards = Guards(app.cfg, ApiKeys.from_config(app.cfg, on_error=app.log.error),
                    app.router.allowed, app.metrics, app.shared_store)
    app.steps[1:1] = guards.steps
    app.response_hooks.extend(guards.hooks)
    return guards


def _is_trusted(peer: str, trusted) -> bool:
    try:
        return ipaddress.ip_address(peer.split("%", 1)[0]) in trusted
    except ValueError:
        return False
