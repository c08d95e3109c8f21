"""The web console in a real browser: Debian's Chromium driven by Playwright for Python (its
own browser download is not used: the system browser is launched by its path), and
firefox-esr when it is installed. The fake CLIs stand in for the backends.

Screenshots of every page are kept in ``$CLINVK_TEST_ARTIFACTS`` (default
tests/artifacts/console/, ignored by git) for review. Without chromium, Playwright or axe-core
these tests are skipped on a laptop, and fail under CI=true.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.serverutil import pid_alive, read_pid, start_server, wait_for  # noqa: F401
from tests.test_runs import SlowRun

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.environ.get("CLINVK_TEST_ARTIFACTS") or os.path.join(ROOT, "tests", "artifacts",
                                                                    "console")
AXE = os.path.join(os.environ.get("CLINVK_TEST_CACHE") or os.path.expanduser(
    "~/.cache/clinvk-test"), "npm-axe", "node_modules", "axe-core", "axe.min.js")
KEY = "console-key-0123456789"
PAGES = ("runs", "sessions", "chat", "usage")
WAIT_MS = 30000


def unavailable(what: str) -> None:
    """Fail under CI (which must run these tests), skip elsewhere, saying what is missing."""
    if os.environ.get("CI") == "true":
        pytest.fail("%s; CI requires the browser tests" % what)
    pytest.skip(what)


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium")
    if not path:
        unavailable("chromium is not installed (apt-get install chromium, or run ./test.sh)")
    try:
        from playwright.sync_api import expect as playwright_expect, sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install -r "
                    "tests/requirements-dev.txt; its browser download is not needed)")
    playwright_expect.set_options(timeout=WAIT_MS)
    driver = sync_playwright().start()
    browser = driver.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
    yield browser
    browser.close()
    driver.stop()


@pytest.fixture
def browse(chromium):
    """``browse(width=1280, bypass_csp=False)`` -> a page in a fresh browser context."""
    contexts = []

    def open_page(width: int = 1280, bypass_csp: bool = False):
        context = chromium.new_context(viewport={"width": width, "height": 900},
                                       bypass_csp=bypass_csp)
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        return context.new_page()
    yield open_page
    for context in contexts:
        context.close()


def expect(locator):
    from playwright.sync_api import expect as playwright_expect
    return playwright_expect(locator)


def shot(what, name: str) -> None:
    """A screenshot of a page (all of it) or of one element, kept for review."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, name + ".png")
    if hasattr(what, "goto"):
        what.screenshot(path=path, full_page=True)
    else:
        what.screenshot(path=path)


def open_console(page, srv, name: str) -> None:
    page.goto("%s/#%s" % (srv.url, name))
    expect(page.locator("main h1")).to_be_visible()


def try_it(page, operation: str):
    """The operation's section on /docs, its Try it form opened."""
    section = page.locator('section[data-op="%s"]' % operation)
    section.locator("details.tryit > summary").click()
    return section


def set_key(page, key: str) -> None:
    page.locator(".key-field input").first.fill(key)


# -- Try it ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("operation, reply", [
    ("executePrompt", '"output": "echo: explain this code"'),
    ("openaiChatCompletions", '"object": "chat.completion"'),
    ("anthropicCreateMessage", '"type": "message"'),
])
def test_try_it_runs_the_example_with_the_key_and_is_refused_without(start_server, browse,
                                                                     operation, reply):
    srv = start_server(**{"server.api_keys": [KEY]})
    page = browse()
    page.goto(srv.url + "/docs")
    section = try_it(page, operation)
    section.locator(".tryit-send").click()
    expect(section.locator(".tryit-status")).to_contain_text("401")
    set_key(page, KEY)
    section.locator(".tryit-send").click()
    expect(section.locator(".tryit-status")).to_contain_text("200")
    expect(section.locator(".tryit-body")).to_contain_text(reply)
    assert "$CLINVK_API_KEY" in section.locator(".tryit-curl").inner_text()
    assert KEY not in section.locator(".tryit-curl").inner_text()
    assert page.evaluate("sessionStorage.getItem('clinvk.apiKey')") == KEY
    shot(section, "docs-try-it-" + operation)


def test_a_streamed_answer_arrives_event_by_event_before_the_run_ends(start_server, browse,
                                                                      monkeypatch):
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "0.5")
    monkeypatch.setenv("FAKE_CLI_CHUNKS", "6")
    srv = start_server()
    page = browse()
    page.goto(srv.url + "/docs")
    section = try_it(page, "executePrompt")
    section.locator(".tryit-stream").check()
    page.evaluate("""() => {
        const target = document.querySelector('section[data-op="executePrompt"] .tryit-result');
        window.seen = [];
        new MutationObserver(() => {
            const n = target.querySelectorAll('.tryit-events li').length;
            if (n && window.seen[window.seen.length - 1] !== n) window.seen.push(n);
        }).observe(target, {childList: true, subtree: true});
    }""")
    section.locator(".tryit-send").click()
    events = section.locator(".tryit-events li")
    expect(events.nth(1)).to_be_attached()
    # Two events are on the page while the backend is still writing the rest.
    assert len(srv.app.runs.list()) == 1
    assert "ended" not in section.locator(".tryit-result p").inner_text()
    expect(section.locator(".tryit-result p")).to_contain_text("stream ended")
    assert srv.app.runs.list() == []
    updates = page.evaluate("window.seen")
    assert len(updates) >= 4 and updates == sorted(updates), updates
    assert '"type":"done"' in events.last.inner_text()
    shot(section, "docs-try-it-stream")


