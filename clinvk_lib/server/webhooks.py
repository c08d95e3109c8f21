"""Webhooks: a finished job POSTed to the ``webhook_url`` its client gave, signed, retried.

``check_url(url, cfg)`` is the policy a ``webhook_url`` must pass before a job is accepted:
http or https, a host name and no user info, the host (and the port, when the entry names one)
in ``server.webhook_allowed_hosts``, and a ``server.webhook_secret`` to sign with. Without the
allowlist a request could make the server call any host it can reach (its own admin ports,
cloud metadata, the intranet); an allowed host's DNS is the operator's to trust.

``Deliveries`` sends them: a small pool of worker threads takes deliveries from one queue
ordered by due time. Each delivery has one id (``X-Clinvk-Delivery``), the same on every
attempt; a 2xx is delivered; anything else (a redirect too: none is followed), a timeout or
a connection error is retried with exponential back-off (``retry_delay``) until
``server.webhook_max_attempts``. After every attempt ``record(job_id, state)`` hands the
caller the delivery's state to store, so a restart can ``resume`` what was pending; delivery
is therefore at least once (a server killed mid-attempt sends that attempt again, with the
same delivery id, which is what a receiver deduplicates on).

Connections are direct (``http.client``: no proxy from the environment, whose host the
allowlist would not check) and never log the secret, the URL's path or its query.
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import heapq
import hmac
import http.client
import itertools
import socket
import ssl
import threading
import time
import traceback
import uuid
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple
from urllib.parse import urlsplit

from .. import __version__
from ..jsontext import dumps_compact
from ..textutil import rfc3339
from .errors import ApiError, invalid

FIELD = "webhook_url"
EVENT = "job.finished"
# Long enough for any real URL; a longer one is a mistake or an attack on the log.
MAX_URL_CHARS = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}

Record = Callable[[str, Dict[str, Any]], None]


class Target(NamedTuple):
    """Where a webhook goes, as checked: scheme, host (lower case, no brackets), port, and
    the request target (path and query, at least "/")."""
    scheme: str
    host: str
    port: int
    path: str

    def origin(self) -> str:
        """scheme://host:port: what a log line names (the path and query may hold a token)."""
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d" % (self.scheme, host, self.port)


# --- the URL policy ------------------------------------------------------------------------

def check_url(url: Any, cfg: Any) -> None:
    """Return if ``url`` may be a webhook_url under ``cfg``; else raise a 400 ``ApiError``
    (field ``webhook_url``) that says what is wrong and which setting decides it."""
    parse_target(url, cfg)


def parse_target(url: Any, cfg: Any) -> Target:
    """The ``Target`` of ``url`` if it passes ``check_url``'s policy; else the same 400."""
    if not cfg.get("server.webhook_allowed_hosts"):
        raise _refused("webhooks are disabled on this server: its operator lists the hosts a "
                       "webhook may call in server.webhook_allowed_hosts")
    if not cfg.get("server.webhook_secret"):
        raise _refused("webhooks are disabled on this server: server.webhook_secret is empty, "
                       "and clinvk sends no unsigned webhook")
    target = _split(url)
    if not host_allowed(target, cfg.get("server.webhook_allowed_hosts")):
        raise _refused("host %r (port %d) is not in server.webhook_allowed_hosts"
                       % (target.host, target.port))
    return target


def host_allowed(target: Target, entries: List[str]) -> bool:
    """True when an entry (``host`` or ``host:port``, ``[v6]:port``) names ``target``'s host
    exactly, ignoring case, and its port when the entry has one. No suffix or pattern
    matching: ``example.com`` does not allow ``evil-example.com`` nor ``a.example.com``."""
    for entry in entries:
        host, port = _split_entry(entry)
        if host and host == target.host and port in (None, target.port):
            return True
    return False


def _split(url: Any) -> Target:
    if not isinstance(url, str):
        raise invalid("expected a string", FIELD)
    if len(url) > MAX_URL_CHARS:
        raise invalid("at most %d characters, got %d" % (MAX_URL_CHARS, len(url)), FIELD)
    if not url.isascii():
        raise invalid("expected an ASCII URL (an international host name in its xn-- form, "
                      "other characters percent-encoded)", FIELD)
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c == "\\" for c in url):
        raise invalid("expected a URL without spaces, control characters or backslashes", FIELD)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise invalid("expected an http:// or https:// URL, got %r" % url[:100], FIELD)
    if "@" in parts.netloc:
        raise invalid("user info (user:password@) is not allowed in a webhook URL; the "
                      "receiver checks X-Clinvk-Signature instead", FIELD)
    try:
        port = parts.port
    except ValueError:
        raise invalid("expected a port from 1 to 65535", FIELD) from None
    if not parts.hostname:
        raise invalid("expected a host name, as in https://hooks.example.com/clinvk", FIELD)
    path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    return Target(scheme, parts.hostname, port or _DEFAULT_PORTS[scheme], path)


