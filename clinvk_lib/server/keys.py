"""The API keys the server accepts, from the environment / config, a key file and gopass.

Keys are held only as SHA-256 digests: a candidate is hashed once and compared with
``hmac.compare_digest`` against every digest (no early exit, and equal lengths, so neither
which key matched nor a key's length shows in the timing). No key is ever logged or put in an
error message.

Sources, all merged:
- ``server.api_keys`` (``CLINVK_API_KEYS``, comma-separated), read at start.
- ``server.admin_api_keys`` (``CLINVK_ADMIN_API_KEYS``), read at start: keys that are accepted
  like the others and may also use every session, not just those their own requests created.
- ``server.api_keys_file``: one key per line, ``#`` comments; re-read when the file changes
  (its inode, size or mtime, checked at most once a second). A file that disappears or
  cannot be read later contributes no keys until it is fixed: revoking beats a stale list.
- ``server.api_keys_gopass_path``: ``gopass show -o PATH`` (comma-separated keys), read once
  at start; restart the server to pick up a rotated secret.

A source that is configured but unusable at start is a ``ConfigError``: the server does not
come up with fewer keys than the operator meant it to have.

A key is known elsewhere (on the sessions its requests create) by its id, ``key_id(key)``: the
first 16 hex digits of HMAC-SHA-256 keyed with the fixed label ``clinvk-key-id`` over the key.
It is stable, names no secret, and an operator can compute it from the key alone.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import shutil
import subprocess
import threading
import time
from typing import Callable, Iterable, List, NamedTuple, Optional, Tuple

from ..config import Config, ConfigError

KEY_ID_LABEL = b"clinvk-key-id"
GOPASS_TIMEOUT_SECS = 10.0
FILE_CHECK_SECS = 1.0           # how often the key file's stat is looked at, at most

# A gopass entry name: what `gopass ls` prints; never starting with "-" (it would be a flag).
_GOPASS_PATH = re.compile(r"[A-Za-z0-9_.@][A-Za-z0-9/_.@-]*\Z")


def digest(key: str) -> bytes:
    """The form a key is kept and compared in."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def key_id(key: str) -> str:
    """The stable, non-secret id of ``key``: the first 16 hex digits of HMAC-SHA-256 keyed
    with KEY_ID_LABEL over the key, as ``printf %s KEY | openssl dgst -sha256 -hmac
    clinvk-key-id -r | cut -c1-16`` prints it."""
    return hmac.new(KEY_ID_LABEL, key.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


class KeyIdentity(NamedTuple):
    """Who a valid key is: its ``key_id`` and whether it is an admin key (one that may use
    every session)."""
    key_id: str
    admin: bool


def split_keys(text: str) -> List[str]:
    """Keys from a comma- (or newline-) separated list: trimmed, blanks dropped."""
    return [k.strip() for k in re.split(r"[,\n]", text) if k.strip()]


def parse_key_file(text: str, path: str) -> List[str]:
    """The keys in a key file: one per line; blank lines and ``#`` comments (whole lines, or
    after whitespace) are skipped. A key holding whitespace is an error naming the line."""
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        key = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        if not key:
            continue
        if any(c.isspace() for c in key):
            raise ConfigError("server.api_keys_file %s line %d: a key must not contain spaces "
                              "(one key per line; '#' starts a comment)" % (path, number))
        keys.append(key)
    return keys


def read_key_file(path: str) -> List[str]:
    """The keys in the file at ``path``; ConfigError saying why it cannot be used."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise ConfigError("server.api_keys_file %s: not UTF-8 text" % path) from None
    except OSError as exc:
        raise _file_error(path, exc) from None
    return parse_key_file(text, path)


def _file_error(path: str, exc: OSError) -> ConfigError:
    if isinstance(exc, FileNotFoundError):
        return ConfigError("server.api_keys_file %s: no such file; create it with one key per "
                           "line, or unset the setting" % path)
    return ConfigError("server.api_keys_file %s: cannot read it: %s"
                       % (path, exc.strerror or exc))


def read_gopass(path: str, timeout: float = GOPASS_TIMEOUT_SECS) -> List[str]:
    """The keys gopass holds at ``path`` (``gopass show -o PATH``, no shell); ConfigError
    saying what went wrong. The secret's text never appears in the error."""
    where = "server.api_keys_gopass_path %r" % path
    if not _GOPASS_PATH.match(path):
        raise ConfigError("%s: not a gopass entry name (letters, digits, '/', '_', '.', '@', "
                          "'-'; not starting with '-')" % where)
    exe = shutil.which("gopass")
    if exe is None:
        raise ConfigError("%s: gopass is not installed (no 'gopass' on PATH); install it or "
                          "give the keys in CLINVK_API_KEYS" % where)
    try:
        done = subprocess.run([exe, "show", "-o", path], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ConfigError("%s: 'gopass show -o' did not answer within %gs (is the GPG agent "
                          "waiting for a passphrase?)" % (where, timeout)) from None
    except OSError as exc:
        raise ConfigError("%s: cannot run gopass: %s" % (where, exc.strerror or exc)) from None
    if done.returncode != 0:
        # stderr only: stdout may hold part of the secret.
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ConfigError("%s: 'gopass show -o' failed (exit %d)%s" % (
            where, done.returncode, ": " + reason[-1] if reason else ""))
    keys = split_keys(done.stdout.decode("utf-8", "replace"))
    if not keys:
        raise ConfigError("%s: the entry is empty; store the keys comma-separated as its "
                          "password" % where)
    return keys


class ApiKeys:
    """The accepted keys. ``len(keys)`` is how many there are now; ``bool(keys)`` whether
    authentication is on (any source configured, even a key file that is empty right now:
    then nobody gets in, rather than everybody)."""

    def __init__(self, keys: Iterable[str] = (), key_file: str = "",
                 on_error: Callable[[str], None] = lambda message: None,
                 clock: Callable[[], float] = time.monotonic,
                 admin_keys: Iterable[str] = ()) -> None:
        self._admin: Tuple[bytes, ...] = tuple(sorted({digest(k) for k in admin_keys}))
        self._fixed: Tuple[bytes, ...] = tuple(sorted({digest(k) for k in keys}
                                                      | set(self._admin)))
        self._file = key_file
        self._on_error = on_error
        self._clock = clock
        self._lock = threading.Lock()
        self._file_digests: Tuple[bytes, ...] = ()
        self._file_signature: Optional[Tuple[int, int, int]] = None
        self._checked_at = 0.0
        self._all = self._fixed
        if key_file:
            self._file_signature = _signature(key_file)
            self._use_file_keys(read_key_file(key_file))
            self._checked_at = clock()

    @classmethod
    def from_config(cls, cfg: Config, on_error: Callable[[str], None] = lambda message: None
                    ) -> "ApiKeys":
        """The keys the ``server.api_keys*`` settings name; ConfigError when a configured
        source cannot be used."""
        keys = [k.strip() for k in cfg.get("server.api_keys") if k.strip()]
        admin_keys = [k.strip() for k in cfg.get("server.admin_api_keys") if k.strip()]
        gopass_path = cfg.get("server.api_keys_gopass_path")
        if gopass_path:
            keys += read_gopass(gopass_path)
        key_file = cfg.get("server.api_keys_file")
        return cls(keys, os.path.expanduser(key_file) if key_file else "", on_error,
                   admin_keys=admin_keys)

    def __bool__(self) -> bool:
        return bool(self._fixed) or bool(self._file)

    def __len__(self) -> int:
        self._refresh()
        return len(self._all)

    def matches(self, candidate: str) -> bool:
        """True when ``candidate`` is one of the keys; takes the same time whichever key it
        matches, or none."""
        self._refresh()
        return _one_of(digest(candidate), self._all)

    def identify(self, candidate: str) -> Optional[KeyIdentity]:
        """Who ``candidate`` is when it is one of the keys, else None; takes the same time
        whichever key it matches, or none."""
        self._refresh()
        given = digest(candidate)
        if not _one_of(given, self._all):
            return None
        return KeyIdentity(key_id(candidate), _one_of(given, self._admin))

    def _use_file_keys(self, keys: List[str]) -> None:
        self._file_digests = tuple(sorted({digest(k) for k in keys}))
        self._all = tuple(sorted(set(self._fixed) | set(self._file_digests)))

    def _refresh(self) -> None:
        """Re-read the key file if it changed; stat it at most once per FILE_CHECK_SECS."""
        if not self._file:
            return
        now = self._clock()
        if now - self._checked_at < FILE_CHECK_SECS:
            return
        with self._lock:
            if now - self._checked_at < FILE_CHECK_SECS:
                return
            self._checked_at = now
            try:
                signature = _signature(self._file)
            except ConfigError as exc:
                if self._file_signature is not None:
                    self._file_signature = None
                    self._use_file_keys([])
                    self._on_error("%s; its keys are no longer accepted" % exc)
                return
            if signature == self._file_signature:
                return
            self._file_signature = signature
            try:
                keys = read_key_file(self._file)
            except ConfigError as exc:
                self._use_file_keys([])
                self._on_error("%s; its keys are no longer accepted" % exc)
                return
            self._use_file_keys(keys)


def _one_of(given: bytes, known: Tuple[bytes, ...]) -> bool:
    """True if ``given`` is in ``known``, compared with every entry (no early exit)."""
    found = False
    for entry in known:
        found |= hmac.compare_digest(given, entry)
    return found


def _signature(path: str) -> Tuple[int, int, int]:
    """What changes when the file is rewritten or replaced (an editor's rename included)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _file_error(path, exc) from None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
