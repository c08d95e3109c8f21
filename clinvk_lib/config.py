"""Every clinvk setting in one table, and loading them.

Each row of ``SETTINGS`` is one setting: dotted key, type, default, meaning. Its environment
variable is derived from the key (``server.port`` -> ``CLINVK_SERVER_PORT``); ``ENV_ALIASES``
adds the names the Go clinvoker used. A value comes from, highest first: command-line flags,
environment, the config file, the default. The file is YAML (the subset in ``miniyaml``) at
``--config``, else ``$CLINVK_CONFIG``, else ``$CLINVK_HOME/config.yaml`` (``~/.clinvk``).

Every value is checked on load: a wrong type, an unknown choice, a number out of range or an
unknown key is a ``ConfigError`` that names the key, where the value came from and what was
expected. Unlike the Go original, nothing bad is silently ignored. A quoted value in the file
is read like the same text in the environment (``port: "8080"`` is 8080), because the Go
clinvoker's ``config set`` wrote every value as a string.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

from .backends.base import NAMES
from .backends.options import APPROVAL_MODES, OUTPUT_FORMATS, SANDBOX_MODES
from .config_types import (BOOL, COUNT, STR, STR_LIST, Choice, Int, Invalid, NetworkList, Positive,
                           StoreURL, ValueType)
from .fsutil import write_atomically


class ConfigError(ValueError):
    """A setting that cannot be used; the message names key, source and what is expected."""


def _run_slots() -> int:
    """Backend runs at once by default: agent CLIs mostly wait on the network, so 2 per CPU."""
    return max(4, 2 * (os.cpu_count() or 1))


class Setting(NamedTuple):
    key: str
    kind: ValueType
    default: Any          # a value, or a function of the host returning it
    meaning: str
    secret: bool = False  # masked by Config.rows()

    @property
    def env_var(self) -> str:
        return "CLINVK_" + self.key.upper().replace(".", "_")

    def default_value(self) -> Any:
        value = self.default() if callable(self.default) else self.default
        return list(value) if isinstance(value, (list, tuple)) else value


# Per-backend settings, repeated under backends.<name>. for each backend.
_BACKEND_SETTINGS = (
    ("model",         STR,                          "",   "model used when a run names none"),
    ("allowed_tools", STR,                          "",   "tools allowed without asking (claude --allowedTools)"),
    ("approval_mode", Choice("", *APPROVAL_MODES),  "",   'overrides unified_flags.approval_mode ("" = use it)'),
    ("sandbox_mode",  Choice("", *SANDBOX_MODES),   "",   'overrides unified_flags.sandbox_mode ("" = use it)'),
    ("extra_flags",   STR_LIST,                     (),   "arguments appended to every command of this backend"),
    ("enabled",       BOOL,                         True, "false refuses runs on this backend"),
    ("system_prompt", STR,                          "",   "system prompt used when a run gives none"),
)

_S = Setting
SETTINGS = (
    _S("default_backend",                  Choice(*NAMES), "claude", "backend used when none is named"),
    # Defaults for every backend run.
    _S("unified_flags.approval_mode",      Choice(*APPROVAL_MODES), "default", "when the agent asks before acting (none = never: it may run anything)"),
    _S("unified_flags.sandbox_mode",       Choice(*SANDBOX_MODES), "default", "what the agent may change"),
    _S("unified_flags.max_turns",          COUNT,            0,        "agent turns per run (0 = the CLI's own limit)"),
    _S("unified_flags.max_tokens",         COUNT,            0,        "token budget per run (0 = none; no backend CLI has a flag for it)"),
    _S("unified_flags.verbose",            BOOL,             False,    "ask the backend CLI for verbose output"),
    _S("unified_flags.dry_run",            BOOL,             False,    "print the backend command instead of running it"),
    _S("unified_flags.command_timeout_secs", COUNT,          0,        "seconds before a CLI run is killed (0 = no limit)"),
) + tuple(
    _S("backends.%s.%s" % (name, field), kind, default, meaning)
    for name in NAMES for field, kind, default, meaning in _BACKEND_SETTINGS
) + (
    _S("session.auto_resume",              BOOL,             False,    "a plain prompt continues the last session"),
    _S("session.retention_days",           COUNT,            30,       "sessions unused this many days are deleted (0 = keep forever)"),
    _S("session.store_token_usage",        BOOL,             True,     "record token usage in sessions"),
    _S("session.default_tags",             STR_LIST,         (),       "tags added to every new session"),
    _S("output.format",                    Choice(*OUTPUT_FORMATS), "text", "CLI output format"),
    _S("output.show_tokens",               BOOL,             False,    "text output ends with a token-usage line"),
    _S("output.show_timing",               BOOL,             False,    "text output ends with a timing line"),
    _S("output.color",                     Choice("auto", "always", "never"), "auto", "colour in CLI output (auto = when a terminal, unless NO_COLOR or TERM=dumb)"),
    _S("parallel.max_workers",             Int(1),           3,        "tasks run at once by parallel"),
    _S("parallel.fail_fast",               BOOL,             False,    "parallel stops the other tasks after a failure"),
    _S("parallel.aggregate_output",        BOOL,             True,     "parallel prints one combined report"),
    _S("server.host",                      STR,              "127.0.0.1", "address the server binds"),
    _S("server.port",                      Int(1, 65535),    8080,     "port the server binds"),
    _S("server.request_timeout_secs",      COUNT,            300,      "seconds a request's backend run may take (0 = no limit)"),
    _S("server.read_timeout_secs",         Int(1),           30,       "seconds to receive a whole request"),
    _S("server.write_timeout_secs",        COUNT,            300,      "seconds to send a whole response, streams included (0 = no limit)"),
    _S("server.idle_timeout_secs",         Int(1),           120,      "seconds an idle keep-alive connection is kept"),
    _S("server.max_connections",           Int(1),           512,      "connections open at once (one thread each); past it an idle or stalled one makes room, else 503"),
    _S("server.max_concurrent_runs",       Int(1),           _run_slots, "backend runs at once; later requests wait (default max(4, 2 x CPUs))"),
    _S("server.queue_timeout_secs",        COUNT,            30,       "seconds a request waits for a run slot before 503 (0 = fail at once); on an API node (server.role: api), for a worker to start its run"),
    _S("server.tool_result_timeout_secs",  COUNT,            300,      "seconds a run parked on a client tool call waits for the result before it is killed (0 = until the request timeout)"),
    _S("server.default_profile",           Choice("agent", "chat"), "agent", "how much of its agent a backend brings to a server run without X-Clinvk-Profile or a <backend>-chat model: agent = all of it, chat = no tools, settings, project files, MCP servers or skills, a short system prompt, one turn"),
    _S("server.session_busy_wait_secs",    COUNT,            5,        "seconds a turn waits for a session another turn holds before 409 (0 = fail at once)"),
    _S("server.responses_max_stored",      Int(1),           1000,     "stored Responses API responses kept; past it the oldest are removed"),
    _S("server.responses_retention_days",  COUNT,            30,       "stored responses unwritten this many days are removed (0 = kept until the count pushes them out)"),
    _S("server.max_queued_jobs",           Int(1),           1000,     "durable jobs waiting for a run slot at once (background responses included); past it POST /api/v1/jobs gets 503"),
    _S("server.job_events_max_bytes",      Int(4096),        8 * 1024 * 1024, "bytes of events kept per job; later events are dropped (its final status is always kept)"),
    _S("server.role",                      Choice("all", "api"), "all", "with server.store: api = this node runs no backend: its durable jobs and every synchronous request's runs go to the workers (clinvk worker); all = it runs them too"),
    _S("server.job_visibility_timeout_secs", Int(3),        60,       "with server.store: seconds a job's process may go unheard before another process takes the job back (a running one ends interrupted, or is retried: server.job_retries)"),
    _S("server.job_retries",               Int(0, 10),       0,        "with server.store: times a job whose worker died while running it is run again (0 = it ends interrupted)"),
    _S("server.job_retention_days",        COUNT,            7,        "finished jobs and their events are removed this many days after they ended (0 = kept)"),
    _S("server.webhook_allowed_hosts",     STR_LIST,         (),       "hosts a job's webhook_url may name, as host or host:port, matched exactly (empty = webhooks refused)"),
    _S("server.webhook_secret",            STR,              "",       "key of the HMAC-SHA256 signature in X-Clinvk-Signature (empty = webhooks refused)", secret=True),
    _S("server.webhook_max_attempts",      Int(1, 100),      8,        "attempts per webhook delivery; retries wait 5 s, then twice as long each time, at most 300 s"),
    _S("server.webhook_timeout_secs",      Int(1, 300),      10,       "seconds one webhook attempt may take, connecting and answering"),
    _S("server.idempotency_window_secs",   Int(1),           3600,     "seconds the answer to a request with an Idempotency-Key is kept for its retries"),
    _S("server.idempotency_max_keys",      Int(1),           10000,    "Idempotency-Keys remembered at once; past it the oldest kept answer is forgotten"),
    _S("server.idempotency_max_answer_bytes", Int(1),        1024 * 1024, "largest answer kept for an Idempotency-Key (a retry of a larger one gets 409, not a second run)"),
    _S("server.idempotency_max_stored_bytes", Int(1),        64 * 1024 * 1024, "all answers kept for Idempotency-Keys together; past it the oldest are forgotten"),
    _S("server.shutdown_grace_secs",       COUNT,            30,       "seconds running requests get to finish on shutdown"),
    _S("server.rate_limit_enabled",        BOOL,             False,    "limit requests per client IP"),
    _S("server.rate_limit_rps",            Positive(),       10.0,     "requests per second per client IP"),
    _S("server.rate_limit_burst",          Int(1),           20,       "requests a client IP may send at once"),
    _S("server.rate_limit_max_clients",    Int(1),           100000,   "clients with a bucket of their own; beyond, new clients share one"),
    _S("server.rate_limit_fail_open",      BOOL,             False,    "while server.store cannot be reached, admit requests unlimited (true) instead of refusing them with 503 (false)"),
    _S("server.store",                     StoreURL(),       "",       "state shared by several clinvk nodes (empty = none: each process keeps its own); redis://[user:password@]host:port/db or rediss:// (TLS). Holds the sessions, the rate-limit buckets, the durable jobs, the Idempotency-Keys and where parked client tool calls wait", secret=True),
    _S("server.store_key_prefix",          STR,              "clinvk:", "prefix of every key clinvk writes in server.store (several deployments can share one Redis)"),
    _S("server.store_ca_file",             STR,              "",       "PEM file of the certificate authorities a rediss:// store is checked against (empty = the system's)"),
    _S("server.forward_host",              STR,              "",       "with server.store: the host name or IP the other nodes reach this one on (at its port) to hand it the tool results of its parked runs (empty = the address it binds; its host name when it binds every address)"),
    _S("server.worker_name",               STR,              "",       "with server.store: the name a session records for the machine whose CLI ran its turns, where the CLI's transcript is (empty = the host name); later turns go to a worker of that name"),
    _S("server.shared_cli_homes",          BOOL,             False,    "with server.store: every worker sees the same CLI homes (transcripts), so a session's later turns may run on any worker, not only on the one that ran it (and the jobs queued for a worker that is gone move to their backends' queue instead of failing)"),
    _S("server.trusted_proxies",           NetworkList(),    (),       "proxies whose X-Forwarded-For is believed (IPs or CIDRs)"),
    _S("server.max_request_body_bytes",    Int(1),           10 * 1024 * 1024, "largest request body accepted"),
    _S("server.cors_allowed_origins",      STR_LIST,         (),       "browser origins allowed to call the API (empty = none)"),
    _S("server.cors_allow_credentials",    BOOL,             False,    "CORS responses allow credentials"),
    _S("server.cors_max_age",              COUNT,            300,      "seconds a browser may cache a CORS preflight"),
    _S("server.allowed_workdir_prefixes",  STR_LIST,         (),       "a workdir must be under one of these (empty = anywhere not blocked)"),
    _S("server.blocked_workdir_prefixes",  STR_LIST,         ("/etc", "/proc", "/sys", "/dev", "/boot", "/root"), "a workdir must not be under any of these, nor contain one"),
    _S("server.default_workdir",           STR,              "",       "absolute directory a request without workdir runs in (empty = the server's current directory); checked like any workdir"),
    _S("server.allowed_hosts",             STR_LIST,         (),       "extra Host header names accepted on a loopback bind"),
    _S("server.allow_dangerous_modes",     BOOL,             False,    "requests may ask for approval_mode none / sandbox_mode full"),
    _S("server.allow_project_config",      BOOL,             False,    "server and MCP runs load the configuration a workdir holds (settings, hooks, MCP servers, .env)"),
    _S("server.metrics_enabled",           BOOL,             False,    "serve Prometheus metrics at /metrics"),
    _S("server.metrics_public",            BOOL,             False,    "/metrics needs no API key"),
    _S("server.api_keys",                  STR_LIST,         (),       "keys clients must send (empty = no authentication)", secret=True),
    _S("server.admin_api_keys",            STR_LIST,         (),       "keys accepted like server.api_keys that may also use every session", secret=True),
    _S("server.api_keys_file",             STR,              "",       "file with more API keys, one per line"),
    _S("server.api_keys_gopass_path",      STR,              "",       "gopass entry holding more API keys, comma-separated"),
    _S("server.log_format",                Choice("text", "json"), "text", "server log line format"),
    _S("server.sse_keepalive_secs",        COUNT,            15,       "seconds between keep-alive comments on idle streams (0 = none)"),
)

# Names the Go clinvoker read; the derived name wins when both are set.
ENV_ALIASES = {
    "CLINVK_BACKEND": "default_backend",
    "CLINVK_API_KEYS": "server.api_keys",
    "CLINVK_ADMIN_API_KEYS": "server.admin_api_keys",
    "CLINVK_API_KEYS_GOPASS_PATH": "server.api_keys_gopass_path",
    "CLINVK_CLAUDE_MODEL": "backends.claude.model",
    "CLINVK_CODEX_MODEL": "backends.codex.model",
    "CLINVK_GEMINI_MODEL": "backends.gemini.model",
}

_BY_KEY = {s.key: s for s in SETTINGS}
_SECTIONS = {key.rsplit(".", i)[0] for key in _BY_KEY for i in range(1, key.count(".") + 1)}


# --- public helpers ------------------------------------------------------------------------

def setting(key: str) -> Setting:
    """The table row for ``key``; unknown keys raise ``ConfigError`` with a suggestion."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise ConfigError("unknown setting '%s'%s" % (key, _suggestion(key))) from None


