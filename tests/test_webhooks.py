"""Webhook delivery for finished jobs (clinvk_lib/server/webhooks.py): the URL policy, the
signed POST, retries with back-off under one delivery id, recorded state, bounds, shutdown.

Every receiver is an ``http.server`` (or a raw socket) on 127.0.0.1 written here."""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import hmac
import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Tuple

import pytest

from clinvk_lib import __version__, config
from clinvk_lib.cli.main import main
from clinvk_lib.server.accesslog import AccessLog
from clinvk_lib.server.errors import ApiError
from clinvk_lib.server.webhooks import Deliveries, check_url, retry_delay

SECRET = "whsec-7f3a9c-never-in-a-log"
JOB = {"id": "job_0123456789abcdef01234567", "kind": "prompt", "status": "succeeded",
       "result": {"output": "h\u00e9llo"}, "metadata": {"ticket": "OPS-12"}}
WAIT = 20.0   # generous: only to turn a hang into a failure


def make_cfg(tmp_path, **settings: Any) -> config.Config:
    values = {"server.webhook_allowed_hosts": ["127.0.0.1"], "server.webhook_secret": SECRET,
              "server.webhook_max_attempts": 3, "server.webhook_timeout_secs": 2}
    values.update({k.replace("__", "."): v for k, v in settings.items()})
    return config.load(env={"CLINVK_HOME": str(tmp_path)}, flags=values)


class FastDeliveries(Deliveries):
    """The real class with a back-off short enough for a test."""
    first_retry_secs = 0.05
    max_retry_secs = 0.2


class Recorder:
    """The ``record`` callback: every (job_id, state) in order, and a way to wait for one."""

    def __init__(self) -> None:
        self.calls: List[Tuple[str, Dict[str, Any]]] = []
        self._cond = threading.Condition()

    def __call__(self, job_id: str, state: Dict[str, Any]) -> None:
        with self._cond:
            self.calls.append((job_id, dict(state)))
            self._cond.notify_all()

    def states(self) -> List[Dict[str, Any]]:
        with self._cond:
            return [state for _, state in self.calls]

    def wait_for(self, done: Callable[[List[Dict[str, Any]]], bool]) -> List[Dict[str, Any]]:
        deadline = time.monotonic() + WAIT
        with self._cond:
            while not done([s for _, s in self.calls]):
                left = deadline - time.monotonic()
                assert left > 0, "timed out waiting; recorded: %r" % self.calls
                self._cond.wait(left)
            return [s for _, s in self.calls]

    def wait_final(self) -> List[Dict[str, Any]]:
        return self.wait_for(lambda s: bool(s) and s[-1]["state"] in ("delivered", "failed"))


class Receiver:
    """A webhook receiver on 127.0.0.1: answers the statuses in ``script`` in turn (the last
    one from then on), after ``delay`` seconds; keeps (path, headers, body) of every POST."""

    def __init__(self, script: List[int], delay: float = 0.0,
                 location: str = "", retry_after: str = "") -> None:
        self.script = list(script)
        self.requests: List[Tuple[str, Dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, dict(self.headers), body))
                time.sleep(delay)
                status = receiver.script.pop(0) if len(receiver.script) > 1 \
                    else receiver.script[0]
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                if retry_after and status >= 300:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d/hook?token=t0k3n" % self.port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made: List[Receiver] = []

    def make(script: List[int], **kw: Any) -> Receiver:
        made.append(Receiver(script, **kw))
        return made[-1]
    yield make
    for r in made:
        r.close()


@pytest.fixture
def log_stream():
    return io.StringIO()


def deliveries(tmp_path, log_stream, cls=FastDeliveries, fmt="text", **settings: Any):
    recorder = Recorder()
    d = cls(make_cfg(tmp_path, **settings), AccessLog(fmt, stream=log_stream), recorder)
    return d, recorder