# -- Runs -------------------------------------------------------------------------------------


def test_a_slow_run_is_watched_and_cancelled_from_the_runs_page(start_server, browse,
                                                               monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_CLI_MODE", "slow")
    monkeypatch.setenv("FAKE_CLI_DELAY", "1")
    monkeypatch.setenv("FAKE_CLI_CHUNKS", "60")
    monkeypatch.setenv("FAKE_CLI_PIDFILE", str(tmp_path / "fake.pid"))
    srv = start_server()
    slow = SlowRun(srv, stream=True, prompt="hello")       # a piece a second for a minute
    pid = read_pid(str(tmp_path / "fake.pid"))
    group = os.getpgid(pid)
    page = browse()
    open_console(page, srv, "runs")
    row = page.locator("tr[data-run]")
    expect(row).to_contain_text("claude")
    expect(row).to_contain_text("/api/v1/prompt")
    row.get_by_role("button", name=re.compile("^Watch")).click()
    watched = page.locator("ol.events li")
    expect(watched.nth(1)).to_be_attached()
    shot(page, "runs")
    row.get_by_role("button", name=re.compile("^Cancel")).click()
    page.get_by_role("button", name=re.compile("^Yes, cancel")).click()
    expect(page.locator("main .action-result")).to_contain_text("cancelled")
    slow.thread.join(30)
    assert not pid_alive(pid)
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)
    assert b'"code":"cancelled"' in slow.reply.body
    expect(watched.last).to_contain_text("run_ended")
    expect(page.locator("tr[data-run]")).to_have_count(0)


# -- Chat -------------------------------------------------------------------------------------


def send_chat(page, text: str):
    page.locator("#chat-prompt").fill(text)
    page.get_by_role("button", name="Send").click()
    turn = page.locator(".turn.assistant").last
    expect(turn.locator(".meta").last).to_contain_text(" out")
    return turn


def test_a_chat_continues_its_session_and_switches_backend(start_server, browse):
    srv = start_server()
    page = browse()
    open_console(page, srv, "chat")
    page.locator("#chat-backend").select_option("claude")
    first = send_chat(page, "first")
    expect(first.locator(".reply-text")).to_have_text("echo: first")
    assert re.search(r"claude · claude-fake-opus · \d+ in · \d+ out · .*\$0\.0010",
                     first.inner_text())
    second = send_chat(page, "second")
    expect(second.locator(".reply-text")).to_have_text("[history: 1 turns] echo: second")
    page.locator("#chat-backend").select_option("codex")
    expect(page.locator(".turn.system").last).to_contain_text("Switched to codex")
    third = send_chat(page, "third")
    expect(third.locator(".reply-text")).to_have_text("echo: third")
    assert third.locator(".meta").last.inner_text().startswith("codex")
    shot(page, "chat")
    sessions, _ = srv.app.store.list()
    assert sorted((s.backend, s.turn_count) for s in sessions) == [("claude", 2), ("codex", 1)]


# -- Sessions ---------------------------------------------------------------------------------


def test_the_sessions_page_filters_shows_details_and_deletes_after_asking(start_server, browse):
    """With API keys: the page's calls (the DELETE too) carry the key typed at the top and
    pass the cross-site guards as same-origin requests."""
    srv = start_server(**{"server.api_keys": [KEY]})
    ids = {b: srv.post("/api/v1/prompt", {"backend": b, "prompt": "hello " + b},
                       headers={"X-Api-Key": KEY}).json()["session_id"]
           for b in ("claude", "codex")}
    page = browse()
    open_console(page, srv, "sessions")
    expect(page.locator("main [role=status]")).to_contain_text("401")
    set_key(page, KEY)
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("tr[data-session]")
    expect(rows).to_have_count(2)
    page.locator("#f-backend").select_option("codex")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text(ids["codex"])
    page.locator("#f-backend").select_option("")
    page.locator("#f-workdir").fill("/no/such/dir")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(0)
    page.locator("#f-workdir").fill("")
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("button", name="Open session " + ids["claude"]).click()
    detail = page.locator("main section.card")
    expect(detail).to_contain_text("hello claude")          # its first prompt
    expect(detail.locator("pre.reply")).to_have_text("echo: hello claude")  # its last reply
    expect(detail).to_contain_text("turn_count")
    shot(page, "sessions")
    detail.get_by_role("button", name="Delete…").click()
    assert srv.app.store.count() == 2           # asked first, deleted nothing yet
    detail.get_by_role("button", name=re.compile("^Yes, delete")).click()
    expect(detail).to_contain_text("deleted")
    expect(rows).to_have_count(1)
    assert srv.app.store.count() == 1


