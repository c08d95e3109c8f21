"""The types of settings: one converter per type, shared by the config file, the environment,
command-line flags and ``clinvk config set``.

A type reads text (``parse_text``: an environment variable, ``config set``) and checks a value
that already has a Python type (``check``: from the YAML file or a flag), returning it
normalised or raising ``Invalid`` with what was expected; ``config`` adds the key and where the
value came from.
"""

from __future__ import annotations

import re
from typing import Any, Optional


class Invalid(Exception):
    """Raised by a type's converter; the message says what was expected."""


class ValueType:
    """``parse_text`` reads a string (env var, ``config set``); ``check`` validates a value
    that already has a Python type (from the file or a flag) and returns it normalised."""

    expected = ""

    def parse_text(self, raw: str) -> Any:
        return self.check(raw)

    def check(self, value: Any) -> Any:
        raise NotImplementedError


class Str(ValueType):
    expected = "a string"

    def check(self, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, (bool, int, float)):
            raise Invalid("a string (put the value in quotes)")
        raise Invalid(self.expected)


class Int(ValueType):
    def __init__(self, low: Optional[int] = None, high: Optional[int] = None) -> None:
        self.low, self.high = low, high
        if high is not None:
            self.expected = "an integer from %d to %d" % (low, high)
        elif low is not None:
            self.expected = "an integer >= %d" % low
        else:
            self.expected = "an integer"

    def parse_text(self, raw: str) -> Any:
        if not re.fullmatch(r"[-+]?[0-9]+", raw.strip()):
            raise Invalid(self.expected)
        return self.check(int(raw))

    def check(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(self.expected)
        if (self.low is not None and value < self.low) or (
                self.high is not None and value > self.high):
            raise Invalid(self.expected)
        return value


class Positive(ValueType):
    expected = "a number greater than 0"

    def parse_text(self, raw: str) -> Any:
        if not re.fullmatch(r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?", raw.strip()):
            raise Invalid(self.expected)
        return self.check(float(raw))

    def check(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(self.expected)
        if not 0 < value < float("inf"):
            raise Invalid(self.expected)
        return float(value)


class Bool(ValueType):
    """As text (an environment variable, ``config set``, a quoted value in the file): the
    words people and other tools use for a switch, in any case; in the file, true/false."""

    expected = "true or false (as text also 1/0, yes/no, on/off)"
    WORDS = {"true": True, "1": True, "yes": True, "on": True,
             "false": False, "0": False, "no": False, "off": False}

    def parse_text(self, raw: str) -> Any:
        try:
            return self.WORDS[raw.strip().lower()]
        except KeyError:
            raise Invalid(self.expected) from None

    def check(self, value: Any) -> Any:
        if not isinstance(value, bool):
            raise Invalid(self.expected)
        return value


class Choice(ValueType):
    def __init__(self, *choices: str) -> None:
        self.choices = choices
        self.expected = "one of " + ", ".join(c if c else '""' for c in choices)

    def parse_text(self, raw: str) -> Any:
        return self.check(raw.strip())

    def check(self, value: Any) -> Any:
        if not isinstance(value, str) or value not in self.choices:
            raise Invalid(self.expected)
        return value


class StrList(ValueType):
    """A list of strings; as text, comma-separated (blank items dropped)."""

    expected = "a list of strings, e.g. [a, b]"

    def parse_text(self, raw: str) -> Any:
        return self.check([item.strip() for item in raw.split(",") if item.strip()])

    def check(self, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise Invalid(self.expected)
        return list(value)


class NetworkList(StrList):
    expected = "a list of IP addresses or CIDR networks, e.g. [10.0.0.1, 192.168.0.0/16]"

    def check(self, value: Any) -> Any:
        items = super().check(value)
        import ipaddress  # lazy: start-up (only server.trusted_proxies needs it)
        for item in items:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise Invalid(self.expected) from None
        return items


class StoreURL(Str):
    """Empty, or a Redis URL ``redis://[user:password@]host:port/db`` / ``rediss://``."""

    expected = 'empty, or redis://[user:password@]host:port/db (rediss:// for TLS)'

    def check(self, value: Any) -> Any:
        text = super().check(value).strip()
        if text:
            from .redisclient import parse_url  # lazy: start-up (only server.store needs it)
            try:
                parse_url(text)
            except ValueError as exc:
                raise Invalid("%s: %s" % (self.expected, exc)) from None
        return text


STR = Str()
BOOL = Bool()
STR_LIST = StrList()
COUNT = Int(0)
