"""``clinvk completion bash|zsh|fish``: a shell completion script generated from the argument
parsers the commands really use (``commands.PARSERS``), so it cannot drift from them.

Every script holds the same tables, written as the shell's functions: the words that may
follow a command path (``sessions`` -> list, show, delete, clean), its flags, and what each
flag's value is (its choices, a file, a directory, or free text). One small function per shell
walks the words typed so far with those tables, as the commands parse them: flags before a
command's name belong to it, and after ``--`` or a prompt there is nothing more to complete.
"""

from __future__ import annotations

import argparse
from typing import Dict, List, NamedTuple

from ..argparser import subcommands
from .commands import BUILT_IN_COMMANDS, COMMANDS, HELP_TOPICS, PARSERS, entry_point
from .common import EXIT_OK, Parser, parse, root_parser, write

SHELLS = ("bash", "zsh", "fish")
FILE, DIR, TEXT = "@file", "@dir", "@text"   # what a flag's value is, besides a choice list
# A flag whose metavar is one of these takes a file or a directory.
_PATH_METAVARS = {"PATH": FILE, "DIR": DIR}


class Node(NamedTuple):
    """One command path (``""`` for the root, ``"sessions list"``): the words that may come
    next (sub-commands or a positional's choices), its flags, and the value of each flag that
    takes one (a list of choices or FILE, DIR, TEXT)."""

    path: str
    words: List[str]
    flags: List[str]
    values: Dict[str, object]


def completion_parser() -> Parser:
    """The parser of ``clinvk completion``."""
    p = Parser(prog="clinvk completion", description="Print a shell completion script. "
               "bash: source <(clinvk completion bash) in ~/.bashrc; zsh: source <(clinvk "
               "completion zsh) after compinit in ~/.zshrc; fish: clinvk completion fish > "
               "~/.config/fish/completions/clinvk.fish")
    p.add_argument("shell", choices=SHELLS)
    return p


def completion_command(argv: List[str]) -> int:
    """``clinvk completion SHELL``: the script on stdout."""
    args = parse(completion_parser(), argv)
    write(script(args.shell))
    return EXIT_OK


def script(shell: str) -> str:
    """The completion script for ``shell`` (one of SHELLS)."""
    return {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}[shell](command_tree())


# -- the tree ------------------------------------------------------------------------------------


def command_tree() -> List[Node]:
    """Every command path with what may follow it, read from the real parsers."""
    commands = list(COMMANDS) + list(BUILT_IN_COMMANDS)
    root = node_of("", root_parser())
    nodes = [root._replace(words=commands)]
    for name in COMMANDS:
        nodes.extend(nodes_of(name, entry_point(PARSERS[name])()))
    nodes.append(Node("help", sorted(HELP_TOPICS) + commands, [], {}))
    nodes.append(Node("version", [], ["-h", "--help"], {}))
    return nodes


def nodes_of(path: str, parser: argparse.ArgumentParser) -> List[Node]:
    """The node of ``parser`` at ``path``, then its sub-commands' nodes."""
    found = [node_of(path, parser)]
    for name, sub in subcommands(parser).items():
        found.extend(nodes_of(path + " " + name, sub))
    return found


def node_of(path: str, parser: argparse.ArgumentParser) -> Node:
    words = list(subcommands(parser))
    flags: List[str] = []
    values: Dict[str, object] = {}
    for action in parser._actions:
        if not action.option_strings:
            if action.choices and not isinstance(action, argparse._SubParsersAction):
                words.extend(action.choices)
            continue
        if action.help == argparse.SUPPRESS:
            continue
        flags.extend(action.option_strings)
        if action.nargs != 0:
            value = list(action.choices) if action.choices else \
                _PATH_METAVARS.get(str(action.metavar), TEXT)
            for flag in action.option_strings:
                values[flag] = value
    return Node(path, words, flags, values)


def _words(value: object) -> str:
    return " ".join(value) if isinstance(value, list) else str(value)


# -- the tables as shell functions (bash and zsh share them) --------------------------------------


def _sh_tables(nodes: List[Node]) -> str:
    """``_clinvk_words PATH``, ``_clinvk_flags PATH`` and ``_clinvk_value PATH FLAG`` (prints
    the value's choices or kind; status 1 when the flag takes no value)."""
    out = ["_clinvk_words() {", '    case "$1" in']
    out += ['        "%s") echo "%s" ;;' % (n.path, " ".join(n.words)) for n in nodes if n.words]
    out += ["    esac", "}", "", "_clinvk_flags() {", '    case "$1" in']
    out += ['        "%s") echo "%s" ;;' % (n.path, " ".join(n.flags)) for n in nodes if n.flags]
    out += ["    esac", "}", "", "_clinvk_value() {", '    case "$1|$2" in']
    for n in nodes:
        for flag, value in n.values.items():
            out.append('        "%s|%s") echo "%s" ;;' % (n.path, flag, _words(value)))
    out += ["        *) return 1 ;;", "    esac", "}", ""]
    return "\n".join(out)


