"""What a request may ask for: working directories, extra flags, dangerous modes.

The command line trusts its user (relative workdirs, any extra flags from the config); the
HTTP server and the MCP server apply a ``Policy`` built from the ``server.*`` settings, so
nothing a request says can make a backend run outside it.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

# Where no agent should ever be pointed by a remote request. The operator may remove entries
# explicitly (server.blocked_workdir_prefixes: []), never by accident.
DEFAULT_BLOCKED_PREFIXES = ("/etc", "/proc", "/sys", "/dev", "/boot", "/root")

# The modes that let an agent act without limits; refused unless allow_dangerous_modes.
DANGEROUS_APPROVAL = ("none",)
DANGEROUS_SANDBOX = ("full",)

DEFAULT_WORKDIR_KEY = "server.default_workdir"


class PolicyError(ValueError):
    """A request asked for something the policy forbids; the message names the field.

    ``reason`` is the message without the field. The message always encodes as UTF-8: a
    value quoted from a request may hold a lone surrogate, which JSON bodies, logs and the
    terminal cannot carry, so such characters appear as ``\\ud800`` escapes.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.reason = _encodable(message)
        super().__init__("%s: %s" % (field, self.reason))


def _encodable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def real_path(field: str, path: str) -> str:
    """``os.path.realpath(path)``; any way the OS can fail to resolve it (a /proc link it may
    not read, a name the file system cannot encode, ...) is a PolicyError naming ``field``."""
    try:
        return os.path.realpath(path)
    except (OSError, ValueError) as exc:
        detail = getattr(exc, "strerror", None) or str(exc)
        raise PolicyError(field, "cannot resolve %r: %s" % (path, detail))


def resolve_workdir(path: str, require_absolute: bool, base: Optional[str] = None) -> str:
    """The real path of an existing directory, or PolicyError naming what is wrong."""
    if not isinstance(path, str) or not path.strip():
        raise PolicyError("workdir", "must be a non-empty path")
    if "\x00" in path:
        raise PolicyError("workdir", "must not contain NUL bytes")
    if not os.path.isabs(path):
        if require_absolute:
            raise PolicyError("workdir", "must be an absolute path: got %r" % path)
        path = os.path.join(base or _current_dir("workdir"), path)
    real = real_path("workdir", path)
    if not os.path.exists(real):
        raise PolicyError("workdir", "directory does not exist: %s" % path)
    if not os.path.isdir(real):
        raise PolicyError("workdir", "not a directory: %s" % path)
    return real


def _current_dir(field: str) -> str:
    try:
        return os.getcwd()
    except OSError as exc:
        raise PolicyError(field, "the current directory is gone (%s)" % exc.strerror)


def under_prefix(path: str, prefix: str) -> bool:
    """True when ``path`` is ``prefix`` or inside it, comparing whole path components
    (``/srv/app`` covers ``/srv/app/x`` but not ``/srv/application``)."""
    return _within(path, _real_prefix(prefix))


def _real_prefix(prefix: str) -> str:
    """An operator's prefix as a real path (as written when it cannot be resolved)."""
    if not os.path.isabs(prefix):
        return prefix
    try:
        return os.path.realpath(prefix)
    except (OSError, ValueError):
        return os.path.normpath(prefix)


