"""``clinvk serve``: the composition root of the HTTP server and its lifecycle.

``build_app`` is the one place that joins the parts: the App, the guards in front of every
route, the durable jobs, and the API styles (native, OpenAI, Responses, Anthropic), each a
module with a ``register(app)`` that adds its routes and its error style. Adding an API style is one
module plus one line in ``API_STYLES``. ``serve_command`` then binds, announces, serves
until SIGTERM/SIGINT and drains. Only the command line imports this module.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import __version__, config, runner
from ..argparser import Parser, UsageError
from ..backends import probe
from ..job_store_redis import RedisJobStore
from ..sessions import SessionStore
from ..shared_store import open_job_store, open_session_store, open_shared_store
from . import (anthropic, console, guards, jobs, native, openai, responses, runs_api,
               toolcalls)
from .accesslog import AccessLog
from .idempotency_shared import SharedIdempotencyKeys
from .app import App
from .job_runner import JobRunner
from .job_runner_shared import SharedJobRunner
from .listener import HttpServer, make_server

# The API styles served, in registration order (the order of /openapi.json).
API_STYLES = (native, jobs, runs_api, openai, responses, anthropic, console)


def build_app(cfg: config.Config, store: Optional[SessionStore] = None,
              log: Optional[AccessLog] = None, start_jobs: bool = True) -> App:
    """The App ``clinvk serve`` runs: guards installed (right after the request id step),
    every API style's routes registered, durable jobs accepted and (unless not
    ``start_jobs``: ``serve_command`` starts them once it has announced itself) run.
    ConfigError when a key source or the CORS settings cannot be used."""
    shared = open_shared_store(cfg)
    app = App(cfg, store if store is not None else open_session_store(cfg, shared), log)
    app.shared_store = shared
    if app.shared_store is not None:
        app.idempotency = SharedIdempotencyKeys.from_store(app.shared_store, cfg)
    app.guards = guards.install(app)
    app.jobs = job_runner(app)
    if shared is not None:
        from .cluster_metrics import install  # lazy: only a node on a shared store needs it
        app.shared_usage = install(app)
    # Runs parked on a client tool call until the client's next request (toolcalls).
    app.tool_bridge = toolcalls.Bridge(cfg.get("server.tool_result_timeout_secs")
                                       or cfg.get("server.request_timeout_secs") or 0)
    if app.metrics is not None:
        app.metrics.count_parked_runs(app.tool_bridge.runs.parked_count)
    for api in API_STYLES:
        api.register(app)
    app.jobs.open()
    if start_jobs:
        app.jobs.start()
    return app


def job_runner(app: App) -> JobRunner:
    """The jobs of this process: on its own disk, or on the shared store when there is one."""
    store = open_job_store(app.cfg, app.shared_store)
    if isinstance(store, RedisJobStore):
        return SharedJobRunner(app, store, app.cfg.get("server.job_visibility_timeout_secs"),
                               pulls=app.cfg.get("server.role") != "api",
                               retries=app.cfg.get("server.job_retries"))
    return JobRunner(app, store)


def serve_command(argv: List[str]) -> int:
    """``clinvk serve [--host H] [--port P] [--role all|api] [--store URL] [--config PATH]
    [--log-format text|json]``:
    serve until SIGTERM/SIGINT, then drain; returns the exit code."""
    # --host goes into the config: the Host check needs to know whether the bind is loopback.
    started, code = _start(argument_parser(), argv, lambda args: {
        "server.log_format": args.log_format, "server.host": args.host or None,
        "server.role": args.role, "server.store": args.store})
    if started is None:
        return code
    args, app = started
    cfg = app.cfg
    host = cfg.get("server.host")
    port = cfg.get("server.port") if args.port is None else args.port
    if not app.guards.keys and not args.allow_unauthenticated and \
            not guards.is_loopback_host(host):
        sys.stderr.write(
            "clinvk: refusing to listen on %r without API keys: anyone who can reach it "
            "could run agents on this machine. Set CLINVK_API_KEYS=KEY1,KEY2 (or "
            "server.api_keys_file / server.api_keys_gopass_path), or pass "
            "--allow-unauthenticated if something in front of the server authenticates "
            "clients.\n" % host)
        return 2
    try:
        server = make_server(app, host, port)
    except OSError as exc:
        sys.stderr.write("clinvk: cannot listen on %s:%d: %s%s\n"
                         % (host, port, exc.strerror or exc, _listen_hint(exc, port)))
        return 1
    app.tool_bridge.listen_at(cfg.home, host, server.server_address[1], app.log,
                              app.shared_store, cfg.get("server.forward_host"))
    return run_until_signalled(app, server)


def worker_command(argv: List[str]) -> int:
    """``clinvk worker [--store URL] [--config PATH] [--log-format text|json]``: run the jobs
    of a shared store until SIGTERM/SIGINT, then drain; returns the exit code."""
    started, code = _start(worker_parser(), argv, lambda args: {
        "server.log_format": args.log_format, "server.store": args.store}, need_store=True)
    return code if started is None else run_until_signalled(started[1], None)


def _start(parser: argparse.ArgumentParser, argv: List[str],
           flags_of: Callable[[Any], Dict[str, Any]], need_store: bool = False
           ) -> Tuple[Optional[Tuple[Any, App]], int]:
    """((arguments, app), 0) for a command line, or (None, exit code) when it ends here:
    --help, a bad flag or a configuration that cannot be used (named on stderr)."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:           # --help
        return None, int(exc.code or 0)
    except UsageError as exc:
        sys.stderr.write("clinvk: %s\n" % exc)
        return None, 2
    try:
        cfg = config.load(args.config, flags=flags_of(args))
        if need_store and not cfg.get("server.store"):
            raise config.ConfigError("clinvk worker runs the jobs of a shared store: give "
                                     "--store redis://HOST:6379/0 (or set server.store)")
        if cfg.get("server.role") == "api" and not cfg.get("server.store"):
            raise config.ConfigError("server.role: api hands every run to the workers of a "
                                     "shared store: give --store redis://HOST:6379/0 (or "
                                     "set server.store)")
        return (args, build_app(cfg, start_jobs=False)), 0
    except config.ConfigError as exc:
        sys.stderr.write("clinvk: %s\n" % exc)
        return None, 2


