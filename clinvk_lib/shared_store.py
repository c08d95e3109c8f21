"""The store several clinvk nodes share (``server.store``): a Redis client built from the
settings, or None when the setting is empty and each process keeps its state to itself; and
the job, session and stored-response stores on it, or on ``CLINVK_HOME`` without it."""

from __future__ import annotations

import socket
import ssl
from typing import Any, Dict, Optional

from .config import Config, ConfigError
from .job_queue_redis import list_runners
from .job_store import JobStore
from .job_store_redis import RedisJobStore
from .redisclient import Client, RedisError
from .sessions import SessionStore
from .sessions_redis import RedisSessionStore


def open_shared_store(cfg: Config) -> Optional[Client]:
    """A client for ``server.store`` under ``server.store_key_prefix``, or None when no store
    is set. Nothing is connected yet: the first command connects. ConfigError when
    ``server.store_ca_file`` cannot be read."""
    url = cfg.get("server.store")
    if not url:
        return None
    return Client(url, prefix=cfg.get("server.store_key_prefix"),
                  ssl_context=_ssl_context(cfg.get("server.store_ca_file")))


def _ssl_context(ca_file: str) -> Optional[ssl.SSLContext]:
    if not ca_file:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("server.store_ca_file: cannot read certificate authorities from %r "
                          "(%s); give a PEM file" % (ca_file, exc)) from None


def open_job_store(cfg: Config, shared: Optional[Client]) -> JobStore:
    """The durable jobs: in ``shared`` (a client from ``open_shared_store``) when given, else
    under ``CLINVK_HOME``."""
    events_max = cfg.get("server.job_events_max_bytes")
    if shared is None:
        return JobStore(cfg.home, events_max)
    return RedisJobStore(shared, events_max, cfg.get("server.job_visibility_timeout_secs"))


def open_session_store(cfg: Config, shared: Optional[Client]) -> SessionStore:
    """The sessions: in ``shared`` (a client from ``open_shared_store``) when given, each turn
    recording this machine's ``worker_name``; else under ``CLINVK_HOME``."""
    if shared is None:
        return SessionStore(cfg.home)
    return RedisSessionStore(shared, cfg.home, worker_name(cfg),
                             bool(cfg.get("server.shared_cli_homes")))


def open_response_store(cfg: Config, shared: Optional[Client], home: str) -> Any:
    """The Responses API's stored responses (a ``server.response_store.ResponseStore``),
    bounded by ``server.responses_max_stored`` and ``server.responses_retention_days``: in
    ``shared`` when given, else under ``home`` (the server's CLINVK_HOME)."""
    # lazy: the command line opens this module's other stores and needs no server module.
    from .server.response_store import ResponseStore
    from .server.response_store_redis import RedisResponseStore
    max_stored = cfg.get("server.responses_max_stored")
    max_age = cfg.get("server.responses_retention_days") * 86400.0
    if shared is None:
        return ResponseStore(home, max_stored, max_age)
    return RedisResponseStore(shared, max_stored, max_age)


def worker_name(cfg: Config) -> str:
    """The name of this machine's CLI homes, as sessions record it: ``server.worker_name``,
    else the host name."""
    return cfg.get("server.worker_name") or socket.gethostname()


def store_health(client: Client) -> Dict[str, Any]:
    """What /health tells of the shared store: its URL (no password), whether it answers (and
    why not), and the processes on it with what each advertises."""
    try:
        runners = list_runners(client)
    except RedisError as exc:
        return {"url": client.url.redacted(), "available": False, "error": str(exc),
                "runners": []}
    return {"url": client.url.redacted(), "available": True, "error": "", "runners": runners}