# The walk over the words typed before the cursor, in the syntax bash and zsh share:
# sets `path` (the command path), `expect` (1: the cursor is on a flag's value) and `done`
# (1: after -- or a prompt, no more sub-commands).
_SH_WALK = """    local path="" w expect="" done=0 i
    for ((i = @FIRST@; i < @LAST@; i++)); do
        w=@WORD@
        if [[ -n $expect ]]; then expect=""; continue; fi
        if [[ $w == -- ]]; then done=1; continue; fi
        if [[ $w == -* ]]; then
            if [[ $w != *=* ]] && _clinvk_value "$path" "$w" >/dev/null; then expect=1; fi
            continue
        fi
        if ((!done)) && [[ " $(_clinvk_words "$path") " == *" $w "* ]]; then
            path="${path:+$path }$w"
        else
            done=1
        fi
    done"""


def bash_script(nodes: List[Node]) -> str:
    walk = _SH_WALK.replace("@FIRST@", "1").replace("@LAST@", "COMP_CWORD") \
        .replace("@WORD@", '"${COMP_WORDS[i]}"')
    return """# bash completion for clinvk, generated by `clinvk completion bash`.
# Load it with: source <(clinvk completion bash)
%s
_clinvk() {
    local cur="${COMP_WORDS[COMP_CWORD]}"
%s
    COMPREPLY=()
    if [[ -n $expect ]]; then
        local values
        values=$(_clinvk_value "$path" "${COMP_WORDS[COMP_CWORD-1]}")
        case $values in
            @file) COMPREPLY=($(compgen -f -- "$cur")) ;;
            @dir) COMPREPLY=($(compgen -d -- "$cur")) ;;
            @text) ;;
            *) COMPREPLY=($(compgen -W "$values" -- "$cur")) ;;
        esac
    elif [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_clinvk_flags "$path")" -- "$cur"))
    elif ((!done)); then
        COMPREPLY=($(compgen -W "$(_clinvk_words "$path")" -- "$cur"))
    fi
    return 0
}
complete -F _clinvk clinvk clinvk.pyz
""" % (_sh_tables(nodes), walk)


def zsh_script(nodes: List[Node]) -> str:
    walk = _SH_WALK.replace("@FIRST@", "2").replace("@LAST@", "CURRENT") \
        .replace("@WORD@", '"${words[i]}"')
    return """#compdef clinvk clinvk.pyz
# zsh completion for clinvk, generated by `clinvk completion zsh`. Load it after compinit
# with: source <(clinvk completion zsh); or save it as _clinvk in a directory of $fpath.
%s
_clinvk() {
    local cur="${words[CURRENT]}"
%s
    if [[ -n $expect ]]; then
        local values
        values=$(_clinvk_value "$path" "${words[CURRENT-1]}")
        case $values in
            @file) _files ;;
            @dir) _files -/ ;;
            @text) ;;
            *) compadd -- ${=values} ;;
        esac
    elif [[ $cur == -* ]]; then
        compadd -- ${=$(_clinvk_flags "$path")}
    elif ((!done)); then
        compadd -- ${=$(_clinvk_words "$path")}
    fi
}
if [[ "${funcstack[1]}" == "_clinvk" ]]; then
    _clinvk "$@"
elif (( $+functions[compdef] )); then
    compdef _clinvk clinvk clinvk.pyz
fi
""" % (_sh_tables(nodes), walk)


def fish_script(nodes: List[Node]) -> str:
    def switch(name: str, args: str, key: str, rows: List[str]) -> str:
        return "\n".join(["function %s --argument-names %s" % (name, args),
                          "    switch %s" % key] + rows + ["    end", "end", ""])

    words = ["        case '%s'\n            printf '%%s\\n' %s" % (n.path, " ".join(n.words))
             for n in nodes if n.words]
    flags = ["        case '%s'\n            printf '%%s\\n' %s" % (n.path, " ".join(n.flags))
             for n in nodes if n.flags]
    values = ["        case '%s|%s'\n            printf '%%s\\n' %s" % (n.path, flag,
                                                                       _words(value))
              for n in nodes for flag, value in n.values.items()]
    values.append("        case '*'\n            return 1")
    return """# fish completion for clinvk, generated by `clinvk completion fish`. Save it as
# ~/.config/fish/completions/clinvk.fish (or: clinvk completion fish | source).
%s%s%s
function __clinvk_candidates
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l cur (commandline -ct)
    set -l path ''
    set -l expect 0
    set -l done 0
    for w in $tokens
        if test $expect = 1
            set expect 0
            continue
        end
        if test "$w" = '--'
            set done 1
            continue
        end
        if string match -q -- '-*' $w
            if not string match -q -- '*=*' $w; and __clinvk_value "$path" $w >/dev/null
                set expect 1
            end
            continue
        end
        if test $done = 0; and contains -- $w (__clinvk_words "$path")
            set path (string trim -- "$path $w")
        else
            set done 1
        end
    end
    if test $expect = 1
        set -l values (__clinvk_value "$path" $tokens[-1])
        switch "$values"
            case @file
                __fish_complete_path $cur
            case @dir
                __fish_complete_directories $cur
            case @text
            case '*'
                printf '%%s\\n' $values
        end
    else if string match -q -- '-*' $cur
        __clinvk_flags "$path"
    else if test $done = 0
        __clinvk_words "$path"
    end
end

complete -c clinvk -c clinvk.pyz -f -a '(__clinvk_candidates)'
""" % (switch("__clinvk_words", "path", '"$path"', words),
       switch("__clinvk_flags", "path", '"$path"', flags),
       switch("__clinvk_value", "path flag", '"$path|$flag"', values))