def worker_parser() -> argparse.ArgumentParser:
    """The parser of ``clinvk worker`` (shell completion reads it too)."""
    parser = Parser(prog="clinvk worker",
                    description="Run the durable jobs queued on a shared store (Redis) by "
                                "any clinvk serve using it, where the agent CLIs are.")
    parser.add_argument("--store", metavar="URL", help="redis://[user:password@]host:port/db "
                        "or rediss:// (default: server.store)")
    parser.add_argument("--config", metavar="PATH", help="config file")
    parser.add_argument("--log-format", choices=("text", "json"),
                        help="log format on stderr (default: server.log_format)")
    return parser


def _listen_hint(exc: OSError, port: int) -> str:
    """What to do when the port cannot be bound."""
    if exc.errno == errno.EADDRINUSE:
        return ("; another program (maybe another clinvk serve) uses port %d: choose another "
                "with --port (e.g. --port %d, or --port 0 for any free port) or server.port"
                % (port, port + 1 if 0 < port < 65535 else 8081))
    if exc.errno == errno.EACCES and 0 < port < 1024:
        return "; ports below 1024 need privileges: choose one from 1024 up with --port"
    return ""


def argument_parser() -> argparse.ArgumentParser:
    """The parser of ``clinvk serve`` (shell completion reads it too)."""
    parser = Parser(
        prog="clinvk serve",
        description="HTTP server: the native REST API (/api/v1), durable jobs, the OpenAI "
                    "(Chat Completions, Responses) and Anthropic-compatible APIs with client "
                    "tools, /health, /metrics, /openapi.json, /docs, and the web console at / "
                    "(open it in a browser).")
    parser.add_argument("--host", help="address to bind (default: server.host, 127.0.0.1)")
    parser.add_argument("--port", "-p", type=_port, help="port (default: server.port, 8080; "
                        "0 = any free port)")
    parser.add_argument("--config", metavar="PATH", help="config file")
    parser.add_argument("--log-format", choices=("text", "json"),
                        help="access log format on stderr (default: server.log_format)")
    parser.add_argument("--role", choices=("all", "api"),
                        help="with a store: api = run no backend, hand every run to the "
                             "workers (default: server.role, all)")
    parser.add_argument("--store", metavar="URL", help="redis://[user:password@]host:port/db "
                        "or rediss:// shared with other nodes (default: server.store)")
    parser.add_argument("--allow-unauthenticated", action="store_true",
                        help="serve a non-loopback address without API keys (only behind "
                             "something that authenticates clients itself)")
    return parser


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError("expected a port number from 0 to 65535, got %r" % text)
    return int(text)


