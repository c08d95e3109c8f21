"""``clinvk completion bash|zsh|fish``: each script loads in the real shell without an error and
completes command names, sub-commands, flags and flag values, all read from the parsers the
commands really use (so the scripts cannot drift from them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from clinvk_lib.argparser import subcommands
from clinvk_lib.backends import base
from clinvk_lib.cli import completion
from clinvk_lib.cli.commands import BUILT_IN_COMMANDS, COMMANDS, PARSERS, entry_point
from clinvk_lib.cli.main import BUILT_IN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLINVK = [sys.executable, os.path.join(ROOT, "clinvk.py")]


def script_of(shell: str) -> str:
    p = subprocess.run(CLINVK + ["completion", shell], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return p.stdout


def needs(shell: str):
    return pytest.mark.skipif(shutil.which(shell) is None,
                              reason="%s is not installed (test.sh installs it)" % shell)


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("completion")
    paths = {}
    for shell in completion.SHELLS:
        path = folder / ("clinvk." + shell)
        path.write_text(script_of(shell))
        paths[shell] = str(path)
    return paths


# -- bash -----------------------------------------------------------------------------------------

BASH_COMPLETE = r'''
source "$1"
line=$2
read -ra COMP_WORDS <<< "$line"
[[ $line == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
_clinvk
printf '%s\n' "${COMPREPLY[@]}"
'''


def bash_complete(scripts, line: str):
    p = subprocess.run(["bash", "--norc", "-c", BASH_COMPLETE, "bash", scripts["bash"], line],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return p.stdout.split()


@needs("bash")
def test_bash_script_loads_and_registers_the_completion(scripts):
    p = subprocess.run(["bash", "--norc", "-c", 'source "$1" && complete -p clinvk', "bash",
                        scripts["bash"]], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout.strip() == "complete -F _clinvk clinvk"


@needs("bash")
@pytest.mark.parametrize("line, expected", [
    ("clinvk ses", ["sessions"]),
    ("clinvk sessions ", ["list", "show", "delete", "clean"]),
    ("clinvk sessions list --js", ["--json"]),
    ("clinvk -b ", list(base.NAMES)),
    ("clinvk --config x.yaml sessions l", ["list"]),
    ("clinvk completion ", ["bash", "zsh", "fish"]),
    ("clinvk help mo", ["modes"]),
    ("clinvk sessions list -o ", ["text", "json"]),
    ("clinvk -- ses", []),
    ("clinvk explain this ", []),
])
def test_bash_completes_commands_flags_and_values(scripts, line, expected):
    assert bash_complete(scripts, line) == expected


@needs("bash")
def test_bash_completes_directories_for_workdir(scripts, tmp_path):
    (tmp_path / "project-one").mkdir()
    (tmp_path / "project-file").write_text("")
    found = bash_complete(scripts, "clinvk -w %s/project-" % tmp_path)
    assert found == ["%s/project-one" % tmp_path]


# -- zsh and fish ---------------------------------------------------------------------------------


@needs("zsh")
def test_zsh_script_loads_after_compinit_and_offers_sessions(scripts, tmp_path):
    # compadd is stubbed to print its candidates: outside a completion widget zsh has no
    # menu to add them to (zsh itself filters them by the typed prefix).
    program = ('autoload -U compinit && compinit -u -d "$2/zcompdump" && source "$1" && '
               'print -r -- "registered=${_comps[clinvk]}" && '
               'compadd() { print -r -- "$@" } && '
               'words=(clinvk ses) && CURRENT=2 && _clinvk && '
               'words=(clinvk sessions list -o "") && CURRENT=5 && _clinvk')
    p = subprocess.run(["zsh", "-f", "-c", program, "zsh", scripts["zsh"], str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    registered, commands, values = p.stdout.splitlines()
    assert registered == "registered=_clinvk"
    assert "sessions" in commands.split() and "resume" in commands.split()
    assert values.split() == ["--", "text", "json"]


@needs("fish")
@pytest.mark.parametrize("line, expected", [
    ("clinvk ses", ["sessions"]),
    ("clinvk sessions ", ["clean", "delete", "list", "show"]),
    ("clinvk -b ", list(base.NAMES)),
    ("clinvk sessions list --js", ["--json"]),
])
def test_fish_script_loads_and_completes(scripts, line, expected, tmp_path):
    p = subprocess.run(["fish", "--no-config", "-c", 'source $argv[1]; and complete -C $argv[2]',
                        scripts["fish"], line], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path)))
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert sorted(w.split("\t")[0] for w in p.stdout.splitlines()) == sorted(expected)


# -- no drift -------------------------------------------------------------------------------------


def test_every_command_has_its_parser_in_the_table():
    assert set(PARSERS) == set(COMMANDS)
    assert set(BUILT_IN_COMMANDS) == set(BUILT_IN)


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_every_command_sub_command_and_flag_is_in_every_script(shell):
    text = completion.script(shell)
    for name in list(COMMANDS) + list(BUILT_IN):
        assert name in text
    for name, target in PARSERS.items():
        parser = entry_point(target)()
        for sub in parser.walk() if hasattr(parser, "walk") else [parser]:
            for flag in sub._option_string_actions:
                assert flag in text, (shell, name, flag)
        for sub_name in subcommands(parser):
            assert "%s %s" % (name, sub_name) in text