def signature_is_valid(headers: Dict[str, str], body: bytes, secret: str = SECRET) -> bool:
    expected = b"sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(expected, headers.get("X-Clinvk-Signature", "").encode())


# --- the URL policy -------------------------------------------------------------------------

def refusal(url: Any, cfg: config.Config) -> ApiError:
    with pytest.raises(ApiError) as caught:
        check_url(url, cfg)
    assert caught.value.status == 400 and caught.value.field == "webhook_url"
    return caught.value


def test_host_not_on_the_allowlist_is_a_400_naming_webhook_url(tmp_path):
    err = refusal("https://elsewhere.example.net/hook", make_cfg(tmp_path))
    assert "elsewhere.example.net" in err.message
    assert "server.webhook_allowed_hosts" in err.message
    assert err.message.startswith("webhook_url:")


def test_empty_allowlist_refuses_every_webhook_naming_the_setting(tmp_path):
    cfg = make_cfg(tmp_path, server__webhook_allowed_hosts=[])
    assert "server.webhook_allowed_hosts" in refusal("http://127.0.0.1/hook", cfg).message


def test_empty_secret_refuses_webhooks_rather_than_sending_them_unsigned(tmp_path):
    cfg = make_cfg(tmp_path, server__webhook_secret="")
    assert "server.webhook_secret" in refusal("http://127.0.0.1/hook", cfg).message


@pytest.mark.parametrize("url", [
    "http://user:pw@127.0.0.1/hook",
    "http://127.0.0.1@evil.example/hook",
    "http://@127.0.0.1/hook",
])
def test_url_with_user_info_is_refused(tmp_path, url):
    assert "user info" in refusal(url, make_cfg(tmp_path)).message


@pytest.mark.parametrize("url", [
    "http://evil-example.com/", "http://a.example.com/", "http://example.com.evil.net/",
    "http://example.com./", "http://xexample.com/", "http://example.co/",
    "http://127.0.0.2/", "http://[::1]/",
])
def test_host_must_match_an_entry_exactly_no_suffix_tricks(tmp_path, url):
    cfg = make_cfg(tmp_path, server__webhook_allowed_hosts=["example.com", "127.0.0.1"])
    refusal(url, cfg)


def test_host_match_ignores_case(tmp_path):
    cfg = make_cfg(tmp_path, server__webhook_allowed_hosts=["Hooks.Example.com"])
    check_url("HTTPS://HOOKS.example.COM/x", cfg)


def test_entry_with_a_port_allows_only_that_port(tmp_path):
    cfg = make_cfg(tmp_path, server__webhook_allowed_hosts=["hooks.example.com:8443",
                                                              "secure.example.com:443",
                                                              "[::1]:9000"])
    check_url("https://hooks.example.com:8443/x", cfg)
    check_url("https://secure.example.com/x", cfg)          # 443 is https's own port
    check_url("http://[::1]:9000/x", cfg)
    for url in ("https://hooks.example.com/x", "https://hooks.example.com:8444/x",
                "http://secure.example.com/x", "http://[::1]:9001/x"):
        refusal(url, cfg)


def test_entry_without_a_port_allows_any_port_of_that_host(tmp_path):
    check_url("http://127.0.0.1:9999/hook", make_cfg(tmp_path))


@pytest.mark.parametrize("url", [
    "ftp://127.0.0.1/x", "file:///etc/passwd", "javascript:alert(1)", "//127.0.0.1/x",
    "127.0.0.1/x", "http:///x", "http://127.0.0.1:99999/x", "http://127.0.0.1:x/",
    "http://127.0.0.1/a b", "http://127.0.0.1/\r\nX-Evil: 1", "http://127.0.0.1\\@evil/",
    "http://127.0.0.1/" + "a" * 3000, "http://ex\u00e4mple.com/", "",
])
def test_malformed_or_non_http_urls_are_refused(tmp_path, url):
    refusal(url, make_cfg(tmp_path))