def announce(app: App, server: HttpServer) -> None:
    """The start-up line: where the server listens, its docs, and which backends it can run."""
    url = server.url
    installed = probe.availability(ttl=0)
    have = [n for n, ok in installed.items() if ok]
    missing = [n for n, ok in installed.items() if not ok]
    keys = app.guards.keys
    auth = "on (%d key%s)" % (len(keys), "" if len(keys) == 1 else "s") if keys else \
        "off (no API keys)"
    if app.log.json:
        app.log.info("listening", url=url, docs=url + "/docs", console=url + "/",
                     version=__version__, backends=installed, auth="on" if keys else "off",
                     api_keys=len(keys))
    else:
        app.log.info("clinvk %s listening on %s (console: %s/, docs: %s/docs); backends "
                     "installed: %s%s; auth: %s"
                     % (__version__, url, url, url, ", ".join(have) or "none",
                        "; not installed: " + ", ".join(missing) if missing else "", auth))


def announce_worker(app: App) -> None:
    """The start-up line of a worker: its runner id, its store, its backends and capacity."""
    have = [n for n, ok in probe.availability(ttl=0).items() if ok]
    store = app.shared_store.url.redacted()
    capacity = app.cfg.get("server.max_concurrent_runs")
    if app.log.json:
        app.log.info("worker", runner=app.jobs.lease.id, store=store, backends=have,
                     capacity=capacity, version=__version__)
    else:
        app.log.info("clinvk %s worker %s pulling jobs from %s; backends installed: %s; "
                     "capacity: %d runs" % (__version__, app.jobs.lease.id, store,
                                            ", ".join(have) or "none", capacity))


def run_until_signalled(app: App, server: Optional[HttpServer]) -> int:
    """Serve until SIGTERM or SIGINT (without ``server``: run jobs only, as a worker). Then:
    stop accepting, give in-flight requests ``server.shutdown_grace_secs`` to finish, cancel
    the backends still running (their requests answer at once), and return 0. A second
    signal skips the grace period."""
    signals = []

    def on_signal(signum: int, frame: Any) -> None:
        signals.append(signum)            # only a list append: safe at any point of the loop

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if server is not None:
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                             name="clinvk-accept", daemon=True).start()
            announce(app, server)
        else:
            announce_worker(app)
        # After the start-up line: what the jobs a dead server left became is logged next.
        app.jobs.start()
        while not signals:
            time.sleep(0.1)
        drain(app, server, lambda: len(signals) > 1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def drain(app: App, server: Optional[HttpServer],
          hurry: Callable[[], bool] = lambda: False) -> None:
    """Stop accepting and start no queued job, wait for in-flight requests and running jobs
    (up to the grace period, or until ``hurry()``), then cancel every backend still running
    (the jobs end interrupted; queued ones stay queued for the next server) and wait for the
    answers."""
    grace = app.cfg.get("server.shutdown_grace_secs")
    # Close the listener first: a connection nginx opens meanwhile is refused (and retried on
    # another instance), not accepted only to be answered 503.
    if server is not None:
        server.shutdown()
        server.server_close()
    app.draining = True
    app.jobs.stop()
    app.tool_bridge.drain()         # a parked run's next request would be refused now
    app.log.info("shutting down: %d request(s) in flight, up to %ds to finish"
                 % (app.in_flight, grace))
    deadline = time.monotonic() + grace
    if not (app.wait_idle(grace, hurry) and
            app.jobs.wait_idle(deadline - time.monotonic(), hurry)):
        cancelled = app.cancel_all()
        interrupted = app.jobs.interrupt_all()
        app.log.info("grace period over: cancelled %d request(s) and %d job(s) still running"
                     % (cancelled, interrupted))
        app.wait_idle(runner.DEFAULT_GRACE + 3.0)
        app.jobs.wait_idle(runner.DEFAULT_GRACE + 3.0)
    app.tool_bridge.close()
    # Webhooks being sent get a moment; those still pending are resumed by the next server.
    app.jobs.close(runner.DEFAULT_GRACE)
    # Nothing this process started may outlive it (a run that slipped past the cancel).
    runner.kill_all()
    if app.shared_usage is not None:
        app.shared_usage.close()    # the last counts go to the store
    app.log.info("stopped")