def _within(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/") or "/"
    if prefix == "/":
        return True
    return path == prefix or path.startswith(prefix + "/")


def _check_text(field: str, path: object) -> str:
    """A path from a request as text the OS can take: a string without NUL bytes or lone
    surrogates (JSON can carry "\\ud800"; no file name is made of it)."""
    if not isinstance(path, str):
        raise PolicyError(field, "expected a string path")
    if "\x00" in path:
        raise PolicyError(field, "must not contain NUL bytes")
    if any("\ud800" <= c <= "\udfff" for c in path):
        raise PolicyError(field, "must be valid Unicode text: %r holds a lone surrogate" % path)
    return path


def check_extra_flags(backend_name: str, flags: Sequence[str], allowed: Dict[str, bool],
                      path_flags: Optional[Mapping[str, Any]] = None,
                      check_path: Optional[Callable[[str, str], str]] = None) -> List[str]:
    """Check a request's ``extra`` list flag by flag against ``allowed`` (flag -> takes a value).

    ``--flag=value`` forms are checked by their name. A value must follow a flag that takes
    one and may not itself start with ``-`` (the CLI would read it as another flag: use
    ``--flag=value`` for such values); a bare word anywhere else is refused (it could be read
    as a prompt or a subcommand), except after a variadic path flag, whose CLI reads it as
    one more value.

    ``path_flags`` maps each path-valued flag to how its CLI reads a value (a
    ``backends.base.PathFlag``): the value is split as the CLI splits it and every path goes
    through ``check_path(field, path)``, which returns the path to pass on. Each checked path
    is passed on as its own ``--flag=PATH`` word, so the CLI reads exactly the paths that
    were checked and a variadic flag cannot take the words clinvk adds after the extra flags
    (codex-cli 0.169.0 reads ``-i A -`` as two images, ``-`` included).
    """
    path_flags = path_flags or {}
    out: List[str] = []
    pending = ""                # the flag waiting for its value
    variadic = ""               # the variadic path flag that takes further bare words
    for i, tok in enumerate(flags):
        field = "extra[%d]" % i
        if not isinstance(tok, str):
            raise PolicyError(field, "expected a string")
        if "\x00" in tok or "\n" in tok:
            raise PolicyError(field, "must not contain NUL or newline characters")
        if pending or (variadic and not tok.startswith("-")):
            if tok.startswith("-"):
                raise PolicyError(field, "value of %s must not start with '-' (write %s=VALUE)"
                                  % (pending, pending))
            name, pending = pending or variadic, ""
            out += _value_words(backend_name, name, tok, field, path_flags, check_path, False)
            variadic = name if getattr(path_flags.get(name), "variadic", False) else ""
            continue
        variadic = ""
        if not tok.startswith("-") or tok in ("-", "--"):
            raise PolicyError(field, "expected a flag starting with '-', got %r" % tok)
        name, has_value, value = tok.partition("=")
        if name not in allowed:
            raise PolicyError(field, "flag %r is not allowed for %s (allowed: %s)"
                              % (name, backend_name, ", ".join(sorted(allowed)) or "none"))
        if allowed[name] and not has_value:
            pending = name
            if name not in path_flags:      # a path flag's words come with its value
                out.append(tok)
        elif not allowed[name] and has_value:
            raise PolicyError(field, "flag %r takes no value" % name)
        elif has_value:
            out += _value_words(backend_name, name, value, field, path_flags, check_path, True)
        else:
            out.append(tok)
    if pending:
        raise PolicyError("extra[%d]" % (len(flags) - 1), "flag %r needs a value" % pending)
    return out


def _value_words(backend_name: str, name: str, value: str, field: str,
                 path_flags: Mapping[str, Any], check_path, joined: bool) -> List[str]:
    """The argv words for one value of flag ``name``: as given for an ordinary flag (one
    ``--flag=value`` word or the value alone, as it came), one ``--flag=PATH`` word per path
    the CLI reads for a path flag."""
    spec = path_flags.get(name)
    if spec is None:
        return ["%s=%s" % (name, value)] if joined else [value]
    paths = spec.split(value)
    if not paths:
        raise PolicyError(field, "%s needs a path: got %r" % (name, value))
    words = []
    for n, path in enumerate(paths, 1):
        which = name if len(paths) == 1 else "%s path %d of %d" % (name, n, len(paths))
        real = path
        if check_path is not None:
            try:
                real = check_path(field, path)
            except PolicyError as exc:
                raise PolicyError(field, "%s: %s" % (which, exc.reason))
        if spec.split(real) != [real]:
            # A symlink can resolve to a name with a separator in it: the CLI would read
            # several paths, none of them checked.
            raise PolicyError(field, "%s: %r resolves to %r, which %s would not read as one "
                              "path" % (which, path, real, backend_name))
        words.append("%s=%s" % (name, real))
    return words


class Policy:
    """The server's execution policy (built from the ``server.*`` settings).

    ``check_workdir`` / ``check_path`` / ``default_workdir`` return the real path a run may
    use, or raise PolicyError naming the field; ``check_modes`` refuses dangerous modes.
    ``allow_project_config`` says whether a backend may load the configuration a workdir
    holds (settings, hooks, MCP servers): off, because one allowed run can write there what
    the next run would execute.
    """

    def __init__(self, allowed_prefixes: Iterable[str] = (),
                 blocked_prefixes: Iterable[str] = DEFAULT_BLOCKED_PREFIXES,
                 allow_dangerous_modes: bool = False, default_workdir: str = "",
                 allow_project_config: bool = False) -> None:
        self.allowed_prefixes = [p for p in allowed_prefixes if p]
        self.blocked_prefixes = [p for p in blocked_prefixes if p]
        self.allow_dangerous_modes = allow_dangerous_modes
        self.configured_default_workdir = default_workdir
        self.allow_project_config = allow_project_config

    @classmethod
    def from_config(cls, cfg) -> "Policy":
        return cls(cfg.get("server.allowed_workdir_prefixes") or (),
                   cfg.get("server.blocked_workdir_prefixes"),
                   bool(cfg.get("server.allow_dangerous_modes")),
                   cfg.get(DEFAULT_WORKDIR_KEY) or "",
                   bool(cfg.get("server.allow_project_config")))

    def check_workdir(self, path: str) -> str:
        """The resolved workdir, if this policy allows it."""
        _check_text("workdir", path)
        return self._check_prefixes("workdir", resolve_workdir(path, require_absolute=True))

    def check_workdir_elsewhere(self, path: str) -> str:
        """A workdir on another host (an API node checks a worker's run): absolute and
        within the prefixes as written; whether it exists, and where its links lead, only
        that host can tell (it checks with ``check_workdir``)."""
        _check_text("workdir", path)
        if not os.path.isabs(path):
            raise PolicyError("workdir", "must be an absolute path: got %r" % path)
        return self._check_prefixes("workdir", os.path.normpath(path))

    def check_path(self, field: str, path: str) -> str:
        """A path given to a backend flag (``--add-dir``): absolute, and inside the same
        prefixes as a workdir (it need not exist or be a directory)."""
        _check_text(field, path)
        if not os.path.isabs(path):
            raise PolicyError(field, "must be an absolute path: got %r" % path)
        return self._check_prefixes(field, real_path(field, path))

    def default_workdir(self) -> str:
        """Where a request without a workdir runs: ``server.default_workdir``, else the
        server's current directory, checked like any workdir. When the policy refuses it,
        the PolicyError names server.default_workdir and how to fix it."""
        configured = self.configured_default_workdir
        where = ("server.default_workdir (%s)" % configured if configured else
                 "the server's current directory (server.default_workdir is not set)")
        try:
            return self.check_workdir(configured or _current_dir(DEFAULT_WORKDIR_KEY))
        except PolicyError as exc:
            raise PolicyError(DEFAULT_WORKDIR_KEY, "a request without workdir runs in %s, "
                              "which the policy refuses: %s. Send a workdir, or set "
                              "server.default_workdir to an allowed directory"
                              % (where, exc.reason))

    def _check_prefixes(self, field: str, real: str) -> str:
        """``real`` if it is outside every blocked prefix, contains none of them, and is
        inside an allowed prefix (when there are any)."""
        for prefix in self.blocked_prefixes:
            blocked = _real_prefix(prefix)
            if _within(real, blocked):
                raise PolicyError(field, "%s is inside the blocked prefix %s" % (real, prefix))
            if _within(blocked, real):
                # An agent pointed at an ancestor reaches everything below it.
                raise PolicyError(field, "%s contains the blocked prefix %s (pick a directory "
                                  "that does not contain it)" % (real, prefix))
        if self.allowed_prefixes and not any(under_prefix(real, p) for p in self.allowed_prefixes):
            raise PolicyError(field, "%s is not inside an allowed prefix (%s)"
                              % (real, ", ".join(self.allowed_prefixes)))
        return real

    def check_modes(self, approval_mode: str, sandbox_mode: str) -> None:
        if self.allow_dangerous_modes:
            return
        if approval_mode in DANGEROUS_APPROVAL:
            raise PolicyError("approval_mode", "%r lets the agent run anything without asking; "
                              "the server refuses it unless server.allow_dangerous_modes is true"
                              % approval_mode)
        if sandbox_mode in DANGEROUS_SANDBOX:
            raise PolicyError("sandbox_mode", "%r removes the sandbox; the server refuses it "
                              "unless server.allow_dangerous_modes is true" % sandbox_mode)