def _split_entry(entry: str) -> Tuple[str, Optional[int]]:
    """(host, port or None) of an allowlist entry; ("", None) for one that is not a host."""
    entry = entry.strip()
    if not entry or any(c in entry for c in "/@?#\\ "):
        return "", None
    try:
        parts = urlsplit("//" + entry)
        return (parts.hostname or ""), parts.port
    except ValueError:
        return "", None


def _refused(message: str) -> ApiError:
    return invalid(message, FIELD)


# --- the schedule and the message ----------------------------------------------------------

def retry_delay(attempt: int, first: float = 5.0, cap: float = 300.0) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 = the first): ``first``,
    then twice as long each time, at most ``cap``. Defaults: 5, 10, 20, 40, 80, 160, 300."""
    return min(cap, first * 2.0 ** max(0, attempt - 1))


def sign(secret: str, body: bytes) -> str:
    """The ``X-Clinvk-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def new_delivery_id() -> str:
    return "dlv_" + uuid.uuid4().hex[:24]


def retry_after_secs(value: str, now: float) -> Optional[float]:
    """The seconds a ``Retry-After`` header value asks to wait (RFC 9110 §10.2.3: a number of
    seconds or an HTTP date), at ``now`` (epoch seconds); None when it is neither."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:                 # RFC 9110 dates are GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - now)


def post(target: Target, body: bytes, headers: Dict[str, str],
         timeout: float) -> Tuple[int, str]:
    """POST ``body`` to ``target`` on a direct connection and return the status (a redirect
    is a status like any other: it is not followed) and the answer's Retry-After ("" when it
    has none). The whole attempt, connecting and
    reading the answer's head, takes at most ``timeout`` seconds; raises ``OSError`` or
    ``http.client.HTTPException`` (``socket.timeout`` past the deadline)."""
    if target.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            target.host, target.port, timeout=timeout, context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    # Each socket operation has ``timeout``; the timer bounds them all together, so a
    # receiver sending its answer a byte at a time cannot hold a worker for long.
    expired = threading.Event()
    timer = threading.Timer(timeout, _abort, (conn, expired))
    timer.daemon = True
    timer.start()
    try:
        conn.request("POST", target.path, body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.getheader("Retry-After") or ""
    except (OSError, http.client.HTTPException):
        if expired.is_set():
            raise socket.timeout("timed out") from None
        raise
    finally:
        timer.cancel()
        conn.close()


def _abort(conn: http.client.HTTPConnection, expired: threading.Event) -> None:
    expired.set()
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)   # wakes a blocked recv; close() would not
        except OSError:
            pass


# --- deliveries ----------------------------------------------------------------------------

class _Delivery:
    """One delivery in memory: the encoded body (signed once, the same bytes every attempt),
    where it goes, and how many attempts it has had."""

    __slots__ = ("job_id", "delivery_id", "target", "body", "attempts")

    def __init__(self, job_id: str, delivery_id: str, target: Target, body: bytes,
                 attempts: int) -> None:
        self.job_id = job_id
        self.delivery_id = delivery_id
        self.target = target
        self.body = body
        self.attempts = attempts


class Deliveries:
    """The webhook deliveries of one server.

    ``send(job_id, job_object, url)`` starts one and returns its delivery id; ``resume(...)``
    continues one a restart found pending; ``close(timeout)`` stops at shutdown. Each calls
    ``record(job_id, state)`` when the delivery is queued (attempt 0) and after every attempt,
    with ``state`` = {delivery_id, attempt, status_code or error, at, next_attempt_at (None
    when final), state: pending | delivered | failed}. A receiver's ``Retry-After`` sets the
    wait before the next attempt instead of the back-off, at most ``max_retry_secs``. Memory is
    bounded: at most ``max_pending`` deliveries and ``max_pending_bytes`` of bodies wait at
    once; one beyond is recorded failed at once. ``metrics`` (a ``metrics.ServerMetrics``, or
    None) counts the attempts by outcome. Tunables are class attributes (a test shortens the
    back-off)."""

    workers = 4
    max_pending = 1000
    max_pending_bytes = 64 * 1024 * 1024
    first_retry_secs = 5.0
    max_retry_secs = 300.0

    def __init__(self, cfg: Any, log: Any, record: Record, metrics: Any = None) -> None:
        self._cfg = cfg
        self._log = log
        self._record = record
        self._metrics = metrics
        self._cond = threading.Condition()
        self._queue: List[Tuple[float, int, _Delivery]] = []   # heap by due time
        self._order = itertools.count()
        self._pending = 0          # queued or being attempted
        self._pending_bytes = 0
        self._threads: List[threading.Thread] = []
        self._closed = False

    # -- the caller's side

    def send(self, job_id: str, job_object: Dict[str, Any], url: str) -> str:
        """Queue the first attempt of a new delivery of ``job_object`` to ``url``; return its
        delivery id. A URL the policy now refuses, or a full queue, is recorded failed."""
        delivery_id = new_delivery_id()
        self._start(job_id, job_object, url, delivery_id, 0)
        return delivery_id

    def resume(self, job_id: str, job_object: Dict[str, Any], url: str, delivery_id: str,
               attempts_so_far: int) -> None:
        """Continue a delivery a restart found pending: same id, the attempt count going on
        from ``attempts_so_far``; its next attempt is due at once (the restart was its wait)."""
        self._start(job_id, job_object, url, delivery_id, attempts_so_far)

    def close(self, timeout: float) -> None:
        """Stop: no attempt starts after this; those under way get up to ``timeout`` seconds.
        A delivery still waiting keeps its last recorded state, pending, for the next start."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def pending(self) -> int:
        """Deliveries queued or under way."""
        with self._cond:
            return self._pending

    def _start(self, job_id: str, job_object: Dict[str, Any], url: str, delivery_id: str,
               attempts: int) -> None:
        try:
            target = parse_target(url, self._cfg)
        except ApiError as exc:
            return self._give_up(job_id, delivery_id, attempts, exc.message)
        if attempts >= self._cfg.get("server.webhook_max_attempts"):
            return self._give_up(job_id, delivery_id, attempts, "no attempts left "
                                 "(server.webhook_max_attempts)")
        try:
            body = dumps_compact(job_object).encode("utf-8")
        except (TypeError, ValueError) as exc:
            return self._give_up(job_id, delivery_id, attempts, "the job is not JSON: %s" % exc)
        delivery = _Delivery(job_id, delivery_id, target, body, attempts)
        with self._cond:
            full = self._full(len(body))
            if not full:
                self._pending += 1
                self._pending_bytes += len(body)
        if full:
            return self._give_up(job_id, delivery_id, attempts, "too many webhook deliveries "
                                 "waiting (at most %d, %d bytes): this one was dropped"
                                 % (self.max_pending, self.max_pending_bytes))
        now = time.time()   # queued: recorded (a restart resumes it), due at once, not logged
        self._safe_record(job_id, _state(delivery, {}, now, "pending", now))
        with self._cond:
            if self._closed:       # left recorded pending: the next start resumes it
                self._release(delivery)
            else:
                self._push(time.monotonic(), delivery)
                self._spawn_workers()
        return None

    def _full(self, size: int) -> bool:
        return (self._pending >= self.max_pending or
                self._pending_bytes + size > self.max_pending_bytes)

    def _give_up(self, job_id: str, delivery_id: str, attempts: int, why: str) -> None:
        self._log.error("webhook delivery %s of job %s failed: %s" % (delivery_id, job_id, why))
        self._count("failed")
        self._safe_record(job_id, {"delivery_id": delivery_id, "attempt": attempts,
                                   "error": why, "at": rfc3339(), "next_attempt_at": None,
                                   "state": "failed"})

    # -- the workers' side (self._cond held by callers of _push and _spawn_workers)

    def _push(self, due: float, delivery: _Delivery) -> None:
        heapq.heappush(self._queue, (due, next(self._order), delivery))
        self._cond.notify()

    def _spawn_workers(self) -> None:
        while len(self._threads) < self.workers:
            thread = threading.Thread(target=self._work, daemon=True,
                                      name="clinvk-webhook-%d" % len(self._threads))
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        while True:
            delivery = self._next_due()
            if delivery is None:
                return
            try:
                self._attempt(delivery)
            except Exception:   # a bug in one delivery must not stop the worker and the rest
                self._log.error("webhook delivery %s failed unexpectedly" % delivery.delivery_id,
                                "", traceback.format_exc())

    def _next_due(self) -> Optional[_Delivery]:
        with self._cond:
            while not self._closed:
                wait = None
                if self._queue:
                    wait = self._queue[0][0] - time.monotonic()
                    if wait <= 0:
                        return heapq.heappop(self._queue)[2]
                self._cond.wait(wait)
            return None

    def _attempt(self, delivery: _Delivery) -> None:
        delivery.attempts += 1
        outcome, retry_after = self._post(delivery)
        now = time.time()
        if 200 <= outcome.get("status_code", 0) < 300:
            self._save(delivery, outcome, now, "delivered")
            return self._finish(delivery)
        if delivery.attempts >= self._cfg.get("server.webhook_max_attempts"):
            self._save(delivery, outcome, now, "failed")
            return self._finish(delivery)
        asked = retry_after_secs(retry_after, now) if retry_after else None
        delay = retry_delay(delivery.attempts, self.first_retry_secs, self.max_retry_secs) \
            if asked is None else min(asked, self.max_retry_secs)
        self._save(delivery, outcome, now, "pending", now + delay)
        with self._cond:
            if self._closed:
                self._release(delivery)    # stays recorded pending for the next start
            else:
                self._push(time.monotonic() + delay, delivery)
        return None

    def _post(self, delivery: _Delivery) -> Tuple[Dict[str, Any], str]:
        """{"status_code": n} or {"error": why} of one attempt, and the receiver's
        Retry-After ("" when none)."""
        headers = {"Content-Type": "application/json", "X-Clinvk-Event": EVENT,
                   "X-Clinvk-Delivery": delivery.delivery_id,
                   "X-Clinvk-Signature": sign(self._cfg.get("server.webhook_secret"),
                                              delivery.body),
                   "User-Agent": "clinvk/%s" % __version__}
        timeout = self._cfg.get("server.webhook_timeout_secs")
        try:
            status, retry_after = post(delivery.target, delivery.body, headers, timeout)
        except socket.timeout:
            return {"error": "timed out after %ds (server.webhook_timeout_secs)" % timeout}, ""
        except Exception as exc:   # any failure of one attempt (refused, TLS, reset) is its error
            return {"error": "%s: %s" % (type(exc).__name__, exc) if str(exc)
                    else type(exc).__name__}, ""
        return {"status_code": status}, retry_after

    def _finish(self, delivery: _Delivery) -> None:
        with self._cond:
            self._release(delivery)

    def _release(self, delivery: _Delivery) -> None:
        self._pending -= 1
        self._pending_bytes -= len(delivery.body)

    # -- recording and logging

    def _save(self, delivery: _Delivery, outcome: Dict[str, Any], now: float, state: str,
              next_at: Optional[float] = None) -> None:
        """Log and count an attempt and hand its state to ``record``."""
        self._log_attempt(delivery, outcome, state, next_at, now)
        self._count("retried" if state == "pending" else state)
        self._safe_record(delivery.job_id, _state(delivery, outcome, now, state, next_at))

    def _log_attempt(self, delivery: _Delivery, outcome: Dict[str, Any], state: str,
                     next_at: Optional[float], now: float) -> None:
        code = outcome.get("status_code", 0)
        result = "HTTP %d" % code if code else outcome["error"]
        if 300 <= code < 400:
            result += " (redirects are not followed)"
        then = "retry in %.0fs" % (next_at - now) if next_at is not None else state
        text = ("webhook delivery %s of job %s to %s: attempt %d of %d: %s; %s"
                % (delivery.delivery_id, delivery.job_id, delivery.target.origin(),
                   delivery.attempts, self._cfg.get("server.webhook_max_attempts"), result,
                   then))
        if state == "failed":
            self._log.error(text)
        elif getattr(self._log, "json", False):
            self._log.info("webhook attempt", delivery_id=delivery.delivery_id,
                           job_id=delivery.job_id, target=delivery.target.origin(),
                           attempt=delivery.attempts, state=state, **outcome)
        else:
            self._log.info(text)

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.webhook_attempted(outcome)

    def _safe_record(self, job_id: str, entry: Dict[str, Any]) -> None:
        try:
            self._record(job_id, entry)
        except Exception as exc:  # the store's trouble must not stop the other deliveries
            self._log.error("webhook delivery %s of job %s: cannot record its state: %r"
                            % (entry["delivery_id"], job_id, exc))


def _state(delivery: _Delivery, outcome: Dict[str, Any], now: float, state: str,
           next_at: Optional[float]) -> Dict[str, Any]:
    """What ``record`` gets: delivery_id, attempt, status_code or error (neither before the
    first attempt), at, next_attempt_at (None once final) and state."""
    entry = {"delivery_id": delivery.delivery_id, "attempt": delivery.attempts}
    entry.update(outcome)
    entry.update({"at": _stamp(now), "state": state,
                  "next_attempt_at": _stamp(next_at) if next_at is not None else None})
    return entry


def _stamp(seconds: float) -> str:
    return rfc3339(datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc))
