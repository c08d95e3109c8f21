"""Whether a regular expression can take exponential time in Python's backtracking ``re``.

Python's ``re`` has no time limit, and a schema's ``pattern`` comes from the client while the
text it is searched in comes from an agent: ``(a+)+`` or ``(a|aa)+`` against ``aaaa...b``
would hold a server thread (and the GIL) for ever. ``exponential(pattern)`` says whether the
pattern has that shape: a repetition whose body can split the same text between its
iterations in more than one way.

A body is *ambiguous* when it holds a variable part (a repetition, an optional item, or an
alternation whose branches can start with the same character or match nothing) and no
mandatory character that none of the variable parts can match. Such a mandatory character
(the ``-`` of ``^[a-z]+(-[a-z]+)*$``, the ``.`` of ``([a-z0-9]+\\.)+``) fixes where each
iteration starts, so matching stays polynomial and those everyday patterns are accepted.
Both bounds small (``(\\d{3}-){2}``) is accepted too: the work stays small. The analysis is
conservative: a character class it cannot enumerate (``\\w``, ``.``, a negated set) is taken
to match anything.
"""

from __future__ import annotations

from typing import Any, FrozenSet, List, Optional, Tuple

try:                                    # Python 3.11+: sre_parse is deprecated
    from re import _constants as sre_constants  # type: ignore[attr-defined]
    from re import _parser as sre_parse  # type: ignore[attr-defined]
except ImportError:                     # Python 3.8-3.10
    import sre_constants
    import sre_parse

_REPEATS = tuple(getattr(sre_constants, name) for name in
                 ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
                 if hasattr(sre_constants, name))
_ZERO_WIDTH = (sre_constants.AT, sre_constants.ASSERT, sre_constants.ASSERT_NOT)
_LARGEST_SET = 4096         # a range wider than this counts as "anything"

# A set of code points, or None for "any character" (what cannot be enumerated).
Chars = Optional[FrozenSet[int]]


def exponential(pattern: str) -> bool:
    """Whether ``pattern`` (a valid ``re`` pattern) has the shape of catastrophic
    backtracking. ``re.error`` propagates for an invalid one."""
    return _has_ambiguous_repeat(list(sre_parse.parse(pattern)))


def _unbounded(hi: Any) -> bool:
    return hi is sre_constants.MAXREPEAT or hi == sre_constants.MAXREPEAT


def _has_ambiguous_repeat(items: List[Any]) -> bool:
    for op, arg in items:
        if op in _REPEATS:
            lo, hi, body = arg
            if hi != 1 and _ambiguous(list(body), _unbounded(hi)):
                return True
            if _has_ambiguous_repeat(list(body)):
                return True
        else:
            for sub in _children(op, arg):
                if _has_ambiguous_repeat(sub):
                    return True
    return False


def _children(op: Any, arg: Any) -> List[List[Any]]:
    if op is sre_constants.SUBPATTERN:
        return [list(arg[-1])]
    if op is sre_constants.BRANCH:
        return [list(branch) for branch in arg[1]]
    if op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
        return [list(arg[1])]
    return []


def _ambiguous(body: List[Any], outer_unbounded: bool) -> bool:
    variable = _variable_chars(body, outer_unbounded)
    if variable is False:
        return False                     # nothing in the body varies
    if variable is None:
        return True                      # a variable part may match any character
    return not any(chars is not None and not (chars & variable)
                   for chars in _mandatory_chars(body))


def _variable_chars(items: List[Any], outer_unbounded: bool) -> Any:
    """The characters the body's variable parts can match: False when it has none, None
    when they may match anything, else a set."""
    found: Any = False
    for op, arg in items:
        part: Any = False
        if op in _REPEATS:
            lo, hi, body = arg
            if _unbounded(hi) or (outer_unbounded and lo != hi):
                part = _alphabet(list(body))
        elif op is sre_constants.BRANCH and outer_unbounded and _branches_overlap(arg[1]):
            part = _alphabet([(op, arg)])
        else:
            for sub in _children(op, arg):
                sub_part = _variable_chars(sub, outer_unbounded)
                part = sub_part if part is False else _union(part, sub_part)
        if part is not False:
            found = part if found is False else _union(found, part)
    return found


def _union(a: Any, b: Any) -> Any:
    if a is False:
        return b
    if b is False:
        return a
    return None if a is None or b is None else a | b


def _branches_overlap(branches: List[Any]) -> bool:
    seen: FrozenSet[int] = frozenset()
    for branch in branches:
        first, nullable = _first(list(branch))
        if nullable or first is None or first & seen:
            return True
        seen = seen | first
    return False


def _first(items: List[Any]) -> Tuple[Chars, bool]:
    """The characters a sequence can start with, and whether it can match nothing."""
    first: FrozenSet[int] = frozenset()
    for op, arg in items:
        if op in _ZERO_WIDTH:
            continue
        if op in _REPEATS:
            sub, nullable = _first(list(arg[2]))
            nullable = nullable or arg[0] == 0
        elif op is sre_constants.SUBPATTERN:
            sub, nullable = _first(list(arg[-1]))
        elif op is sre_constants.BRANCH:
            parts = [_first(list(branch)) for branch in arg[1]]
            sub = None if any(p[0] is None for p in parts) else \
                frozenset().union(*(p[0] for p in parts))  # type: ignore[misc]
            nullable = any(p[1] for p in parts)
        else:
            sub, nullable = _one_char(op, arg), False
        if sub is None:
            return None, False
        first = first | sub
        if not nullable:
            return first, False
    return first, True


def _alphabet(items: List[Any]) -> Chars:
    """Every character the sequence can match anywhere."""
    chars: FrozenSet[int] = frozenset()
    for op, arg in items:
        if op in _ZERO_WIDTH:
            continue
        if op in _REPEATS:
            sub = _alphabet(list(arg[2]))
        elif op in (sre_constants.SUBPATTERN, sre_constants.BRANCH):
            subs = [_alphabet(child) for child in _children(op, arg)]
            sub = None if any(s is None for s in subs) else \
                frozenset().union(*subs)  # type: ignore[misc]
        else:
            sub = _one_char(op, arg)
        if sub is None:
            return None
        chars = chars | sub
    return chars


def _mandatory_chars(items: List[Any]) -> List[Chars]:
    """The single-character items every match of the sequence goes through."""
    found: List[Chars] = []
    for op, arg in items:
        if op is sre_constants.SUBPATTERN:
            found.extend(_mandatory_chars(list(arg[-1])))
        elif op in (sre_constants.LITERAL, sre_constants.IN):
            found.append(_one_char(op, arg))
    return found


def _one_char(op: Any, arg: Any) -> Chars:
    """The characters one single-character item matches (both cases of a letter, since a
    flag may make the match case-insensitive); None when they cannot be listed."""
    if op is sre_constants.LITERAL:
        return _both_cases([arg])
    if op is sre_constants.IN:
        codes: List[int] = []
        for kind, value in arg:
            if kind is sre_constants.LITERAL:
                codes.append(value)
            elif kind is sre_constants.RANGE and value[1] - value[0] < _LARGEST_SET:
                codes.extend(range(value[0], value[1] + 1))
            else:                       # NEGATE, CATEGORY, a very wide range
                return None
        return _both_cases(codes)
    return None


def _both_cases(codes: List[int]) -> FrozenSet[int]:
    out = set(codes)
    for code in codes:
        out.update(ord(c) for c in (chr(code).lower(), chr(code).upper()) if len(c) == 1)
    return frozenset(out)
