"""The argument parser of every clinvk command (the terminal's commands, ``serve``, ``mcp``):
argparse that raises ``UsageError`` instead of printing and exiting, so each front end owns its
exit codes and every error reads the same, ``clinvk: MESSAGE``, with a "did you mean" for a
mistyped flag or choice and the ``--help`` to read.

Standard library only, imported by the front ends and nothing else.
"""

from __future__ import annotations

import argparse
import re
from typing import Any, Dict, Iterator, List, Optional, Sequence

# argparse's own wording (3.8 to 3.13), read to add a suggestion.
_UNRECOGNIZED = "unrecognized arguments: "
_UNKNOWN_IN = "_clinvk_unknown_in"   # namespace attribute: the parser that met unknown words
_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)\Z", re.S)


class UsageError(Exception):
    """A problem with what the user typed; the front end prints ``clinvk: MESSAGE`` and exits
    with its usage code (2)."""


def suggestion(word: str, candidates: Sequence[str]) -> str:
    """The candidate closest to ``word`` (difflib's ratio >= 0.6), or ""."""
    import difflib  # lazy: start-up (only a mistyped word needs it)
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return close[0] if close else ""


def _did_you_mean(word: str, candidates: Sequence[str]) -> str:
    best = suggestion(word, candidates)
    return '; did you mean "%s"?' % best if best else ""


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (never exits) for a usage mistake; the message names
    the mistake, suggests the closest flag or choice, and says which ``--help`` to read.

    Abbreviated long flags are refused (``--tim`` is not ``--timeout``): an abbreviation
    that is unique today would silently change meaning when a flag is added."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Optional[Sequence[str]] = None,  # type: ignore[override]
                   namespace: Optional[argparse.Namespace] = None) -> argparse.Namespace:
        ns, extras = self.parse_known_args(args, namespace)
        where = vars(ns).pop(_UNKNOWN_IN, self)
        if extras:
            # Reported by the sub-command that met them, so the hint names its flags.
            where.error(_UNRECOGNIZED + " ".join(extras))
        return ns

    def parse_known_args(self, args: Optional[Sequence[str]] = None,  # type: ignore[override]
                         namespace: Optional[argparse.Namespace] = None):
        ns, extras = super().parse_known_args(args, namespace)
        if extras and not hasattr(ns, _UNKNOWN_IN):
            setattr(ns, _UNKNOWN_IN, self)      # the innermost parser returns first
        return ns, extras

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError("%s (see: %s --help)" % (self._explain(message), self.prog))

    def _explain(self, message: str) -> str:
        if message.startswith(_UNRECOGNIZED):
            words = message[len(_UNRECOGNIZED):].split()
            flag = next((w for w in words if w.startswith("-")), "")
            if flag:
                name = flag.split("=", 1)[0]
                return 'unknown flag "%s"%s' % (name, _did_you_mean(name, self.all_flags()))
            return "unexpected argument%s: %s" % ("s" if len(words) > 1 else "",
                                                  " ".join(words))
        found = _INVALID_CHOICE.search(message)
        if found:
            choices = re.findall(r"'([^']*)'", found.group(2))
            return message + _did_you_mean(found.group(1), choices)
        return message

    def all_flags(self) -> List[str]:
        """Every option string of this parser and of its sub-commands (argparse reports a
        sub-command's unknown flag from the top parser)."""
        return sorted({flag for p in self.walk() for flag in p._option_string_actions})

    def walk(self) -> Iterator[argparse.ArgumentParser]:
        """This parser, then each sub-command's parser, depth first."""
        yield self
        for sub in subcommands(self).values():
            if isinstance(sub, Parser):
                yield from sub.walk()
            else:
                yield sub


def subcommands(parser: argparse.ArgumentParser) -> Dict[str, argparse.ArgumentParser]:
    """{name: parser} of ``parser``'s sub-commands (``sessions list``...), in order."""
    found = {}  # type: Dict[str, argparse.ArgumentParser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def takes_value(parser: argparse.ArgumentParser, flag: str) -> Optional[bool]:
    """True if ``flag`` of ``parser`` takes a value, False if not, None if it is unknown."""
    action = parser._option_string_actions.get(flag.split("=", 1)[0])
    if action is None:
        return None
    return action.nargs != 0 and "=" not in flag