# -- Usage, origins, accessibility, small screens, keyboard ------------------------------------


def test_the_usage_page_shows_the_metrics_counters(start_server, browse):
    srv = start_server(**{"server.metrics_enabled": True})
    srv.post("/api/v1/prompt", {"backend": "claude", "prompt": "count me"})
    page = browse()
    open_console(page, srv, "usage")
    row = page.locator("tbody tr", has_text="claude")
    expect(row).to_contain_text("$0.0010")
    assert row.locator("td").first.inner_text() == "1"        # runs
    shot(page, "usage")


def test_the_pages_request_nothing_from_any_other_host(start_server, browse):
    srv = start_server()
    srv.post("/api/v1/prompt", {"backend": "claude", "prompt": "a session to show"})
    page = browse()
    requested, refused = [], []
    page.on("request", lambda r: requested.append(r.url))
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy"
            in m.text else None)
    for name in PAGES:
        open_console(page, srv, name)
        page.wait_for_load_state("networkidle")
    page.goto(srv.url + "/docs")
    section = try_it(page, "listBackends")
    section.locator(".tryit-send").click()
    expect(section.locator(".tryit-status")).to_contain_text("200")
    elsewhere = [u for u in requested if not u.startswith(srv.url + "/")]
    assert elsewhere == [] and refused == []
    assert any("/api/v1/sessions" in u for u in requested)      # the pages did call the API


def test_no_serious_or_critical_accessibility_violations(start_server, browse):
    if not os.path.exists(AXE):
        unavailable("axe-core is not installed (npm install --prefix "
                    "~/.cache/clinvk-test/npm-axe axe-core, or run ./test.sh)")
    srv = start_server()
    srv.post("/api/v1/prompt", {"backend": "claude", "prompt": "a session to show"})
    page = browse(bypass_csp=True)             # axe is injected as an inline script
    found = {}
    for name in PAGES + ("docs",):
        if name == "docs":
            page.goto(srv.url + "/docs")
            try_it(page, "executePrompt")
        else:
            open_console(page, srv, name)
        page.wait_for_load_state("networkidle")
        page.add_script_tag(path=AXE)
        violations = page.evaluate("""async () => (await axe.run(document)).violations
            .filter(v => v.impact === 'serious' || v.impact === 'critical')
            .map(v => v.id + ': ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', '))""")
        if violations:
            found[name] = violations
    assert found == {}


@pytest.mark.parametrize("name", PAGES + ("docs",))
def test_nothing_overflows_sideways_on_a_360_px_screen(start_server, browse, name):
    srv = start_server()
    srv.post("/api/v1/prompt", {"backend": "claude", "prompt": "a session to show"})
    page = browse(width=360)
    shown = page
    if name == "docs":
        page.goto(srv.url + "/docs")
        shown = try_it(page, "executePrompt")
        shown.locator(".tryit-send").click()
        expect(shown.locator(".tryit-status")).to_contain_text("200")
    else:
        open_console(page, srv, name)
    page.wait_for_load_state("networkidle")
    widths = page.evaluate("[document.documentElement.scrollWidth, "
                           "document.documentElement.clientWidth]")
    shot(shown, "%s-360px" % name)
    assert widths[0] <= widths[1], widths


def test_the_console_is_usable_from_the_keyboard(start_server, browse):
    srv = start_server()
    page = browse()
    open_console(page, srv, "runs")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Chat":
            break
    page.keyboard.press("Enter")
    expect(page.locator("main h1")).to_have_text("Chat")
    assert page.evaluate("location.hash") == "#chat"
    for _ in range(4):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "chat-backend":
            break
    assert page.evaluate("document.activeElement.id") == "chat-backend"


# -- Firefox ----------------------------------------------------------------------------------


@pytest.mark.parametrize("page, request_line", [("/#sessions", "GET /api/v1/sessions"),
                                                ("/docs", "GET /openapi.json")])
def test_firefox_runs_the_console_scripts(start_server, tmp_path, page, request_line):
    """Playwright drives only its own Firefox build, so Debian's firefox-esr loads the page
    headless by itself: the request its scripts make, in the access log, is the proof that
    they ran (under the page's Content-Security-Policy)."""
    firefox = shutil.which("firefox-esr") or shutil.which("firefox")
    if not firefox:
        pytest.skip("firefox-esr is not installed (apt-get install firefox-esr to run this "
                    "test too)")
    srv = start_server()
    profile = tmp_path / "profile"
    profile.mkdir()
    os.makedirs(ARTIFACTS, exist_ok=True)
    proc = subprocess.Popen([firefox, "--headless", "--no-remote", "--profile", str(profile),
                             "--screenshot", os.path.join(ARTIFACTS, "firefox-%s.png"
                                                          % page.strip("/#")),
                             srv.url + page],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(120)                  # it exits once it has taken the screenshot
    finally:
        proc.kill()
        proc.wait(30)
    assert wait_for(lambda: any(request_line in line for line in srv.app.log.lines), 10), \
        srv.app.log.lines
