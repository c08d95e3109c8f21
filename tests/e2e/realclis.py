"""Install, locate and sandbox the pinned real agent CLIs for end-to-end tests.

    python3 -m tests.e2e.realclis install   # one npm install into the test cache
    python3 -m tests.e2e.realclis capture   # regenerate tests/fixtures/real and tests/fixtures/help

The CLIs live outside the clone, in ${CLINVK_TEST_CACHE:-~/.cache/clinvk-test}/npm, and every run
gets an environment built from an allowlist that routes everything except loopback to a dead proxy,
so nothing a test starts can reach the network.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

# Pinned so a new release cannot change behaviour under the tests.
PACKAGES = {
    "@anthropic-ai/claude-code": "2.1.197",
    "@openai/codex": "0.169.0",
    "@google/gemini-cli": "0.61.0",
}
BINARIES = ("claude", "codex", "gemini")
DEAD_PROXY = "http://127.0.0.1:9"
LOOPBACK = "127.0.0.1,localhost,::1"
FAKE_KEY = "fake-key-for-offline-tests"
# Host variables a CLI may need to run at all; everything else is left behind.
PASSTHROUGH = ("LANG", "LC_ALL", "TZ")

# Headless invocations used by the direct tests and the fixture capture (prompt always on stdin).
CLAUDE_JSON = ["claude", "-p", "--output-format", "json"]
# claude 2.1.197: stream-json needs --verbose in print mode; partial messages give text deltas.
CLAUDE_STREAM = ["claude", "-p", "--output-format", "stream-json", "--verbose", "--include-partial-messages"]
# codex-cli 0.169.0 waits on an open stdin; "-" reads the prompt from stdin until EOF.
CODEX_JSON = ["codex", "exec", "--json", "--skip-git-repo-check", "-"]
GEMINI_JSON = ["gemini", "--output-format", "json", "--skip-trust"]
GEMINI_STREAM = ["gemini", "--output-format", "stream-json", "--skip-trust"]

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures"


def cache_dir() -> Path:
    """The folder holding the npm install: ${CLINVK_TEST_CACHE:-~/.cache/clinvk-test}/npm."""
    root = os.environ.get("CLINVK_TEST_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "clinvk-test"
    )
    return Path(root) / "npm"


def _marker() -> Path:
    return cache_dir() / "installed.json"


def bin_dir() -> Optional[str]:
    """The node_modules/.bin holding claude, codex and gemini at the pinned versions, or None."""
    try:
        if json.loads(_marker().read_text()) != PACKAGES:
            return None
    except (OSError, ValueError):
        return None
    bins = cache_dir() / "node_modules" / ".bin"
    if all((bins / name).exists() for name in BINARIES):
        return str(bins)
    return None


def install() -> str:
    """Install the pinned CLIs unless already there; return bin_dir() or raise RuntimeError."""
    existing = bin_dir()
    if existing:
        return existing
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    # A private package.json keeps npm from walking up into some other project.
    (target / "package.json").write_text(
        json.dumps({"name": "clinvk-test-clis", "private": True, "dependencies": PACKAGES}, indent=2)
    )
    _marker().unlink(missing_ok=True)
    specs = ["%s@%s" % (name, version) for name, version in PACKAGES.items()]
    argv = ["npm", "install", "--no-audit", "--no-fund", "--save-exact", "--prefix", str(target)]
    proc = subprocess.run(argv + specs, cwd=str(target))
    if proc.returncode != 0:
        raise RuntimeError(
            "npm install of %s failed (exit %d); check that npm can reach its registry"
            % (" ".join(specs), proc.returncode)
        )
    _marker().write_text(json.dumps(PACKAGES))
    found = bin_dir()
    if not found:
        raise RuntimeError("npm install finished but %s lacks %s" % (target, ", ".join(BINARIES)))
    return found


def codex_config(fake_url: str) -> str:
    """config.toml that points codex at the fake (Responses API) and turns off its own traffic."""
    # codex-cli 0.169.0 ignores OPENAI_BASE_URL for part of its traffic (WebSocket, public host);
    # a custom provider in a private CODEX_HOME keeps every model call on the fake.
    return "\n".join([
        # A model codex 0.169.0 has metadata for; an unknown name adds an `error` item to the output.
        'model = "gpt-5.5"',
        'model_provider = "fake"',
        "check_for_update_on_startup = false",
        "",
        "[analytics]",
        "enabled = false",
        "",
        "[model_providers.fake]",
        'name = "fake"',
        'base_url = "%s/v1"' % fake_url,
        'env_key = "OPENAI_API_KEY"',
        'wire_api = "responses"',
        "request_max_retries = 0",
        "stream_max_retries = 0",
        "stream_idle_timeout_ms = 30000",
        "",
    ])


def gemini_settings() -> Dict[str, object]:
    """~/.gemini/settings.json: API-key auth (else exit 41) and one attempt per model call."""
    return {
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "general": {"maxAttempts": 1},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
    }


def write_cli_homes(fake_url: str, home: str) -> None:
    """Write the per-CLI config files under `home` (codex's CODEX_HOME is <home>/.codex)."""
    codex_home = Path(home) / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(codex_config(fake_url))
    gemini_home = Path(home) / ".gemini"
    gemini_home.mkdir(parents=True, exist_ok=True)
    (gemini_home / "settings.json").write_text(json.dumps(gemini_settings(), indent=2))


def no_egress_env(fake_url: str, home: str, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for a real CLI talking only to `fake_url`; writes its config files under `home`.

    Built from an allowlist, never from the whole host environment (so no CLAUDECODE, no real keys),
    with every proxy variable aimed at a dead loopback port so nothing but 127.0.0.1 is reachable.
    """
    write_cli_homes(fake_url, home)
    # gemini 0.61.0 writes error reports to os.tmpdir(): keep them inside the throwaway home.
    tmp = os.path.join(home, "tmp")
    os.makedirs(tmp, exist_ok=True)
    path = [p for p in (bin_dir(), os.path.dirname(shutil.which("node") or "")) if p]
    env = {name: os.environ[name] for name in PASSTHROUGH if name in os.environ}
    env.setdefault("LANG", "C.UTF-8")
    env.update({
        "PATH": os.pathsep.join(path + ["/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": home,
        "TMPDIR": tmp,
        "TERM": "dumb",
        "NO_COLOR": "1",
        "NO_PROXY": LOOPBACK, "no_proxy": LOOPBACK,
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "ANTHROPIC_BASE_URL": fake_url,
        "ANTHROPIC_API_KEY": FAKE_KEY,
        "OPENAI_API_KEY": FAKE_KEY,
        "CODEX_HOME": os.path.join(home, ".codex"),
        "GOOGLE_GEMINI_BASE_URL": fake_url,
        "GEMINI_API_KEY": FAKE_KEY,
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
    })
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = DEAD_PROXY
    env.update(extra or {})
    return env


def run_cli(argv: List[str], prompt: str, env: Dict[str, str], cwd: str,
            timeout: float = 120) -> "subprocess.CompletedProcess[str]":
    """Run one headless CLI turn with `prompt` on stdin (closed after), capturing text output."""
    exe = shutil.which(argv[0], path=env["PATH"])
    if exe is None:
        raise RuntimeError("%s not found on PATH %s; run python3 -m tests.e2e.realclis install"
                           % (argv[0], env["PATH"]))
    return subprocess.run([exe] + argv[1:], input=prompt, capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


def resume_argv(argv: List[str], session_id: str) -> List[str]:
    """The same headless invocation, continuing session `session_id`."""
    if argv[0] == "codex":
        # codex-cli 0.169.0: `exec` options go BEFORE `resume` (after it, e.g. -s exits 2).
        return argv[:-1] + ["resume", session_id, argv[-1]]
    return argv + ["--resume", session_id]


def session_id_of(stdout: str) -> str:
    """The id to resume with, from the stdout of a json / stream-json / --json run of any CLI."""
    text = stdout.strip()
    if text.startswith("{\n"):  # gemini json: one pretty-printed object
        return json.loads(text)["session_id"]
    for line in text.splitlines():
        event = json.loads(line)
        found = event.get("session_id") or event.get("thread_id")
        if found:
            return found
    raise ValueError("no session id in output: %r" % text[:200])


# (backend, case, argv, fake set-up) for `capture`; "resume" cases first run CLAUDE_JSON-like turn 1.
CAPTURE_CASES = [
    ("claude", "json_ok", CLAUDE_JSON, {}),
    ("claude", "stream_json_ok", CLAUDE_STREAM, {}),
    ("claude", "stream_json_no_partial_ok", CLAUDE_STREAM[:-1], {}),
    ("claude", "resume_ok", CLAUDE_JSON, {"resume": True}),
    ("claude", "api_error_500_json", CLAUDE_JSON, {"fail": 500}),
    ("claude", "api_error_400_stream_json", CLAUDE_STREAM, {"fail": 400}),
    ("claude", "tool_use_stream_json", CLAUDE_STREAM, {"tool": ("Read", {"file_path": "{work}/note.txt"})}),
    ("claude", "bypass_permissions_as_root", CLAUDE_JSON + ["--permission-mode", "bypassPermissions"], {}),
    ("codex", "json_ok", CODEX_JSON, {}),
    ("codex", "resume_ok", CODEX_JSON, {"resume": True}),
    ("codex", "api_error_500_json", CODEX_JSON, {"fail": 500}),
    ("codex", "api_error_400_json", CODEX_JSON, {"fail": 400}),
    ("codex", "resume_rejects_sandbox_after_resume",
     ["codex", "exec", "resume", "--json", "--skip-git-repo-check", "-s", "read-only", "{session}", "-"],
     {"resume": "raw"}),
    ("gemini", "json_ok", GEMINI_JSON, {}),
    ("gemini", "stream_json_ok", GEMINI_STREAM, {}),
    ("gemini", "resume_ok", GEMINI_JSON, {"resume": True}),
    ("gemini", "api_error_500_json", GEMINI_JSON, {"fail": 500}),
    ("gemini", "api_error_400_stream_json", GEMINI_STREAM, {"fail": 400}),
]
CAPTURE_PROMPT = "Say hello to the fixture"
CAPTURE_FIRST_PROMPT = "Remember the word kumquat"


def capture() -> None:
    """Regenerate tests/fixtures/help and tests/fixtures/real/<backend>/<case>.{stdout,stderr,exit}.

    Volatile paths are rewritten (/home/user, /work/project, 127.0.0.1:PORT, <npm-cache>) so a
    re-capture only changes what the CLIs really changed; ids and timestamps stay as printed.
    """
    import tempfile
    from tests.fakes.fake_model_api import FakeModelAPI

    if not bin_dir():
        raise RuntimeError("real CLIs not installed; run python3 -m tests.e2e.realclis install")
    capture_help()
    manifest = {}
    for backend, case, argv, setup in CAPTURE_CASES:
        with tempfile.TemporaryDirectory(prefix="clinvk-capture-") as scratch, FakeModelAPI() as api:
            home, work = os.path.join(scratch, "home"), os.path.join(scratch, "work")
            os.makedirs(work)
            Path(work, "note.txt").write_text("the secret word is pineapple\n")
            env = no_egress_env(api.url, home)
            if setup.get("resume"):
                first = run_cli(_base(argv), CAPTURE_FIRST_PROMPT, env, work)
                session = session_id_of(first.stdout)
                argv = (resume_argv(argv, session) if setup["resume"] is True
                        else [a.replace("{session}", session) for a in argv])
            if setup.get("fail"):
                api.fail_next(setup["fail"], times=10)
            if setup.get("tool"):
                name, tool_input = setup["tool"]
                api.queue_tool_use(name, {k: v.replace("{work}", work) for k, v in tool_input.items()})
            proc = run_cli(argv, CAPTURE_PROMPT, env, work)
            scrub = _scrubber(home=home, work=work, url=api.url)
            out_dir = FIXTURES / "real" / backend
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / (case + ".stdout")).write_text(scrub(proc.stdout))
            (out_dir / (case + ".stderr")).write_text(scrub(proc.stderr))
            (out_dir / (case + ".exit")).write_text("%d\n" % proc.returncode)
            manifest["%s/%s" % (backend, case)] = {
                "argv": [scrub(a) for a in argv], "stdin": CAPTURE_PROMPT, "setup": setup,
                "first_turn_stdin": CAPTURE_FIRST_PROMPT if setup.get("resume") else None,
                "exit": proc.returncode}
            print("%-8s %-40s exit %d" % (backend, case, proc.returncode))
    (FIXTURES / "real" / "cases.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _base(argv: List[str]) -> List[str]:
    """The plain first-turn invocation for a resume case."""
    if argv[0] == "codex":
        return CODEX_JSON
    return [a for a in argv if a != "{session}"]


def _scrubber(home: str, work: str, url: str):
    replacements = [(str(cache_dir()), "<npm-cache>"), (work, "/work/project"), (home, "/home/user"),
                    (url[len("http://"):], "127.0.0.1:PORT")]
    # claude 2.1.197 names a project folder after its cwd with every non-alphanumeric turned "-".
    replacements.append((re.sub(r"[^A-Za-z0-9]", "-", work), "-work-project"))

    def scrub(text: str) -> str:
        for old, new in replacements:
            text = text.replace(old, new)
        return text
    return scrub


def capture_help() -> None:
    """Write tests/fixtures/help/*.txt: --help of each headless entry point and each --version."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="clinvk-help-") as home:
        env = no_egress_env("http://127.0.0.1:9", home)
        out_dir = FIXTURES / "help"
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, argv in [("claude", ["claude", "--help"]), ("codex_exec", ["codex", "exec", "--help"]),
                           ("codex_exec_resume", ["codex", "exec", "resume", "--help"]),
                           ("gemini", ["gemini", "--help"]), ("claude_version", ["claude", "--version"]),
                           ("codex_version", ["codex", "--version"]), ("gemini_version", ["gemini", "--version"])]:
            proc = run_cli(argv, "", env, home, timeout=60)
            (out_dir / (name + ".txt")).write_text(proc.stdout)


def main(argv: List[str]) -> int:
    actions = {"install": lambda: print(install()), "capture": capture}
    if argv[:1] and argv[0] in actions:
        try:
            actions[argv[0]]()
        except RuntimeError as exc:
            print("realclis %s: %s" % (argv[0], exc), file=sys.stderr)
            return 1
        return 0
    print("usage: python3 -m tests.e2e.realclis install|capture", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
