"""A small Redis client on the standard library: the RESP protocol (RESP2 replies, and the
RESP3 types when a connection asks for them with ``HELLO 3``), ``redis://`` and ``rediss://``
URLs (TLS from ``ssl``), AUTH and SELECT, a connection pool, connect and read timeouts,
pipelining, Lua scripts by SHA1, and a key prefix. Valkey speaks the same protocol.

What a caller uses: ``Client(url)``, then ``execute(*args)``, ``pipeline(commands)``,
``run_script(script, keys, args)``, ``key(name)`` and ``close()``; ``dedicated()`` and
``call(conn, *args)`` for a blocking command on a connection of its own.

Failures are of two kinds, both naming the URL without its password: ``RedisUnavailable``
(Redis cannot be reached, or the connection broke mid-command) and ``ReplyError`` (Redis
answered with an error). A command is never sent twice: only connecting is retried, with
back-off, because a command whose reply was lost may have run.
"""

from __future__ import annotations

import hashlib
import select
import socket
import ssl
import threading
import time
import urllib.parse
from typing import Any, Callable, List, NamedTuple, Optional, Sequence

DEFAULT_PORT = 6379
CRLF = b"\r\n"
# A bulk string or aggregate may not be longer than Redis' own proto-max-bulk-len default.
MAX_LENGTH = 512 * 1024 * 1024


class RedisError(Exception):
    """Anything that went wrong talking to Redis; the message names the URL (no password)."""


class RedisUnavailable(RedisError):
    """Redis could not be reached, or the connection broke before the reply came."""


class ReplyError(RedisError):
    """Redis answered with an error reply (``-ERR ...``); ``code`` is its first word."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = message.split(" ", 1)[0]


class RedisURL(NamedTuple):
    """A parsed ``redis://[user:password@]host:port/db`` or ``rediss://`` URL."""

    tls: bool
    host: str
    port: int
    db: int
    username: str
    password: str
    protocol: int          # 2 (RESP2, the default) or 3 (HELLO 3: RESP3 replies)

    def redacted(self) -> str:
        """The URL as error messages and logs show it: the password never appears."""
        user = self.username + ("@" if self.username else "")
        if self.password:
            user = "%s:***@" % self.username
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s%s:%d/%d" % ("rediss" if self.tls else "redis", user, host, self.port,
                                    self.db)


def parse_url(url: str) -> RedisURL:
    """``url`` checked and parsed. Raises ValueError saying what is wrong, without repeating
    the password."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ValueError("not a Redis URL (%s): write redis://[user:password@]host:port/db"
                         % exc) from None
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError("a Redis URL starts with redis:// or rediss:// (TLS): got %r"
                         % (parts.scheme + ":" if parts.scheme else url.split("@")[-1],))
    if not parts.hostname:
        raise ValueError("the Redis URL names no host: write redis://host:6379/0")
    db_text = parts.path.strip("/") or "0"
    if not db_text.isdigit():
        raise ValueError("the Redis URL's database must be a number (redis://host:6379/0): "
                         "got %r" % db_text)
    query = urllib.parse.parse_qs(parts.query)
    protocol = query.pop("protocol", ["2"])[-1]
    if protocol not in ("2", "3") or query:
        raise ValueError("the Redis URL's only query parameter is protocol=2 or protocol=3: "
                         "got %r" % parts.query)
    return RedisURL(parts.scheme == "rediss", parts.hostname, port, int(db_text),
                    urllib.parse.unquote(parts.username or ""),
                    urllib.parse.unquote(parts.password or ""), int(protocol))


def encode_command(args: Sequence[Any]) -> bytes:
    """One command as a RESP array of bulk strings; str is UTF-8, numbers their decimal."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode("utf-8")
        elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
            data = repr(arg).encode("ascii")
        else:
            raise TypeError("a Redis command argument is bytes, str, int or float: got %r"
                            % (arg,))
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class ProtocolError(RedisUnavailable):
    """The bytes from the server are not RESP: the connection cannot be trusted any more."""


