"""Install, locate and sandbox the pinned real agent CLIs for end-to-end tests.

    python3 -m tests.e2e.realclis install   # one npm install into the test cache
    python3 -m tests.e2e.realclis install-more   # the newer CLIs, into a prefix of their own
    python3 -m tests.e2e.realclis install-latest   # the newest published CLIs (npm-latest)
    python3 -m tests.e2e.realclis capture   # regenerate tests/fixtures/real and tests/fixtures/help
    python3 -m tests.e2e.realclis capture qwen   # only those of one backend (or several)

The CLIs live outside the clone, in ${CLINVK_TEST_CACHE:-~/.cache/clinvk-test}/npm, and every run
gets an environment built from an allowlist that routes everything except loopback to a dead proxy,
so nothing a test starts can reach the network.

CLINVK_E2E_VERSIONS=latest makes the end-to-end tier run the newest published release of every
CLI (installed by install-latest into npm-latest) instead of the pinned ones; the pinned run,
what CI runs, never touches that prefix.
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
# Every real CLI's binary -> its npm package.
PACKAGE_OF = dict({"claude": "@anthropic-ai/claude-code", "codex": "@openai/codex",
                   "gemini": "@google/gemini-cli"}, **MORE_BINARIES)
# CLINVK_E2E_VERSIONS: "pinned" (the default) or "latest" (every CLI at its newest release,
# all six in the npm-latest prefix).
VERSIONS_VARIABLE = "CLINVK_E2E_VERSIONS"
VERSION_SETS = ("pinned", "latest")
LATEST_PREFIX = "npm-latest"
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


def version_set() -> str:
    """The CLI versions the end-to-end tier runs: CLINVK_E2E_VERSIONS, "pinned" unless set."""
    chosen = os.environ.get(VERSIONS_VARIABLE) or "pinned"
    if chosen not in VERSION_SETS:
        raise ValueError("%s must be one of %s: got %r"
                         % (VERSIONS_VARIABLE, ", ".join(VERSION_SETS), chosen))
    return chosen


def all_packages() -> Dict[str, str]:
    """Every real CLI's npm package and its pinned version."""
    return dict(PACKAGES, **MORE_PACKAGES)


def _latest_bins(binaries) -> Optional[str]:
    """npm-latest's node_modules/.bin when install-latest finished and ``binaries`` are there."""
    try:
        json.loads(_marker(LATEST_PREFIX).read_text())
    except (OSError, ValueError):
        return None
    bins = cache_dir(LATEST_PREFIX) / "node_modules" / ".bin"
    return str(bins) if all((bins / name).exists() for name in binaries) else None


def bin_dir() -> Optional[str]:
    """The node_modules/.bin holding claude, codex and gemini at the versions of version_set(),
    or None."""
    if version_set() == "latest":
        return _latest_bins(BINARIES)
    return _installed_bins("npm", PACKAGES, BINARIES)


def more_bin_dir(binary: str = "") -> Optional[str]:
    """The node_modules/.bin holding every MORE_PACKAGES CLI at its pinned version (its latest
    one under CLINVK_E2E_VERSIONS=latest), or None. With ``binary``: the same folder when that
    one CLI is there at that version, whatever became of the others."""
    if version_set() == "latest":
        return _latest_bins([binary] if binary else list(MORE_BINARIES))
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


def latest_versions() -> Dict[str, str]:
    """Every real CLI's package and the version npm calls ``latest`` now (asks the registry)."""
    found = {}
    for package in all_packages():
        proc = subprocess.run(["npm", "view", package + "@latest", "version"],
                              capture_output=True, text=True, timeout=120)
        version = proc.stdout.strip()
        if proc.returncode != 0 or not re.fullmatch(r"\d+\.\d+\.\d+\S*", version):
            raise RuntimeError("npm view %s@latest version failed (exit %d): %s"
                               % (package, proc.returncode, (proc.stderr or version).strip()[:200]))
        found[package] = version
    return found


def install_latest() -> str:
    """Install the newest published release of every CLI into npm-latest unless it is there
    already; return its bin folder or raise RuntimeError."""
    wanted = latest_versions()
    binaries = BINARIES + tuple(MORE_BINARIES)
    return _installed_bins(LATEST_PREFIX, wanted, binaries) or \
        _install(LATEST_PREFIX, wanted, binaries) or ""


def installed_versions() -> Dict[str, str]:
    """The version of each real CLI (by binary name) the tier runs under version_set(), read
    from its package.json; a CLI that is not installed is left out."""
    found = {}
    for binary, package in PACKAGE_OF.items():
        bins = more_bin_dir(binary) if binary in MORE_BINARIES else bin_dir()
        try:
            meta = json.loads((Path(bins or "/nonexistent").parent / package / "package.json")
                              .read_text())
            found[binary] = meta["version"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


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
    plugin = {"@opencode-ai/plugin": opencode_version()}
    (folder / "package.json").write_text(json.dumps({"dependencies": plugin}))
    (folder / "package-lock.json").write_text(json.dumps(
        {"lockfileVersion": 3, "packages": {"": {"dependencies": plugin}}}))


def opencode_version() -> str:
    """The version of the opencode the tier runs (its plugin package has the same one)."""
    return installed_versions().get("opencode") or MORE_PACKAGES["opencode-ai"]


def no_egress_env(fake_url: str, home: str, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for a real CLI talking only to `fake_url`; writes its config files under `home`.

    Built from an allowlist, never from the whole host environment (so no CLAUDECODE, no real keys),
    with every proxy variable aimed at a dead loopback port so nothing but 127.0.0.1 is reachable.
    """
    write_cli_homes(fake_url, home)
    # gemini 0.61.0 writes error reports to os.tmpdir(): keep them inside the throwaway home.
    tmp = os.path.join(home, "tmp")
    os.makedirs(tmp, exist_ok=True)
    more = cache_dir(LATEST_PREFIX if version_set() == "latest" else "npm-more")
    more = more / "node_modules" / ".bin"
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


def _capture(backends: List[str]) -> None:
    from tests.e2e.capture import capture    # it imports this module
    capture(backends)


def main(argv: List[str]) -> int:
    actions = {"install": lambda: print(install()), "install-more": lambda: print(install_more()),
               "install-latest": lambda: print(install_latest()),
               "capture": lambda: _capture(argv[1:])}
    if argv[:1] and argv[0] in actions:
        try:
            actions[argv[0]]()
        except RuntimeError as exc:
            print("realclis %s: %s" % (argv[0], exc), file=sys.stderr)
            return 1
        return 0
    print("usage: python3 -m tests.e2e.realclis install|install-more|install-latest|capture"
          " [BACKEND...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
