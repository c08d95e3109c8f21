"""Install, locate and sandbox the pinned real agent CLIs for end-to-end tests.

    python3 -m tests.e2e.realclis install   # one npm install into the test cache
    python3 -m tests.e2e.realclis install-more   # the newer CLIs, into a prefix of their own
    python3 -m tests.e2e.realclis capture   # regenerate tests/fixtures/real and tests/fixtures/help
    python3 -m tests.e2e.realclis capture qwen   # only those of one backend (or several)

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
# The newer CLIs, pinned too, in an npm prefix of their own (npm-more): adding one never
# reinstalls the three above, and a failed install leaves them usable. Binary -> package.
MORE_PACKAGES = {
    "@qwen-code/qwen-code": "0.24.4",
    "@github/copilot": "1.0.102",
    "opencode-ai": "1.18.33",
}
MORE_BINARIES = {"qwen": "@qwen-code/qwen-code", "copilot": "@github/copilot",
                 "opencode": "opencode-ai"}
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
# qwen-code 0.24.4 reads the prompt from stdin when no positional is given; -o json prints one
# array of messages, stream-json with partial messages gives text deltas.
QWEN_JSON = ["qwen", "-o", "json"]
QWEN_STREAM = ["qwen", "-o", "stream-json", "--include-partial-messages"]
GEMINI_STREAM = ["gemini", "--output-format", "stream-json", "--skip-trust"]
# copilot 1.0.102 prompt mode reads piped stdin; its json output is JSON lines (token deltas too).
COPILOT_JSON = ["copilot", "--output-format", "json", "--no-auto-update"]
# opencode 1.18.33 `run` reads stdin when given no message; an empty title saves a model request.
OPENCODE_JSON = ["opencode", "run", "--format", "json", "--title="]

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures"


def cache_dir(prefix: str = "npm") -> Path:
    """The folder holding an npm install: ${CLINVK_TEST_CACHE:-~/.cache/clinvk-test}/<prefix>
    (npm: the pinned three; npm-more: MORE_PACKAGES)."""
    root = os.environ.get("CLINVK_TEST_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "clinvk-test"
    )
    return Path(root) / prefix


def _marker(prefix: str = "npm") -> Path:
    return cache_dir(prefix) / "installed.json"


def _installed_bins(prefix: str, packages: Dict[str, str], binaries) -> Optional[str]:
    """The node_modules/.bin of ``prefix`` when it holds ``packages`` at their pinned versions
    and every one of ``binaries``, else None."""
    try:
        if json.loads(_marker(prefix).read_text()) != packages:
            return None
    except (OSError, ValueError):
        return None
    bins = cache_dir(prefix) / "node_modules" / ".bin"
    if all((bins / name).exists() for name in binaries):
        return str(bins)
    return None


def bin_dir() -> Optional[str]:
    """The node_modules/.bin holding claude, codex and gemini at the pinned versions, or None."""
    return _installed_bins("npm", PACKAGES, BINARIES)


def more_bin_dir(binary: str = "") -> Optional[str]:
    """The node_modules/.bin holding every MORE_PACKAGES CLI at its pinned version, or None.
    With ``binary``: the same folder when that one CLI is there at its pinned version, whatever
    became of the others."""
    if not binary:
        return _installed_bins("npm-more", MORE_PACKAGES, tuple(MORE_BINARIES))
    package = MORE_BINARIES[binary]
    modules = cache_dir("npm-more") / "node_modules"
    try:
        version = json.loads((modules / package / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    bins = modules / ".bin"
    return str(bins) if version == MORE_PACKAGES[package] and (bins / binary).exists() else None


def install() -> str:
    """Install the pinned CLIs unless already there; return bin_dir() or raise RuntimeError."""
    return bin_dir() or _install("npm", PACKAGES, BINARIES) or ""


def install_more() -> str:
    """Install MORE_PACKAGES into their own prefix unless already there; return
    more_bin_dir() or raise RuntimeError."""
    return more_bin_dir() or _install("npm-more", MORE_PACKAGES, tuple(MORE_BINARIES)) or ""


def _install(prefix: str, packages: Dict[str, str], binaries) -> Optional[str]:
    target = cache_dir(prefix)
    target.mkdir(parents=True, exist_ok=True)
    # A private package.json keeps npm from walking up into some other project.
    (target / "package.json").write_text(
        json.dumps({"name": "clinvk-test-clis", "private": True, "dependencies": packages}, indent=2)
    )
    _marker(prefix).unlink(missing_ok=True)
    specs = ["%s@%s" % (name, version) for name, version in packages.items()]
    argv = ["npm", "install", "--no-audit", "--no-fund", "--save-exact", "--prefix", str(target)]
    proc = subprocess.run(argv + specs, cwd=str(target))
    if proc.returncode != 0:
        raise RuntimeError(
            "npm install of %s failed (exit %d); check that npm can reach its registry"
            % (" ".join(specs), proc.returncode)
        )
    _marker(prefix).write_text(json.dumps(packages))
    found = _installed_bins(prefix, packages, binaries)
    if not found:
        raise RuntimeError("npm install finished but %s lacks %s" % (target, ", ".join(binaries)))
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


def qwen_settings() -> Dict[str, object]:
    """~/.qwen/settings.json: the OpenAI-compatible API (the fake), no usage statistics (qwen-code
    0.24.4 sends them to aliyuncs.com), and no managed auto-memory (a second model request after
    every turn)."""
    return {
        "security": {"auth": {"selectedType": "openai"}},
        # Fewer attempts per failed model call (qwen-code 0.24.4 retries a 429 up to ten times,
        # a minute apart); it still makes several, so tests fail calls with 401 (one attempt).
        "model": {"name": "fake-model", "generationConfig": {"maxRetries": 0}},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
        "general": {"enableAutoUpdate": False},
        "memory": {"enableManagedAutoMemory": False, "enableManagedAutoDream": False},
    }


def write_cli_homes(fake_url: str, home: str) -> None:
    """Write the per-CLI config files under `home` (codex's CODEX_HOME is <home>/.codex)."""
    codex_home = Path(home) / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(codex_config(fake_url))
    gemini_home = Path(home) / ".gemini"
    gemini_home.mkdir(parents=True, exist_ok=True)
    (gemini_home / "settings.json").write_text(json.dumps(gemini_settings(), indent=2))
    qwen_home = Path(home) / ".qwen"
    qwen_home.mkdir(parents=True, exist_ok=True)
    (qwen_home / "settings.json").write_text(json.dumps(qwen_settings(), indent=2))
    write_opencode_config(fake_url, Path(home) / ".config" / "opencode")


def write_opencode_config(fake_url: str, folder: Path) -> None:
    """opencode's user config: the fake as an OpenAI-compatible provider, and the files that
    keep opencode-ai 1.18.33 from npm-installing @opencode-ai/plugin into its config folder
    (it skips that when node_modules exists and package-lock.json lists the package)."""
    (folder / "node_modules").mkdir(parents=True, exist_ok=True)
    (folder / "opencode.json").write_text(json.dumps({
        "provider": {"fake": {"npm": "@ai-sdk/openai-compatible", "name": "Fake",
                              "options": {"baseURL": fake_url + "/v1", "apiKey": FAKE_KEY},
                              "models": {"fake-model": {"name": "Fake Model"}}}},
        "model": "fake/fake-model", "small_model": "fake/fake-model",
        "autoupdate": False, "share": "disabled"}, indent=2))
    plugin = {"@opencode-ai/plugin": MORE_PACKAGES["opencode-ai"]}
    (folder / "package.json").write_text(json.dumps({"dependencies": plugin}))
    (folder / "package-lock.json").write_text(json.dumps(
        {"lockfileVersion": 3, "packages": {"": {"dependencies": plugin}}}))


def no_egress_env(fake_url: str, home: str, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for a real CLI talking only to `fake_url`; writes its config files under `home`.

    Built from an allowlist, never from the whole host environment (so no CLAUDECODE, no real keys),
    with every proxy variable aimed at a dead loopback port so nothing but 127.0.0.1 is reachable.
    """
    write_cli_homes(fake_url, home)
    # gemini 0.61.0 writes error reports to os.tmpdir(): keep them inside the throwaway home.
    tmp = os.path.join(home, "tmp")
    os.makedirs(tmp, exist_ok=True)
    more = cache_dir("npm-more") / "node_modules" / ".bin"
    path = [p for p in (bin_dir(), str(more) if more.is_dir() else "",
                        os.path.dirname(shutil.which("node") or "")) if p]
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
        # qwen-code 0.24.4 speaks OpenAI Chat Completions to OPENAI_BASE_URL (see qwen_settings).
        "OPENAI_BASE_URL": fake_url + "/v1",
        "QWEN_USAGE_STATISTICS_ENABLED": "false",
        "QWEN_TELEMETRY_ENABLED": "false",
        # copilot 1.0.102 with your own provider; offline, else it calls api.github.com.
        "COPILOT_PROVIDER_BASE_URL": fake_url + "/v1",
        "COPILOT_PROVIDER_API_KEY": FAKE_KEY,
        "COPILOT_MODEL": "fake-model",
        "COPILOT_OFFLINE": "true",
        "COPILOT_AUTO_UPDATE": "false",
        # copilot unpacks its 235 MB package into this cache on a first run: once, not per HOME.
        "COPILOT_PKG_CACHE_HOME": str(cache_dir("npm-more") / "copilot-pkg"),
        # opencode 1.18.33 fetches models.dev and its own updates without these.
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
        "OPENCODE_DISABLE_SHARE": "1",
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
    if argv[0] == "copilot":
        return argv + ["--resume=" + session_id]      # copilot 1.0.102: --resume [<value>]
    if argv[0] == "opencode":
        return [a for a in argv if a != "--title="] + ["--session=" + session_id]
    return argv + ["--resume", session_id]


def session_id_of(stdout: str) -> str:
    """The id to resume with, from the stdout of a json / stream-json / --json run of any CLI."""
    text = stdout.strip()
    if text.startswith("{\n"):  # gemini json: one pretty-printed object
        return json.loads(text)["session_id"]
    for line in text.splitlines():
        event = json.loads(line)
        if isinstance(event, list):  # qwen json (claude json --verbose): an array of messages
            event = event[0] if event else {}
        found = (event.get("session_id") or event.get("thread_id") or event.get("sessionId")
                 or event.get("sessionID"))
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
    ("qwen", "json_ok", QWEN_JSON, {}),
    ("qwen", "stream_json_ok", QWEN_STREAM, {}),
    ("qwen", "stream_json_no_partial_ok", QWEN_STREAM[:-1], {}),
    ("qwen", "resume_ok", QWEN_JSON, {"resume": True}),
    ("qwen", "resume_unknown_json", QWEN_JSON + ["--resume", "3f0c2a9e-8d41-4c1b-9a77-0e5f3b2d1c4a"], {}),
    ("qwen", "api_error_401_json", QWEN_JSON, {"fail": 401}),
    ("qwen", "api_error_401_stream_json", QWEN_STREAM, {"fail": 401}),
    ("qwen", "tool_use_stream_json", QWEN_STREAM, {"tool": ("read_file", {"file_path": "{work}/note.txt"})}),
    ("qwen", "max_session_turns_json", QWEN_JSON + ["--max-session-turns", "1"],
     {"tool": ("read_file", {"file_path": "{work}/note.txt"})}),
    ("qwen", "no_auth_type_json", QWEN_JSON, {"no_user_settings": True}),
    ("copilot", "json_ok", COPILOT_JSON, {}),
    ("copilot", "resume_ok", COPILOT_JSON, {"resume": True}),
    ("copilot", "resume_unknown_json", COPILOT_JSON + ["--resume=3f0c2a9e-8d41-4c1b-9a77-0e5f3b2d1c4a"], {}),
    ("copilot", "api_error_400_json", COPILOT_JSON, {"fail": 400}),
    ("copilot", "api_error_401_json", COPILOT_JSON, {"fail": 401}),
    ("copilot", "tool_use_json", COPILOT_JSON, {"tool": ("view", {"path": "{work}/note.txt"})}),
    ("copilot", "tool_denied_json", COPILOT_JSON,
     {"tool": ("bash", {"command": "touch made.txt", "description": "make a file"})}),
    ("copilot", "no_auth_json", COPILOT_JSON, {"unset": ["COPILOT_PROVIDER_BASE_URL", "COPILOT_OFFLINE"]}),
    ("opencode", "json_ok", OPENCODE_JSON, {}),
    ("opencode", "resume_ok", OPENCODE_JSON, {"resume": True}),
    ("opencode", "resume_unknown_json", ["opencode", "run", "--format", "json", "--session=ses_3f0c2a9e8d41fe4c1b9a770e5f"], {}),
    ("opencode", "api_error_400_json", OPENCODE_JSON, {"fail": 400}),
    ("opencode", "api_error_401_json", OPENCODE_JSON, {"fail": 401}),
    ("opencode", "tool_use_json", OPENCODE_JSON, {"tool": ("read", {"filePath": "{work}/note.txt"})}),
    ("opencode", "tool_denied_json", OPENCODE_JSON,
     {"tool": ("bash", {"command": "touch made.txt", "description": "make a file"}),
      "env": {"OPENCODE_PERMISSION": '{"bash":"ask"}'}}),
]
CAPTURE_PROMPT = "Say hello to the fixture"
CAPTURE_FIRST_PROMPT = "Remember the word kumquat"


def capture(backends: List[str] = ()) -> None:
    """Regenerate tests/fixtures/help and tests/fixtures/real/<backend>/<case>.{stdout,stderr,exit}
    (only those of ``backends`` when given; the other entries of cases.json are kept).

    Volatile paths are rewritten (/home/user, /work/project, 127.0.0.1:PORT, <npm-cache>) so a
    re-capture only changes what the CLIs really changed; ids and timestamps stay as printed.
    """
    import tempfile
    from tests.fakes.fake_model_api import FakeModelAPI

    if not bin_dir():
        raise RuntimeError("real CLIs not installed; run python3 -m tests.e2e.realclis install")
    capture_help(backends)
    cases_file = FIXTURES / "real" / "cases.json"
    manifest = json.loads(cases_file.read_text()) if backends else {}
    for backend, case, argv, setup in CAPTURE_CASES:
        if backends and backend not in backends:
            continue
        with tempfile.TemporaryDirectory(prefix="clinvk-capture-") as scratch, FakeModelAPI() as api:
            home, work = os.path.join(scratch, "home"), os.path.join(scratch, "work")
            os.makedirs(work)
            Path(work, "note.txt").write_text("the secret word is pineapple\n")
            env = no_egress_env(api.url, home)
            if setup.get("no_user_settings"):
                os.remove(os.path.join(home, ".%s" % backend, "settings.json"))
            env.update(setup.get("env") or {})
            for name in setup.get("unset") or ():
                env.pop(name, None)
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
    cases_file.write_text(json.dumps(manifest, indent=2) + "\n")


def _base(argv: List[str]) -> List[str]:
    """The plain first-turn invocation for a resume case."""
    if argv[0] == "codex":
        return CODEX_JSON
    return [a for a in argv if a != "{session}"]


def _scrubber(home: str, work: str, url: str):
    # npm-more first: the npm prefix's path is the start of it.
    replacements = [(str(cache_dir("npm-more")), "<npm-cache>"), (str(cache_dir()), "<npm-cache>"),
                    (work, "/work/project"), (home, "/home/user"),
                    (url[len("http://"):], "127.0.0.1:PORT")]
    # claude 2.1.197 names a project folder after its cwd with every non-alphanumeric turned "-".
    replacements.append((re.sub(r"[^A-Za-z0-9]", "-", work), "-work-project"))

    def scrub(text: str) -> str:
        for old, new in replacements:
            text = text.replace(old, new)
        return text
    return scrub


def capture_help(backends: List[str] = ()) -> None:
    """Write tests/fixtures/help/*.txt: --help of each headless entry point and each --version
    (only those of ``backends`` when given)."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="clinvk-help-") as home:
        env = no_egress_env("http://127.0.0.1:9", home)
        out_dir = FIXTURES / "help"
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, argv in [("claude", ["claude", "--help"]), ("codex_exec", ["codex", "exec", "--help"]),
                           ("codex_exec_resume", ["codex", "exec", "resume", "--help"]),
                           ("gemini", ["gemini", "--help"]), ("claude_version", ["claude", "--version"]),
                           ("codex_version", ["codex", "--version"]), ("gemini_version", ["gemini", "--version"]),
                           ("qwen", ["qwen", "--help"]), ("qwen_version", ["qwen", "--version"]),
                           ("copilot", ["copilot", "--help"]), ("copilot_version", ["copilot", "--version"]),
                           # copilot 1.0.102 documents --sandbox here only, not in --help.
                           ("copilot_help_sandbox", ["copilot", "help", "sandbox"]),
                           ("opencode_run", ["opencode", "run", "--help"]),
                           ("opencode_version", ["opencode", "--version"])]:
            if backends and argv[0] not in backends:
                continue
            proc = run_cli(argv, "", env, home, timeout=60)
            # opencode 1.18.33 prints its help on stderr.
            (out_dir / (name + ".txt")).write_text(proc.stdout or proc.stderr)


def main(argv: List[str]) -> int:
    actions = {"install": lambda: print(install()), "install-more": lambda: print(install_more()),
               "capture": lambda: capture(argv[1:])}
    if argv[:1] and argv[0] in actions:
        try:
            actions[argv[0]]()
        except RuntimeError as exc:
            print("realclis %s: %s" % (argv[0], exc), file=sys.stderr)
            return 1
        return 0
    print("usage: python3 -m tests.e2e.realclis install|install-more|capture [BACKEND...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
