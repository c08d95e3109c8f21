"""The engine's own job: configuration reaching the command through ``execute.prepare``.

One table, one row per behaviour: settings (``unified_flags.*``, ``backends.<name>.*``) and a
request give the dry-run argv and the resolved options. Every row runs once per configuration
source (the config file, the environment, a command-line flag), so a value given any way
reaches the argv the same way. A new ``unified_flags.*`` or ``backends.<name>.*`` key fails
``test_every_engine_setting_has_a_row`` until the table says what it does. Nothing is
started: ``prepare`` only builds the command.
"""

from __future__ import annotations

import os
from typing import Any, Dict, NamedTuple, Optional, Tuple

import pytest

from clinvk_lib import config, execute

SOURCES = ("file", "env", "flag")

# The argv of a plain run (after the executable), on the command line (no server policy).
CLAUDE = ("-p", "--output-format=json")
CODEX_FLAGS = ("--json", "--skip-git-repo-check")
CODEX = ("exec",) + CODEX_FLAGS + ("-",)
GEMINI = ("--skip-trust", "--output-format=json")
QWEN = ("--output-format=json",)
COPILOT = ("--output-format=json", "--no-auto-update")
OPENCODE = ("run", "--format=json", "--title=")


def codex(*flags: str) -> Tuple[str, ...]:
    """A codex argv with ``flags`` after its fixed flags and before the stdin marker."""
    return ("exec",) + CODEX_FLAGS + flags + ("-",)


class Case(NamedTuple):
    says: str                       # the behaviour, which is also the test id
    config: Dict[str, Any]          # settings; the first is the one this row is about
    backend: str
    argv: Optional[Tuple[str, ...]]  # the dry-run argv after the executable; None: refused
    request: Dict[str, Any] = {}    # request fields beyond backend, prompt and workdir
    opts: Dict[str, Any] = {}       # options.Options attributes prepare resolved
    prepared: Dict[str, Any] = {}   # execute.Prepared attributes (dry_run, timeout)
    warning: str = ""               # text one of the dry run's warnings contains
    refused: str = ""               # ExecError.kind when prepare refuses the run

    @property
    def key(self) -> str:
        return next(iter(self.config))


UA, US = "unified_flags.approval_mode", "unified_flags.sandbox_mode"