@pytest.mark.parametrize("value", [None, 42, ["http://127.0.0.1/"], {"url": "x"}])
def test_a_webhook_url_that_is_not_a_string_is_refused(tmp_path, value):
    refusal(value, make_cfg(tmp_path))


# --- the schedule ---------------------------------------------------------------------------

def test_default_schedule_retries_first_within_10_seconds_then_doubles_up_to_a_cap():
    delays = [retry_delay(n, Deliveries.first_retry_secs, Deliveries.max_retry_secs)
              for n in range(1, 9)]
    assert 0 < delays[0] <= 10
    assert delays == [5, 10, 20, 40, 80, 160, 300, 300]
    assert [retry_delay(n) for n in range(1, 9)] == delays


def test_real_deliveries_record_the_first_retry_due_within_10_seconds(tmp_path, log_stream,
                                                                     receivers):
    hook = receivers([500])
    d, rec = deliveries(tmp_path, log_stream, cls=Deliveries)
    d.send(JOB["id"], JOB, hook.url)
    first = rec.wait_for(lambda s: any(x["attempt"] == 1 for x in s))[-1]
    d.close(5)
    due = config_time(first["next_attempt_at"]) - config_time(first["at"])
    assert first["state"] == "pending" and 0 < due <= 10


def first_retry_due(tmp_path, log_stream, hook) -> float:
    """Seconds from the first failed attempt to the next one, as recorded."""
    d, rec = deliveries(tmp_path, log_stream, cls=Deliveries)
    d.send(JOB["id"], JOB, hook.url)
    first = rec.wait_for(lambda s: any(x["attempt"] == 1 for x in s))[-1]
    d.close(5)
    assert first["state"] == "pending"
    return config_time(first["next_attempt_at"]) - config_time(first["at"])


def test_retry_after_in_seconds_sets_the_next_attempt(tmp_path, log_stream, receivers):
    assert 36 <= first_retry_due(tmp_path, log_stream, receivers([503], retry_after="37")) \
        <= 37.01


def test_retry_after_as_an_http_date_sets_the_next_attempt(tmp_path, log_stream, receivers):
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert 115 <= first_retry_due(tmp_path, log_stream, receivers([429], retry_after=when)) \
        <= 121


def test_retry_after_is_capped_by_the_longest_back_off(tmp_path, log_stream, receivers):
    due = first_retry_due(tmp_path, log_stream, receivers([503], retry_after="86400"))
    assert Deliveries.max_retry_secs - 1 <= due <= Deliveries.max_retry_secs + 0.01


def test_retry_after_that_is_neither_seconds_nor_a_date_leaves_the_back_off(
        tmp_path, log_stream, receivers):
    due = first_retry_due(tmp_path, log_stream, receivers([503], retry_after="soon-ish"))
    assert Deliveries.first_retry_secs - 1 <= due <= Deliveries.first_retry_secs + 0.01


class PatientDeliveries(Deliveries):
    """A back-off far longer than the test waits: only Retry-After can make it deliver."""
    first_retry_secs = 3600.0
    max_retry_secs = 3600.0


def test_a_receiver_asking_to_retry_at_once_gets_the_delivery_within_its_wait(
        tmp_path, log_stream, receivers):
    hook = receivers([503, 200], retry_after="0")
    d, rec = deliveries(tmp_path, log_stream, cls=PatientDeliveries)
    delivery_id = d.send(JOB["id"], JOB, hook.url)
    states = rec.wait_final()
    d.close(5)
    assert [(s["attempt"], s["state"]) for s in states] == [
        (0, "pending"), (1, "pending"), (2, "delivered")]
    assert [h["X-Clinvk-Delivery"] for _, h, _ in hook.requests] == [delivery_id] * 2


