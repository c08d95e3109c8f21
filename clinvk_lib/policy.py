"""What a request may ask for: working directories, extra flags, dangerous modes.

The command line trusts its user (relative workdirs, any extra flags from the config); the
HTTP server and the MCP server apply a ``Policy`` built from the ``server.*`` settings, so
nothing a request says can make a backend run outside it.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Iterable, List, Optional, Sequence

# Where no agent should ever be pointed by a remote request. The operator may remove entries
# explicitly (server.blocked_workdir_prefixes: []), never by accident.
DEFAULT_BLOCKED_PREFIXES = ("/etc", "/proc", "/sys", "/dev", "/boot", "/root")

# The modes that let an agent act without limits; refused unless allow_dangerous_modes.
DANGEROUS_APPROVAL = ("none",)
DANGEROUS_SANDBOX = ("full",)


class PolicyError(ValueError):
    """A request asked for something the policy forbids; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__("%s: %s" % (field, message))
        self.field = field


def resolve_workdir(path: str, require_absolute: bool, base: Optional[str] = None) -> str:
    """The real path of an existing directory, or PolicyError naming what is wrong."""
    if not isinstance(path, str) or not path.strip():
        raise PolicyError("workdir", "must be a non-empty path")
    if "\x00" in path:
        raise PolicyError("workdir", "must not contain NUL bytes")
    if not os.path.isabs(path):
        if require_absolute:
            raise PolicyError("workdir", "must be an absolute path: got %r" % path)
        path = os.path.join(base or os.getcwd(), path)
    real = os.path.realpath(path)
    if not os.path.exists(real):
        raise PolicyError("workdir", "directory does not exist: %s" % path)
    if not os.path.isdir(real):
        raise PolicyError("workdir", "not a directory: %s" % path)
    return real


def under_prefix(path: str, prefix: str) -> bool:
    """True when ``path`` is ``prefix`` or inside it, comparing whole path components
    (``/srv/app`` covers ``/srv/app/x`` but not ``/srv/application``)."""
    prefix = os.path.realpath(prefix) if os.path.isabs(prefix) else prefix
    prefix = prefix.rstrip("/") or "/"
    if prefix == "/":
        return True
    return path == prefix or path.startswith(prefix + "/")


def check_extra_flags(backend_name: str, flags: Sequence[str], allowed: Dict[str, bool],
                      path_flags: Iterable[str] = (),
                      check_path: Optional[Callable[[str, str], str]] = None) -> List[str]:
    """Check a request's ``extra`` list flag by flag against ``allowed`` (flag -> takes a value).

    ``--flag=value`` forms are checked by their name. A value must follow a flag that takes
    one and may not itself start with ``-`` (the CLI would read it as another flag: use
    ``--flag=value`` for such values); a bare word anywhere else is refused (it could be read
    as a prompt or a subcommand). Values of ``path_flags`` go through ``check_path(field,
    value)``, which returns the path to pass on.
    """
    path_flags = frozenset(path_flags)
    out: List[str] = []
    pending = ""                # the flag waiting for its value
    for i, tok in enumerate(flags):
        field = "extra[%d]" % i
        if not isinstance(tok, str):
            raise PolicyError(field, "expected a string")
        if "\x00" in tok or "\n" in tok:
            raise PolicyError(field, "must not contain NUL or newline characters")
        if pending:
            if tok.startswith("-"):
                raise PolicyError(field, "value of %s must not start with '-' (write %s=VALUE)"
                                  % (pending, pending))
            out.append(check_path(field, tok) if pending in path_flags and check_path else tok)
            pending = ""
            continue
        if not tok.startswith("-") or tok in ("-", "--"):
            raise PolicyError(field, "expected a flag starting with '-', got %r" % tok)
        name, has_value, value = tok.partition("=")
        if name not in allowed:
            raise PolicyError(field, "flag %r is not allowed for %s (allowed: %s)"
                              % (name, backend_name, ", ".join(sorted(allowed)) or "none"))
        if allowed[name] and not has_value:
            pending = name
        elif not allowed[name] and has_value:
            raise PolicyError(field, "flag %r takes no value" % name)
        elif has_value and name in path_flags and check_path:
            tok = "%s=%s" % (name, check_path(field, value))
        out.append(tok)
    if pending:
        raise PolicyError("extra[%d]" % (len(flags) - 1), "flag %r needs a value" % pending)
    return out


class Policy:
    """The server's execution policy (built from the ``server.*`` settings)."""

    def __init__(self, allowed_prefixes: Iterable[str] = (),
                 blocked_prefixes: Iterable[str] = DEFAULT_BLOCKED_PREFIXES,
                 allow_dangerous_modes: bool = False) -> None:
        self.allowed_prefixes = [p for p in allowed_prefixes if p]
        self.blocked_prefixes = [p for p in blocked_prefixes if p]
        self.allow_dangerous_modes = allow_dangerous_modes

    @classmethod
    def from_config(cls, cfg) -> "Policy":
        return cls(cfg.get("server.allowed_workdir_prefixes") or (),
                   cfg.get("server.blocked_workdir_prefixes"),
                   bool(cfg.get("server.allow_dangerous_modes")))

    def check_workdir(self, path: str) -> str:
        """The resolved workdir, if this policy allows it."""
        return self.check_path("workdir", resolve_workdir(path, require_absolute=True))

    def check_path(self, field: str, path: str) -> str:
        """A path given to a backend flag (``--add-dir``): absolute, and inside the same
        prefixes as a workdir (it need not exist or be a directory)."""
        if not os.path.isabs(path):
            raise PolicyError(field, "must be an absolute path: got %r" % path)
        real = os.path.realpath(path)
        for prefix in self.blocked_prefixes:
            if under_prefix(real, prefix):
                raise PolicyError(field, "%s is inside the blocked prefix %s" % (real, prefix))
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