CASES = (
    # -- unified_flags.* ---------------------------------------------------------------------
    Case("unified approval_mode auto is claude's acceptEdits", {UA: "auto"}, "claude",
         CLAUDE + ("--permission-mode=acceptEdits",), opts={"approval_mode": "auto"}),
    Case("unified approval_mode none is gemini's yolo", {UA: "none"}, "gemini",
         GEMINI + ("--approval-mode=yolo",), opts={"approval_mode": "none"}),
    Case("the request's approval_mode beats the unified one", {UA: "auto"}, "claude",
         CLAUDE + ("--permission-mode=default",), request={"approval_mode": "always"},
         opts={"approval_mode": "always"}),
    Case("unified approval_mode on codex adds no flag and warns", {UA: "auto"}, "codex",
         CODEX, opts={"approval_mode": "auto"}, warning="codex exec never asks"),
    Case("unified sandbox_mode workspace is codex's workspace-write", {US: "workspace"},
         "codex", codex("--sandbox=workspace-write"), opts={"sandbox_mode": "workspace"}),
    Case("the request's sandbox_mode beats the unified one", {US: "workspace"}, "codex",
         codex("--sandbox=read-only"), request={"sandbox_mode": "read-only"}),
    Case("unified sandbox_mode on claude adds no flag and warns", {US: "read-only"}, "claude",
         CLAUDE, opts={"sandbox_mode": "read-only"}, warning="claude has no sandbox flag"),
    Case("unified sandbox_mode read-only is gemini's --sandbox, with a warning",
         {US: "read-only"}, "gemini", GEMINI + ("--sandbox",),
         warning="gemini has no read-only sandbox"),
    Case("unified max_turns is claude's --max-turns", {"unified_flags.max_turns": 7}, "claude",
         CLAUDE + ("--max-turns=7",), opts={"max_turns": 7}),
    Case("the request's max_turns beats the unified one", {"unified_flags.max_turns": 7},
         "claude", CLAUDE + ("--max-turns=2",), request={"max_turns": 2},
         opts={"max_turns": 2}),
    Case("unified max_turns on codex adds no flag and warns", {"unified_flags.max_turns": 7},
         "codex", CODEX, opts={"max_turns": 7}, warning="codex has no turn limit"),
    Case("unified max_tokens adds no claude flag (no CLI has one)",
         {"unified_flags.max_tokens": 500}, "claude", CLAUDE),
    Case("unified max_tokens adds no codex flag (no CLI has one)",
         {"unified_flags.max_tokens": 500}, "codex", CODEX),
    Case("unified verbose is claude's --verbose", {"unified_flags.verbose": True}, "claude",
         CLAUDE + ("--verbose",), opts={"verbose": True}),
    Case("unified verbose is gemini's --debug", {"unified_flags.verbose": True}, "gemini",
         GEMINI + ("--debug",), opts={"verbose": True}),
    Case("unified verbose adds no codex flag", {"unified_flags.verbose": True}, "codex",
         CODEX, opts={"verbose": True}),
    Case("unified dry_run makes a request without dry_run a dry run",
         {"unified_flags.dry_run": True}, "claude", CLAUDE, prepared={"dry_run": True}),
    Case("a request's explicit dry_run false beats unified dry_run",
         {"unified_flags.dry_run": True}, "claude", CLAUDE, request={"dry_run": False},
         prepared={"dry_run": False}),
    Case("unified dry_run false leaves a request's dry_run true",
         {"unified_flags.dry_run": False}, "claude", CLAUDE, request={"dry_run": True},
         prepared={"dry_run": True}),
    Case("unified command_timeout_secs is the run's timeout",
         {"unified_flags.command_timeout_secs": 42}, "codex", CODEX, prepared={"timeout": 42}),
    Case("the request's timeout beats unified command_timeout_secs",
         {"unified_flags.command_timeout_secs": 42}, "codex", CODEX, request={"timeout": 5},
         prepared={"timeout": 5}),
    Case("unified command_timeout_secs 0 means no timeout",
         {"unified_flags.command_timeout_secs": 0}, "codex", CODEX,
         prepared={"timeout": None}),

    # -- backends.<name>.model ---------------------------------------------------------------
    Case("claude's configured model is --model", {"backends.claude.model": "opus"}, "claude",
         CLAUDE + ("--model=opus",), opts={"model": "opus"}),
    Case("the request's model beats claude's configured one",
         {"backends.claude.model": "opus"}, "claude", CLAUDE + ("--model=sonnet",),
         request={"model": "sonnet"}, opts={"model": "sonnet"}),
    Case("claude's configured model is not codex's", {"backends.claude.model": "opus"},
         "codex", CODEX, opts={"model": ""}),
    Case("codex's configured model is --model", {"backends.codex.model": "gpt-5-codex"},
         "codex", codex("--model=gpt-5-codex")),
    Case("gemini's configured model is --model", {"backends.gemini.model": "gemini-2.5-pro"},
         "gemini", GEMINI + ("--model=gemini-2.5-pro",)),
    Case("qwen's configured model is --model", {"backends.qwen.model": "qwen3-coder-plus"},
         "qwen", QWEN + ("--model=qwen3-coder-plus",)),
    Case("copilot's configured model is --model", {"backends.copilot.model": "gpt-5.4"},
         "copilot", COPILOT + ("--model=gpt-5.4",)),
    Case("opencode's configured model is --model, provider first",
         {"backends.opencode.model": "anthropic/claude-sonnet-4-5"}, "opencode",
         OPENCODE + ("--model=anthropic/claude-sonnet-4-5",)),

    # -- backends.<name>.allowed_tools -------------------------------------------------------
    Case("claude's allowed_tools is --allowedTools",
         {"backends.claude.allowed_tools": "Read,Grep"}, "claude",
         CLAUDE + ("--allowedTools=Read,Grep",), opts={"allowed_tools": "Read,Grep"}),
    Case("codex's allowed_tools adds no flag and warns",
         {"backends.codex.allowed_tools": "shell"}, "codex", CODEX,
         warning="codex has no tool allowlist flag"),
    Case("gemini's allowed_tools adds no flag and warns",
         {"backends.gemini.allowed_tools": "ReadFile"}, "gemini", GEMINI,
         warning="allowed_tools is ignored"),
    Case("qwen's allowed_tools is --allowed-tools",
         {"backends.qwen.allowed_tools": "read_file,glob"}, "qwen",
         QWEN + ("--allowed-tools=read_file,glob",)),
    Case("copilot's allowed_tools is --allow-tool",
         {"backends.copilot.allowed_tools": "shell(git:*),write"}, "copilot",
         COPILOT + ("--allow-tool=shell(git:*),write",)),
    Case("opencode's allowed_tools adds no flag and warns",
         {"backends.opencode.allowed_tools": "read"}, "opencode", OPENCODE,
         warning="allowed_tools is ignored"),

    # -- backends.<name>.approval_mode -------------------------------------------------------
    Case("claude's approval_mode beats the unified one",
         {"backends.claude.approval_mode": "always", UA: "auto"}, "claude",
         CLAUDE + ("--permission-mode=default",), opts={"approval_mode": "always"}),
    Case("claude's approval_mode is not gemini's", {"backends.claude.approval_mode": "none"},
         "gemini", GEMINI, opts={"approval_mode": "default"}),
    Case("codex's approval_mode adds no flag and warns",
         {"backends.codex.approval_mode": "auto"}, "codex", CODEX,
         opts={"approval_mode": "auto"}, warning="codex exec never asks"),
    Case("gemini's approval_mode auto is auto_edit", {"backends.gemini.approval_mode": "auto"},
         "gemini", GEMINI + ("--approval-mode=auto_edit",)),
    Case("the request's approval_mode beats gemini's configured one",
         {"backends.gemini.approval_mode": "none"}, "gemini",
         GEMINI + ("--approval-mode=default",), request={"approval_mode": "always"}),
    Case("qwen's approval_mode auto is auto-edit", {"backends.qwen.approval_mode": "auto"},
         "qwen", QWEN + ("--approval-mode=auto-edit",)),
    Case("copilot's approval_mode auto allows writes", {"backends.copilot.approval_mode": "auto"},
         "copilot", COPILOT + ("--allow-tool=write",)),
    Case("opencode's approval_mode none is --auto", {"backends.opencode.approval_mode": "none"},
         "opencode", OPENCODE + ("--auto",), opts={"approval_mode": "none"}),

    # -- backends.<name>.sandbox_mode --------------------------------------------------------
    Case("claude's sandbox_mode adds no flag and warns",
         {"backends.claude.sandbox_mode": "read-only"}, "claude", CLAUDE,
         opts={"sandbox_mode": "read-only"}, warning="claude has no sandbox flag"),
    Case("codex's sandbox_mode beats the unified one",
         {"backends.codex.sandbox_mode": "workspace", US: "read-only"}, "codex",
         codex("--sandbox=workspace-write")),
    Case("the request's sandbox_mode beats codex's configured one",
         {"backends.codex.sandbox_mode": "full"}, "codex", codex("--sandbox=read-only"),
         request={"sandbox_mode": "read-only"}),
    Case("gemini's sandbox_mode workspace is --sandbox",
         {"backends.gemini.sandbox_mode": "workspace"}, "gemini", GEMINI + ("--sandbox",)),
    Case("qwen's sandbox_mode adds no flag and warns",
         {"backends.qwen.sandbox_mode": "read-only"}, "qwen", QWEN,
         warning="qwen's sandbox is not used"),
    Case("copilot's sandbox_mode workspace is --sandbox",
         {"backends.copilot.sandbox_mode": "workspace"}, "copilot", COPILOT + ("--sandbox",)),
    Case("opencode's sandbox_mode adds no flag and warns",
         {"backends.opencode.sandbox_mode": "read-only"}, "opencode", OPENCODE,
         warning="opencode has no sandbox"),

    # -- backends.<name>.extra_flags ---------------------------------------------------------
    Case("claude's extra_flags come last, after the request's extra",
         {"backends.claude.extra_flags": ["--effort", "high"]}, "claude",
         CLAUDE + ("--fallback-model", "sonnet", "--effort", "high"),
         request={"extra": ["--fallback-model", "sonnet"]}),
    Case("codex's extra_flags come right after exec",
         {"backends.codex.extra_flags": ["-c", "model_reasoning_effort=high"]}, "codex",
         ("exec", "-c", "model_reasoning_effort=high") + CODEX_FLAGS + ("-",)),
    Case("gemini's extra_flags come last",
         {"backends.gemini.extra_flags": ["--include-directories", "/srv/docs"]}, "gemini",
         GEMINI + ("--include-directories", "/srv/docs")),
    Case("qwen's extra_flags come last",
         {"backends.qwen.extra_flags": ["--exclude-tools", "web_fetch"]}, "qwen",
         QWEN + ("--exclude-tools", "web_fetch")),
    Case("copilot's extra_flags come last",
         {"backends.copilot.extra_flags": ["--reasoning-effort", "high"]}, "copilot",
         COPILOT + ("--reasoning-effort", "high")),
    Case("opencode's extra_flags come last",
         {"backends.opencode.extra_flags": ["--variant", "high"]}, "opencode",
         OPENCODE + ("--variant", "high")),

    # -- backends.<name>.enabled -------------------------------------------------------------
    Case("claude disabled is refused", {"backends.claude.enabled": False}, "claude", None,
         refused="disabled"),
    Case("claude disabled leaves codex alone", {"backends.claude.enabled": False}, "codex",
         CODEX),
    Case("codex disabled is refused", {"backends.codex.enabled": False}, "codex", None,
         refused="disabled"),
    Case("gemini disabled is refused", {"backends.gemini.enabled": False}, "gemini", None,
         refused="disabled"),
    Case("qwen disabled is refused", {"backends.qwen.enabled": False}, "qwen", None,
         refused="disabled"),
    Case("copilot disabled is refused", {"backends.copilot.enabled": False}, "copilot", None,
         refused="disabled"),
    Case("opencode disabled is refused", {"backends.opencode.enabled": False}, "opencode",
         None, refused="disabled"),

    # -- backends.<name>.system_prompt -------------------------------------------------------
    Case("claude's system_prompt is --system-prompt",
         {"backends.claude.system_prompt": "Be terse."}, "claude",
         CLAUDE + ("--system-prompt=Be terse.",), opts={"system_prompt": "Be terse."}),
    Case("the request's system_prompt beats claude's configured one",
         {"backends.claude.system_prompt": "Be terse."}, "claude",
         CLAUDE + ("--system-prompt=Be thorough.",), request={"system_prompt": "Be thorough."}),
    Case("codex's system_prompt is its developer_instructions",
         {"backends.codex.system_prompt": "Be terse."}, "codex",
         codex("-c", 'developer_instructions="Be terse."')),
    Case("gemini's system_prompt adds no flag and warns",
         {"backends.gemini.system_prompt": "Be terse."}, "gemini", GEMINI,
         warning="gemini has no system prompt flag"),
    Case("qwen's system_prompt is --system-prompt",
         {"backends.qwen.system_prompt": "Be terse."}, "qwen",
         QWEN + ("--system-prompt=Be terse.",)),
    Case("copilot's system_prompt adds no flag and warns",
         {"backends.copilot.system_prompt": "Be terse."}, "copilot", COPILOT,
         warning="copilot has no system prompt flag"),
    Case("opencode's system_prompt goes to its agent config, not argv",
         {"backends.opencode.system_prompt": "Be terse."}, "opencode", OPENCODE,
         opts={"system_prompt": "Be terse."}),
)