def config_time(stamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 ``...Z`` stamp as ``textutil.rfc3339`` writes."""
    when = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    return when.replace(tzinfo=datetime.timezone.utc).timestamp()


# --- the delivery ---------------------------------------------------------------------------

def test_receiver_verifies_the_signature_and_gets_the_job_object(tmp_path, log_stream,
                                                                receivers):
    hook = receivers([204])
    d, rec = deliveries(tmp_path, log_stream)
    delivery_id = d.send(JOB["id"], JOB, hook.url)
    states = rec.wait_final()
    d.close(5)
    (path, headers, body), = hook.requests
    assert signature_is_valid(headers, body)
    assert not signature_is_valid(headers, body, secret="another secret")
    assert json.loads(body.decode("utf-8")) == JOB
    assert path == "/hook?token=t0k3n"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Clinvk-Event"] == "job.finished"
    assert headers["X-Clinvk-Delivery"] == delivery_id
    assert headers["User-Agent"] == "clinvk/%s" % __version__
    assert states[-1]["state"] == "delivered" and states[-1]["status_code"] == 204
    assert states[-1]["next_attempt_at"] is None


def test_receiver_failing_twice_then_succeeding_sees_one_delivery_id(tmp_path, log_stream,
                                                                    receivers):
    hook = receivers([500, 503, 200])
    d, rec = deliveries(tmp_path, log_stream, server__webhook_max_attempts=5)
    delivery_id = d.send(JOB["id"], JOB, hook.url)
    states = rec.wait_final()
    d.close(5)
    assert [h["X-Clinvk-Delivery"] for _, h, _ in hook.requests] == [delivery_id] * 3
    assert len({b for _, _, b in hook.requests}) == 1     # the same signed bytes each time
    assert [(s["attempt"], s["state"], s.get("status_code")) for s in states] == [
        (0, "pending", None), (1, "pending", 500), (2, "pending", 503), (3, "delivered", 200)]
    assert all(s["delivery_id"] == delivery_id for s in states)


def test_record_is_called_after_each_attempt_then_failed_after_max_attempts(
        tmp_path, log_stream, receivers):
    hook = receivers([500])
    d, rec = deliveries(tmp_path, log_stream, server__webhook_max_attempts=3)
    d.send(JOB["id"], JOB, hook.url)
    states = rec.wait_final()
    time.sleep(0.3)                # a fourth attempt would come within the 0.2 s back-off
    d.close(5)
    assert len(hook.requests) == 3
    assert [(s["attempt"], s["state"]) for s in rec.states()] == [
        (0, "pending"), (1, "pending"), (2, "pending"), (3, "failed")]
    assert all(s["next_attempt_at"] for s in states[:-1])
    assert states[-1]["next_attempt_at"] is None
    assert all(set(s) >= {"delivery_id", "attempt", "at", "next_attempt_at", "state"}
               for s in states)
    assert all(rec_job == JOB["id"] for rec_job, _ in rec.calls)


def test_a_redirect_is_not_followed_and_counts_as_a_failure(tmp_path, log_stream, receivers):
    target = receivers([200])
    hook = receivers([302], location=target.url)
    d, rec = deliveries(tmp_path, log_stream, server__webhook_max_attempts=2)
    d.send(JOB["id"], JOB, hook.url)
    states = rec.wait_final()
    d.close(5)
    assert target.requests == []
    assert len(hook.requests) == 2
    assert states[-1]["state"] == "failed" and states[-1]["status_code"] == 302


def test_a_receiver_slower_than_the_timeout_is_a_failed_attempt(tmp_path, log_stream,
                                                                receivers):
    hook = receivers([200], delay=4.0)
    d, rec = deliveries(tmp_path, log_stream, server__webhook_max_attempts=1,
                        server__webhook_timeout_secs=1)
    d.send(JOB["id"], JOB, hook.url)
    states = rec.wait_final()
    d.close(5)
    assert states[-1]["state"] == "failed"
    assert "timed out" in states[-1]["error"] and "status_code" not in states[-1]


def test_timeout_bounds_the_whole_attempt_not_each_read(tmp_path, log_stream):
    """A receiver answering one byte at a time never lets a single read time out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    stop = threading.Event()

    def dribble() -> None:
        conn, _ = listener.accept()
        with conn:
            while not stop.wait(0.2):
                conn.sendall(b"H")       # a status line that never ends
    threading.Thread(target=dribble, daemon=True).start()
    d, rec = deliveries(tmp_path, log_stream, server__webhook_max_attempts=1,
                        server__webhook_timeout_secs=1)
    try:
        d.send(JOB["id"], JOB, "http://127.0.0.1:%d/" % listener.getsockname()[1])
        states = rec.wait_final()
    finally:
        stop.set()
        d.close(5)
        listener.close()
    assert "timed out" in states[-1]["error"]


def test_a_refused_connection_is_retried_and_recorded(tmp_path, log_stream):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    d, rec = deliveries(tmp_path, log_stream, server__webhook_max_attempts=2)
    d.send(JOB["id"], JOB, "http://127.0.0.1:%d/hook" % port)
    states = rec.wait_final()
    d.close(5)
    assert [s["attempt"] for s in states] == [0, 1, 2]
    assert "refused" in states[-1]["error"].lower() and states[-1]["state"] == "failed"


def test_a_url_the_policy_refuses_at_send_is_recorded_failed_without_a_request(
        tmp_path, log_stream, receivers):
    hook = receivers([200])
    d, rec = deliveries(tmp_path, log_stream, server__webhook_allowed_hosts=["localhost"])
    d.send(JOB["id"], JOB, hook.url)
    states = rec.wait_final()
    d.close(5)
    assert hook.requests == [] and len(states) == 1
    assert "server.webhook_allowed_hosts" in states[0]["error"]


def test_resume_keeps_the_delivery_id_and_counts_on(tmp_path, log_stream, receivers):
    hook = receivers([200])
    d, rec = deliveries(tmp_path, log_stream, server__webhook_max_attempts=5)
    d.resume(JOB["id"], JOB, hook.url, "dlv_0123456789abcdef01234567", 2)
    states = rec.wait_final()
    d.close(5)
    assert hook.requests[0][1]["X-Clinvk-Delivery"] == "dlv_0123456789abcdef01234567"
    assert (states[-1]["attempt"], states[-1]["state"]) == (3, "delivered")


def test_resume_with_no_attempts_left_is_recorded_failed(tmp_path, log_stream, receivers):
    hook = receivers([200])
    d, rec = deliveries(tmp_path, log_stream, server__webhook_max_attempts=3)
    d.resume(JOB["id"], JOB, hook.url, "dlv_0123456789abcdef01234567", 3)
    states = rec.wait_final()
    d.close(5)
    assert hook.requests == [] and states[-1]["state"] == "failed"


def test_a_failing_record_callback_does_not_stop_delivery(tmp_path, log_stream, receivers):
    hook = receivers([500, 200])
    calls = []

    def record(job_id: str, state: Dict[str, Any]) -> None:
        calls.append(state)
        raise OSError("disk full")
    d = FastDeliveries(make_cfg(tmp_path), AccessLog("text", stream=log_stream), record)
    d.send(JOB["id"], JOB, hook.url)
    deadline = time.monotonic() + WAIT
    while not (calls and calls[-1]["state"] == "delivered") and time.monotonic() < deadline:
        time.sleep(0.02)
    d.close(5)
    assert calls[-1]["state"] == "delivered" and "disk full" in log_stream.getvalue()


# --- logs and secrets -----------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_attempt_is_logged_without_the_secret_path_or_query(tmp_path, log_stream,
                                                                  receivers, fmt):
    hook = receivers([500, 500, 500])
    d, rec = deliveries(tmp_path, log_stream, fmt=fmt, server__webhook_max_attempts=3)
    delivery_id = d.send(JOB["id"], JOB, hook.url)
    rec.wait_final()
    d.close(5)
    lines = [line for line in log_stream.getvalue().splitlines() if delivery_id in line]
    assert len(lines) == 3
    text = log_stream.getvalue()
    assert "127.0.0.1:%d" % hook.port in text
    assert SECRET not in text and "t0k3n" not in text and "/hook" not in text
    assert SECRET not in json.dumps(rec.states())