class ReplyReader:
    """Reads one reply at a time from a buffered binary file (``socket.makefile('rb')``).
    Bulk strings come back as ``bytes``, simple strings as ``str``; an error reply is returned
    (not raised) as a ``ReplyError``, so a pipeline can hand each command its own outcome."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def read(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        parse = self._PARSERS.get(kind)
        if parse is None:
            raise ProtocolError("unexpected reply type %r" % kind)
        value = parse(self, rest)
        if kind == b"|":    # RESP3 attributes precede the reply they describe: skip them
            return self.read()
        return value

    def _line(self) -> bytes:
        line = self.stream.readline(MAX_LENGTH)
        if not line:
            raise RedisUnavailable("the connection was closed by the server")
        if not line.endswith(CRLF):
            raise ProtocolError("a reply line does not end with CRLF")
        return line[:-2]

    def _length(self, rest: bytes) -> int:
        try:
            length = int(rest)
        except ValueError:
            raise ProtocolError("a reply length is not a number: %r" % rest[:40]) from None
        if length > MAX_LENGTH:
            raise ProtocolError("a reply length is out of range: %d" % length)
        return length

    def _bulk(self, rest: bytes) -> Optional[bytes]:
        length = self._length(rest)
        if length < 0:
            return None
        data = self.stream.read(length + 2)
        if len(data) != length + 2:
            raise RedisUnavailable("the connection was closed by the server mid-reply")
        return data[:-2]

    def _items(self, rest: bytes) -> Optional[List[Any]]:
        length = self._length(rest)
        return None if length < 0 else [self.read() for _ in range(length)]

    def _map(self, rest: bytes) -> dict:
        items = [self.read() for _ in range(2 * self._length(rest))]
        return {_hashable(k): v for k, v in zip(items[::2], items[1::2])}

    def _double(self, rest: bytes) -> float:
        return float(rest.replace(b"inf", b"Infinity"))

    _PARSERS = {
        b"+": lambda self, rest: rest.decode("utf-8", "replace"),
        b"-": lambda self, rest: ReplyError(rest.decode("utf-8", "replace")),
        b":": lambda self, rest: int(rest),
        b"$": _bulk,
        b"*": _items,
        # RESP3
        b"_": lambda self, rest: None,
        b"#": lambda self, rest: rest == b"t",
        b",": _double,
        b"(": lambda self, rest: int(rest),
        b"=": lambda self, rest: (self._bulk(rest) or b"")[4:],    # "txt:" before the text
        b"!": lambda self, rest: ReplyError((self._bulk(rest) or b"").decode("utf-8", "replace")),
        b"~": _items,
        b">": _items,
        b"%": _map,
        b"|": _map,
    }


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


class Connection:
    """One socket to Redis, authenticated and on its database once ``connect`` returns."""

    def __init__(self, url: RedisURL, connect_timeout: float, read_timeout: float,
                 ssl_context: Optional[ssl.SSLContext] = None) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.ssl_context = ssl_context
        self.sock: Optional[socket.socket] = None
        self.reader: Optional[ReplyReader] = None

    def connect(self) -> None:
        sock = socket.create_connection((self.url.host, self.url.port), self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.url.tls:
                context = self.ssl_context or ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=self.url.host)
            sock.settimeout(self.read_timeout)
            self.sock = sock
            self.reader = ReplyReader(sock.makefile("rb"))
            for reply in self.call_all(self._handshake()):
                if isinstance(reply, ReplyError):
                    raise reply
        except BaseException:
            self.close()
            raise

    def _handshake(self) -> List[Sequence[Any]]:
        url = self.url
        auth = ([url.username or "default", url.password] if url.password else [])
        commands: List[Sequence[Any]] = []
        if url.protocol == 3:
            commands.append(["HELLO", 3] + (["AUTH"] + auth if auth else []))
        elif auth:
            commands.append(["AUTH"] + auth if url.username else ["AUTH", url.password])
        if url.db:
            commands.append(["SELECT", url.db])
        return commands

    def call_all(self, commands: Sequence[Sequence[Any]],
                 timeout: Optional[float] = None) -> List[Any]:
        """Send ``commands`` in one write, then read one reply for each (pipelining)."""
        if not commands:
            return []
        assert self.sock is not None and self.reader is not None
        self.sock.settimeout(self.read_timeout if timeout is None else timeout)
        self.sock.sendall(b"".join(encode_command(c) for c in commands))
        return [self.reader.read() for _ in commands]

    def is_stale(self) -> bool:
        """True when an idle connection has something to read: the server closed it (it
        restarted, or dropped an idle client) or sent what nobody asked for."""
        if self.sock is None:
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def close(self) -> None:
        sock, self.sock, self.reader = self.sock, None, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


class Script(NamedTuple):
    """A Lua script, run by its SHA1 (EVALSHA) and loaded on the first NOSCRIPT."""

    source: str

    @property
    def sha1(self) -> str:
        return hashlib.sha1(self.source.encode("utf-8")).hexdigest()


class Client:
    """A pool of connections to one Redis. Thread-safe: each call borrows a connection, and
    at most ``max_connections`` exist at once (a caller beyond waits up to
    ``connect_timeout`` for one to come back).

    Connecting is retried ``connect_attempts`` times with doubling back-off from
    ``BACKOFF_SECS``. After a call finds Redis unreachable, calls fail at once (no socket, no
    wait) until a back-off window has passed, the window doubling up to ``MAX_BACKOFF_SECS``
    while Redis stays down; the first call that gets through resets it. So a Redis outage
    costs each request microseconds, not a connect timeout.
    """

    BACKOFF_SECS = 0.05
    MAX_BACKOFF_SECS = 5.0
    MAX_CONNECTIONS = 32

    def __init__(self, url: str, prefix: str = "", max_connections: int = MAX_CONNECTIONS,
                 connect_timeout: float = 5.0, read_timeout: float = 10.0,
                 connect_attempts: int = 3, ssl_context: Optional[ssl.SSLContext] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = parse_url(url)
        self.prefix = prefix
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.connect_attempts = max(1, connect_attempts)
        self.ssl_context = ssl_context
        self._clock = clock
        self._idle: List[Connection] = []
        self._open = 0
        self._cond = threading.Condition()
        self._down_until = 0.0
        self._down_for = 0.0
        self._closed = False

    def key(self, name: str) -> str:
        """``name`` under this client's prefix."""
        return self.prefix + name

    def execute(self, *args: Any, timeout: Optional[float] = None) -> Any:
        """One command's reply; an error reply raises ``ReplyError``. ``timeout`` overrides
        the read timeout (for blocking commands such as XREADGROUP BLOCK)."""
        reply = self.pipeline([args], timeout=timeout)[0]
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def pipeline(self, commands: Sequence[Sequence[Any]],
                 timeout: Optional[float] = None) -> List[Any]:
        """Every command's reply, in order, after one round trip; an error reply is returned
        in its place as a ``ReplyError`` (not raised). Wrap the commands in MULTI / EXEC to
        have them run as one transaction."""
        conn = self._borrow()
        try:
            replies = conn.call_all(commands, timeout)
        except (OSError, RedisUnavailable) as exc:
            conn.close()
            self._give_back(conn)
            raise self._unavailable("the connection broke", exc) from None
        self._give_back(conn)
        return [self._named(r) for r in replies]

    def run_script(self, script: Script, keys: Sequence[str] = (),
                   args: Sequence[Any] = ()) -> Any:
        """``script``'s reply, run atomically by Redis (EVALSHA; the source is sent once per
        server, the first time it answers NOSCRIPT)."""
        tail = [len(keys)] + list(keys) + list(args)
        try:
            return self.execute("EVALSHA", script.sha1, *tail)
        except ReplyError as exc:
            if exc.code != "NOSCRIPT":
                raise
        return self.execute("EVAL", script.source, *tail)

    def dedicated(self) -> Connection:
        """A connection of the caller's own, outside the pool (for blocking commands that
        would hold a pooled one for long): connected, with the pool's back-off; the caller
        closes it."""
        return self._connect()

    def call(self, conn: Connection, *args: Any, timeout: Optional[float] = None) -> Any:
        """``execute`` on a ``dedicated`` connection: the reply, ReplyError raised;
        RedisUnavailable (and the connection closed) when it broke."""
        try:
            reply = conn.call_all([args], timeout)[0]
        except (OSError, RedisUnavailable) as exc:
            conn.close()
            raise self._unavailable("the connection broke", exc) from None
        if isinstance(reply, ReplyError):
            raise self._named(reply)
        return reply

    def close(self) -> None:
        """Close the idle connections; those lent out close when they come back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            conn.close()

    # -- the pool -----------------------------------------------------------------------------

    def _borrow(self) -> Connection:
        deadline = self._clock() + self.connect_timeout
        with self._cond:
            while True:
                if self._closed:
                    raise RedisError("the client for %s is closed" % self.url.redacted())
                conn = self._fresh_idle()
                if conn is not None:
                    return conn
                if self._open < self.max_connections:
                    self._open += 1
                    break
                left = deadline - self._clock()
                if left <= 0:
                    raise RedisUnavailable("all %d connections to %s are busy (waited %gs)"
                                           % (self.max_connections, self.url.redacted(),
                                              self.connect_timeout))
                self._cond.wait(left)
        try:
            return self._connect()
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def _fresh_idle(self) -> Optional[Connection]:
        while self._idle:
            conn = self._idle.pop()
            if not conn.is_stale():
                return conn
            conn.close()
            self._open -= 1
        return None

    def _give_back(self, conn: Connection) -> None:
        with self._cond:
            if conn.sock is None or self._closed:
                self._open -= 1
            else:
                self._idle.append(conn)
            self._cond.notify()
        if self._closed:
            conn.close()

    def _connect(self) -> Connection:
        now = self._clock()
        if now < self._down_until:
            raise RedisUnavailable("Redis at %s is unreachable; the next attempt is in %.2fs"
                                   % (self.url.redacted(), self._down_until - now))
        delay = self.BACKOFF_SECS
        for attempt in range(self.connect_attempts):
            conn = Connection(self.url, self.connect_timeout, self.read_timeout,
                              self.ssl_context)
            try:
                conn.connect()
            except ReplyError as exc:
                raise self._named(exc) from None
            except (OSError, RedisUnavailable) as exc:
                if attempt + 1 == self.connect_attempts:
                    self._mark_down()
                    raise self._unavailable("cannot connect", exc) from None
                time.sleep(delay)
                delay *= 2
                continue
            self._down_for = 0.0
            return conn
        raise AssertionError("unreachable")

    def _mark_down(self) -> None:
        self._down_for = min(self.MAX_BACKOFF_SECS, max(self.BACKOFF_SECS, 2 * self._down_for))
        self._down_until = self._clock() + self._down_for

    def _unavailable(self, what: str, exc: BaseException) -> RedisUnavailable:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, socket.timeout):
            reason = "timed out"
        return RedisUnavailable("Redis at %s: %s (%s)" % (self.url.redacted(), what, reason))

    def _named(self, reply: Any) -> Any:
        if isinstance(reply, ReplyError):
            return ReplyError("%s (Redis at %s)" % (reply, self.url.redacted()))
        return reply