ENGINE_KEYS = sorted(s.key for s in config.SETTINGS
                     if s.key.startswith(("unified_flags.", "backends.")))


def test_every_engine_setting_has_a_row():
    """A new unified_flags.* or backends.<name>.* key needs a row saying what it does."""
    assert [key for key in ENGINE_KEYS if key not in {c.key for c in CASES}] == []


def test_every_row_names_real_settings():
    for case in CASES:
        for key in case.config:
            config.setting(key)             # ConfigError for a key the table no longer has


def as_text(value: Any) -> str:
    """``value`` as an environment variable or ``clinvk config set`` spells it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def load_config(tmp_path, source: str, settings: Dict[str, Any]) -> config.Config:
    """The configuration with ``settings`` given through ``source`` only."""
    home = tmp_path / "clinvk-home"
    home.mkdir()
    env = {"CLINVK_HOME": str(home)}
    flags = None
    if source == "file":
        for key, value in settings.items():
            config.set_in_file(str(home / "config.yaml"), key, as_text(value))
    elif source == "env":
        env.update({config.setting(key).env_var: as_text(value)
                    for key, value in settings.items()})
    else:
        flags = settings
    cfg = config.load(env=env, flags=flags)
    assert {key: cfg.source(key) for key in settings} == {key: source for key in settings}
    return cfg


def prepare(case: Case, cfg: config.Config, workdir: str) -> execute.Prepared:
    fields = dict({"backend": case.backend, "prompt": "hello", "workdir": workdir},
                  **case.request)
    return execute.prepare(execute.Request(**fields), cfg)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("case", CASES, ids=[c.says for c in CASES])
def test_configuration_reaches_the_dry_run_argv_and_options(case, source, tmp_path, fake_path):
    cfg = load_config(tmp_path, source, case.config)
    if case.refused:
        with pytest.raises(execute.ExecError) as caught:
            prepare(case, cfg, str(tmp_path))
        assert (caught.value.kind, caught.value.field) == (case.refused, "backend")
        return
    prepared = prepare(case, cfg, str(tmp_path))
    shown = prepared.describe()
    assert os.path.basename(shown["command"][0]) == case.backend
    assert tuple(shown["command"][1:]) == case.argv
    assert {name: getattr(prepared.opts, name) for name in case.opts} == case.opts
    assert {name: getattr(prepared, name) for name in case.prepared} == case.prepared
    if case.warning:
        assert any(case.warning in w for w in shown["warnings"]), shown["warnings"]
    else:
        assert shown["warnings"] == []


def test_a_flag_beats_the_environment_which_beats_the_file_on_the_way_to_the_argv(
        tmp_path, fake_path):
    home = tmp_path / "clinvk-home"
    home.mkdir()
    config.set_in_file(str(home / "config.yaml"), "backends.claude.model", "from-file")
    env = {"CLINVK_HOME": str(home), "CLINVK_BACKENDS_CLAUDE_MODEL": "from-env"}
    request = execute.Request(backend="claude", prompt="hi", workdir=str(tmp_path))
    argv = execute.prepare(request, config.load(env=env)).argv
    assert argv[-1] == "--model=from-env"
    flagged = config.load(env=env, flags={"backends.claude.model": "from-flag"})
    assert execute.prepare(request, flagged).argv[-1] == "--model=from-flag"
    del env["CLINVK_BACKENDS_CLAUDE_MODEL"]
    assert execute.prepare(request, config.load(env=env)).argv[-1] == "--model=from-file"