def test_config_show_and_set_never_print_the_webhook_secret(clinvk_home, capsys, monkeypatch):
    assert main(["config", "set", "server.webhook_secret", SECRET]) == 0
    assert main(["config", "show"]) == 0
    assert main(["config", "show", "--output-format", "json"]) == 0
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    assert SECRET in (clinvk_home / "config.yaml").read_text()


# --- bounds and shutdown --------------------------------------------------------------------

class SlowRetries(Deliveries):
    first_retry_secs = 60.0


def test_pending_deliveries_are_bounded_in_number(tmp_path, log_stream, receivers):
    hook = receivers([500])

    class TwoAtMost(SlowRetries):
        max_pending = 2
    d, rec = deliveries(tmp_path, log_stream, cls=TwoAtMost)
    for n in range(3):
        d.send("job_%d" % n, JOB, hook.url)
    refused = [(job, s) for job, s in rec.calls if s["state"] == "failed"]
    assert [job for job, _ in refused] == ["job_2"]
    assert "too many webhook deliveries" in refused[0][1]["error"]
    assert d.pending() == 2
    d.close(5)


def test_pending_deliveries_are_bounded_in_bytes(tmp_path, log_stream, receivers):
    hook = receivers([500])

    class SmallBudget(SlowRetries):
        max_pending_bytes = 10_000
    d, rec = deliveries(tmp_path, log_stream, cls=SmallBudget)
    d.send("job_big", dict(JOB, result={"output": "x" * 20_000}), hook.url)
    d.close(5)
    assert [s["state"] for s in rec.states()] == ["failed"]