def parse_value(key: str, raw: str) -> Any:
    """Convert the text ``raw`` (an env var, ``config set``) to ``key``'s type, or raise."""
    return _convert(setting(key), raw, "")


def home_dir(env: Optional[Mapping[str, str]] = None) -> str:
    """clinvk's own directory: ``$CLINVK_HOME``, else ``~/.clinvk`` (absolute)."""
    env = os.environ if env is None else env
    if env.get("CLINVK_HOME"):
        return os.path.abspath(os.path.expanduser(env["CLINVK_HOME"]))
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(os.path.abspath(home), ".clinvk")


def config_path(path: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> str:
    """The config file in use: ``path`` (--config), else ``$CLINVK_CONFIG``, else the default."""
    env = os.environ if env is None else env
    chosen = path or env.get("CLINVK_CONFIG")
    if chosen:
        return os.path.abspath(os.path.expanduser(chosen))
    return os.path.join(home_dir(env), "config.yaml")


class Config:
    """The settings in effect, each with where it came from."""

    def __init__(self, values: Dict[str, Any], sources: Dict[str, str], path: str, home: str,
                 loaded: bool) -> None:
        self._values = values
        self._sources = sources
        self.path = path          # the config file in use (it may not exist)
        self.home = home          # the CLINVK_HOME directory
        self.loaded = loaded      # True when ``path`` existed and was read

    def get(self, key: str) -> Any:
        """The value of ``key`` (lists are copies)."""
        value = self._values[setting(key).key]
        return list(value) if isinstance(value, list) else value

    def source(self, key: str) -> str:
        """Where the value came from: "default", "file", "env" or "flag"."""
        return self._sources[setting(key).key]

    def backend_enabled(self, name: str) -> bool:
        """False only when ``backends.<name>.enabled`` is false."""
        return self.get("backends.%s.enabled" % name) is not False

    def backend_settings(self, name: str) -> Dict[str, Any]:
        """The ``backends.<name>.*`` settings as {field: value}."""
        if name not in NAMES:
            raise ConfigError("unknown backend '%s': expected one of %s"
                              % (name, ", ".join(NAMES)))
        return {field: self.get("backends.%s.%s" % (name, field))
                for field, _, _, _ in _BACKEND_SETTINGS}

    def rows(self) -> List[Tuple[str, Any, str, str]]:
        """(key, value, source, meaning) for every setting in table order; secrets masked."""
        return [(s.key, _mask(self._values[s.key]) if s.secret else self.get(s.key),
                 self._sources[s.key], s.meaning) for s in SETTINGS]

    def to_dict(self) -> Dict[str, Any]:
        """All values as nested dicts (``{"server": {"port": 8080, ...}, ...}``), unmasked."""
        tree = {}  # type: Dict[str, Any]
        for s in SETTINGS:
            *parents, leaf = s.key.split(".")
            node = tree
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = self.get(s.key)
        return tree


def load(path: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
         flags: Optional[Mapping[str, Any]] = None) -> Config:
    """Read the settings: ``flags`` ({key: value}, None = not given) > ``env`` > file > defaults.

    A file named by ``path`` or ``$CLINVK_CONFIG`` must exist; the default one may be absent.
    Raises ``ConfigError`` for the first bad value or unknown key.
    """
    env = os.environ if env is None else env
    file_path = config_path(path, env)
    values = {s.key: s.default_value() for s in SETTINGS}
    sources = {s.key: "default" for s in SETTINGS}
    named_by = "--config" if path else "CLINVK_CONFIG" if env.get("CLINVK_CONFIG") else ""
    text = _read_file(file_path, named_by)
    layers = [("file", _values_from_file(text, file_path) if text is not None else {}),
              ("env", _values_from_env(env)),
              ("flag", _values_from_flags(flags or {}))]
    for source, layer in layers:
        for key, value in layer.items():
            values[key] = value
            sources[key] = source
    return Config(values, sources, file_path, home_dir(env), text is not None)


def set_in_file(path: str, key: str, raw_value: str) -> None:
    """Write ``key`` = ``raw_value`` (parsed like an env var) into the config file at ``path``.

    Other lines and comments stay as they were; the file and its directory are created if
    missing. The write is atomic: a crash leaves the old file or the new one, never half.
    """
    value = parse_value(key, raw_value)
    path = os.path.realpath(os.path.expanduser(path))   # keep a symlinked config a symlink
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        text, mode = "", 0o600       # the file may come to hold API keys
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("config %s: cannot read it: %s" % (path, e)) from None
    from . import miniyaml, yamledit  # lazy: start-up (only a config file needs them)
    try:
        new_text = yamledit.set_key(text, key, value, filename=path)
    except miniyaml.YAMLError as e:
        raise ConfigError("config %s; fix the file, then set %s again" % (e, key)) from None
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_atomically(path, new_text.encode("utf-8"), mode)
    except OSError as e:
        raise ConfigError("config %s: cannot write it: %s" % (path, e.strerror or e)) from None


# --- loading -------------------------------------------------------------------------------

def _read_file(path: str, named_by: str) -> Optional[str]:
    """The file's text; None when the default file (``named_by`` "") does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        if named_by:
            raise ConfigError("config file not found: %s (named by %s)" % (path, named_by)) \
                from None
        return None
    except UnicodeDecodeError:
        raise ConfigError("config %s: not UTF-8 text" % path) from None
    except OSError as e:
        raise ConfigError("config %s: cannot read it: %s" % (path, e.strerror or e)) from None


def _values_from_file(text: str, path: str) -> Dict[str, Any]:
    from . import miniyaml  # lazy: start-up (only a config file needs it)
    try:
        data, lines = miniyaml.loads_with_lines(text, filename=path)
    except miniyaml.YAMLError as e:
        raise ConfigError("config %s" % e) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config %s line %d: expected settings as 'key: value' lines"
                          % (path, lines[""]))
    found = {}  # type: Dict[str, Any]

    def walk(mapping: Dict[str, Any], prefix: str) -> None:
        for name, value in mapping.items():
            key = prefix + name
            where = "config %s line %d" % (path, lines[key])
            if key in _BY_KEY:
                if value is not None:       # "key:" with no value keeps the default
                    found[key] = _convert(_BY_KEY[key], value, where)
            elif key in _SECTIONS:
                if isinstance(value, dict):
                    walk(value, key + ".")
                elif value is not None:
                    raise ConfigError("%s: %s: expected a section of settings ('%s:' followed "
                                      "by indented 'key: value' lines)" % (where, key, key))
            else:
                raise ConfigError("%s: unknown key '%s'%s" % (where, key, _suggestion(key)))

    walk(data, "")
    return found


def _values_from_env(env: Mapping[str, str]) -> Dict[str, Any]:
    found = {}  # type: Dict[str, Any]
    names = [(alias, key) for alias, key in ENV_ALIASES.items()]
    names += [(s.env_var, s.key) for s in SETTINGS]     # later entries win
    for name, key in names:
        raw = env.get(name)
        if raw:           # an empty variable counts as unset
            found[key] = _convert(_BY_KEY[key], raw, "environment variable %s" % name)
    return found


def _values_from_flags(flags: Mapping[str, Any]) -> Dict[str, Any]:
    return {key: _convert(setting(key), value, "command line")
            for key, value in flags.items() if value is not None}


def _convert(row: Setting, value: Any, where: str) -> Any:
    """``value`` as ``row``'s type; text is parsed, anything else checked."""
    try:
        if isinstance(value, str):
            return row.kind.parse_text(value)
        return row.kind.check(value)
    except Invalid as e:
        prefix = where + ": " if where else ""
        raise ConfigError("%s%s: expected %s, got %s" % (prefix, row.key, e, _describe(value))) \
            from None


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a section"
    from . import yamledit  # lazy: start-up (only a bad value needs it)
    return yamledit.dumps_inline(value)


def _suggestion(key: str) -> str:
    names = sorted(_BY_KEY) + sorted(_SECTIONS)
    folded = [n for n in names if n.lower() == key.lower()]
    same_depth = [n for n in names if n.count(".") == key.count(".")]
    import difflib  # lazy: start-up (only a mistyped key needs it)
    close = folded or difflib.get_close_matches(key, same_depth, n=1, cutoff=0.8)
    if not close:
        leaf = key.rsplit(".", 1)[-1]
        close = [n for n in names if n.endswith("." + leaf)]
    return "; did you mean '%s'?" % close[0] if close else ""


def _mask(value: Any) -> Any:
    if isinstance(value, list):
        return ["****"] * len(value)
    return "****" if value else value

