"""A real browser (headless Chromium) on a page served from another loopback port tries to
make the clinvk server run an agent: a no-cors Blob POST (no Content-Type, no preflight), a
no-cors text POST (text/plain) and a JSON POST (preflighted). None may start a backend."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading

import pytest

from tests.conftest import records
from tests.serverutil import start_server, wait_for  # noqa: F401 (fixtures)

ATTACK_PAGE = """<!doctype html>
<html><body><pre id="out">running</pre><script>
const target = %(target)s;
const body = JSON.stringify({backend: "claude", prompt: "sent by a web page"});
const report = [];
async function attempt(name, init) {
  try {
    const reply = await fetch(target, init);
    report.push(name + " " + reply.type + " " + reply.status);
  } catch (e) {
    report.push(name + " refused " + e.name);
  }
}
(async () => {
  await attempt("no-cors-blob", {method: "POST", mode: "no-cors", body: new Blob([body])});
  await attempt("no-cors-text", {method: "POST", mode: "no-cors", body: body});
  await attempt("json", {method: "POST", headers: {"Content-Type": "application/json"},
                         body: body});
  await fetch("/report", {method: "POST", body: report.join("\\n")});
  document.getElementById("out").textContent = "attempts done\\n" + report.join("\\n");
})();
</script></body></html>
"""


class AttackerSite:
    """The attacker's page on its own loopback port; ``report`` is what the page posted to
    /report once its attempts were over (None until then)."""

    def __init__(self, target: str) -> None:
        page = (ATTACK_PAGE % {"target": json.dumps(target)}).encode("utf-8")
        site = self
        self.report = None
        self.reported = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self._answer(200, page, "text/html; charset=utf-8")

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                site.report = self.rfile.read(length).decode("utf-8", "replace")
                site.reported.set()
                self._answer(204, b"", "text/plain")

            def _answer(self, status, body, ctype):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def require_chromium() -> str:
    path = shutil.which("chromium")
    if not path:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (./test.sh installs it); CI requires this test")
        pytest.skip("chromium not installed (apt-get install chromium, or run ./test.sh)")
    return path


def run_page_in_chromium(chromium: str, url: str, profile) -> str:
    """Load ``url`` headless and return the DOM once the page's fetches are over (virtual
    time does not advance while a fetch is pending)."""
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--user-data-dir=%s" % profile, "--virtual-time-budget=30000",
         "--dump-dom", url],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=120, check=True,
    ).stdout.decode("utf-8", "replace")


def test_page_on_another_loopback_port_cannot_start_a_backend(start_server, record, tmp_path):
    chromium = require_chromium()
    srv = start_server()
    site = AttackerSite(srv.url + "/api/v1/prompt")
    try:
        dom = run_page_in_chromium(chromium, site.url, tmp_path / "profile")
        assert site.reported.wait(10), "the page never finished its attempts: %s" % dom[-500:]
    finally:
        site.close()
    assert "attempts done" in dom
    assert records(record) == [], "a backend ran for the page: %s" % site.report
    assert srv.app.store.count() == 0
    # The browser did reach the server (so the test can fail), and was refused each time:
    # both no-cors POSTs, and the JSON POST's preflight (so the POST itself was never sent).
    lines = srv.app.log.lines
    assert wait_for(lambda: sum("/api/v1/prompt" in line for line in lines) >= 3), lines
    prompt_lines = [line for line in lines if "/api/v1/prompt" in line]
    assert sum("POST /api/v1/prompt 403" in line for line in prompt_lines) == 2, prompt_lines
    assert sum("OPTIONS /api/v1/prompt 403" in line for line in prompt_lines) == 1, prompt_lines
    assert len(prompt_lines) == 3, prompt_lines