def test_a_bounded_worker_pool_serves_many_deliveries(tmp_path, log_stream, receivers):
    hook = receivers([200], delay=0.3)
    d, rec = deliveries(tmp_path, log_stream)
    for n in range(12):
        d.send("job_%d" % n, JOB, hook.url)
    workers = [t for t in threading.enumerate() if t.name.startswith("clinvk-webhook-")]
    rec.wait_for(lambda s: sum(x["state"] == "delivered" for x in s) == 12)
    d.close(5)
    assert 0 < len(workers) <= Deliveries.workers
    assert len(hook.requests) == 12 and d.pending() == 0


def test_close_leaves_pending_deliveries_recorded_pending(tmp_path, log_stream, receivers):
    hook = receivers([500])
    d, rec = deliveries(tmp_path, log_stream, cls=SlowRetries)
    d.send(JOB["id"], JOB, hook.url)
    rec.wait_for(lambda s: any(x["attempt"] == 1 for x in s))
    started = time.monotonic()
    d.close(5)
    assert time.monotonic() - started < 5      # nothing waited for the 60 s retry
    d.send("job_after_close", JOB, hook.url)
    last = {job: s for job, s in rec.calls}
    assert last[JOB["id"]]["state"] == "pending" and last[JOB["id"]]["next_attempt_at"]
    assert last["job_after_close"]["state"] == "pending"
    assert last["job_after_close"]["attempt"] == 0
    assert len(hook.requests) == 1
    assert not [t for t in threading.enumerate() if t.name.startswith("clinvk-webhook-")]



def test_a_job_object_that_is_not_json_is_recorded_failed_not_raised(tmp_path, log_stream,
                                                                     receivers):
    hook = receivers([200])
    d, rec = deliveries(tmp_path, log_stream)
    d.send(JOB["id"], dict(JOB, result={1, 2}), hook.url)
    d.close(5)
    assert [s["state"] for s in rec.states()] == ["failed"] and hook.requests == []
