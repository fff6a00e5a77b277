"""A parsed TOML document with typed access and errors that carry the line.

tomllib reports no positions, so :class:`TomlLines` scans the raw text for table headers and keys;
:class:`TomlDoc` reads typed values out of the parsed data and raises ConfigErrors at the line
where the value was written. The profile's schema is :mod:`wgns.profile.toml`.
"""

from __future__ import annotations

import os
import re
import tomllib
from contextlib import AbstractContextManager
from typing import Any

from wgns.errors import ConfigError
from wgns.profile.values import StrPath, located, plain, show, suggest

# A location is the path into the parsed data, e.g. ("interface", 1, "peer", 0).
Loc = tuple[str | int, ...]

# Unambiguous pieces (no two adjacent parts can match the same characters) keep the scan linear.
_HEADER = re.compile(r"\s*(\[\[?)([^\[\]#]*)(\]\]?)\s*(#.*)?")
_KEY = re.compile(r"""\s*("[^"\n]*"|'[^'\n]*'|[A-Za-z0-9_-]+)\s*[=.]""")
_DECODE_AT_LINE = re.compile(r" \(at line (\d+), column \d+\)$")
_DECODE_AT_END = re.compile(r" \(at end of document\)$")


def load(text: str, path: StrPath) -> dict[str, Any]:
    """TEXT parsed as TOML, or a ConfigError with tomllib's reason and line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        line: int | None = None
        if m := _DECODE_AT_LINE.search(msg):
            line, msg = int(m.group(1)), msg[: m.start()]
        elif m := _DECODE_AT_END.search(msg):
            line, msg = len(text.rstrip().split("\n")), msg[: m.start()]
        raise ConfigError(f"not valid TOML: {plain(msg, 120)}", path=path, line=line) from None
    except (ValueError, RecursionError):  # e.g. an integer beyond int_max_str_digits
        raise ConfigError("not valid TOML", path=path) from None


class TomlLines:
    """Where tables and keys are in the raw text. Scanning lines is not a TOML parser
    (multi-line strings can fool it); it only picks line numbers for messages."""

    def __init__(self, text: str) -> None:
        self.headers: dict[Loc, int] = {}
        self.keys: dict[Loc, dict[str, int]] = {}
        counts: dict[Loc, int] = {}
        loc: Loc = ()
        for number, line in enumerate(text.split("\n"), 1):
            m = _HEADER.fullmatch(line)
            if m and len(m.group(1)) == len(m.group(3)):
                parts = [p.strip().strip("\"'") for p in m.group(2).split(".")]
                loc = self._locate(parts, len(m.group(1)) == 2, counts)
                self.headers.setdefault(loc, number)
                continue
            k = _KEY.match(line)
            if k:
                self.keys.setdefault(loc, {}).setdefault(k.group(1).strip("\"'"), number)

    @staticmethod
    def _locate(parts: list[str], is_array: bool, counts: dict[Loc, int]) -> Loc:
        loc: Loc = ()
        for i, part in enumerate(parts):
            here = (*loc, part)
            if is_array and i == len(parts) - 1:
                counts[here] = counts.get(here, 0) + 1
                loc = (*here, counts[here] - 1)
            elif here in counts:  # a parent array of tables means its latest element
                loc = (*here, counts[here] - 1)
            else:
                loc = here
        return loc

    def line(self, loc: Loc, key: str | None = None) -> int | None:
        while True:
            if key is not None:
                if key in self.keys.get(loc, {}):
                    return self.keys[loc][key]
                for sub in ((*loc, key), (*loc, key, 0)):  # the key is a table of its own
                    if sub in self.headers:
                        return self.headers[sub]
            if loc in self.headers:
                return self.headers[loc]
            if not loc:
                return None
            # An inline table has no header: fall back to the key holding it in its parent.
            up = loc[:-1] if isinstance(loc[-1], int) else loc
            if not up:
                return None
            key, loc = str(up[-1]), up[:-1]


def table_name(loc: Loc) -> str:
    """LOC as the TOML table it is, e.g. "interface.peer"."""
    return ".".join(p for p in loc if isinstance(p, str))


_MISSING = object()


class TomlDoc:
    """Typed access to one parsed TOML file; every error carries the file and line."""

    def __init__(self, text: str, path: StrPath) -> None:
        self.path = os.fspath(path)
        self.lines = TomlLines(text)
        self.inline_secret = False  # set by the schema when the text itself holds a key

    def error(
        self, loc: Loc, key: str | None, message: str, hint: str | None = None
    ) -> ConfigError:
        return ConfigError(
            message, path=self.path, line=self.lines.line(loc, key), key=key, hint=hint
        )

    def at(self, loc: Loc, key: str) -> AbstractContextManager[None]:
        """Errors of the value parsers (values.Invalid) in the block are at LOC's KEY."""
        return located(self.path, self.lines.line(loc, key), key)

    def check_keys(self, table: dict[str, Any], loc: Loc, allowed: tuple[str, ...]) -> None:
        for key in table:
            if key not in allowed:
                what = "unknown key" if loc == () else f"unknown key in [{table_name(loc)}]"
                raise self.error(loc, key, what, hint=suggest(key, allowed))

    def get(self, table: dict[str, Any], loc: Loc, key: str, kind: type, what: str) -> Any:
        value = table.get(key, _MISSING)
        if value is _MISSING:
            return None
        # bool is an int in Python, never in TOML.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(loc, key, f"must be {what}")
        return value

    def string(self, table: dict[str, Any], loc: Loc, key: str) -> str | None:
        value: str | None = self.get(table, loc, key, str, "a string")
        return value

    def integer(self, table: dict[str, Any], loc: Loc, key: str) -> int | None:
        value: int | None = self.get(table, loc, key, int, "an integer")
        return value

    def boolean(self, table: dict[str, Any], loc: Loc, key: str) -> bool | None:
        value: bool | None = self.get(table, loc, key, bool, "true or false")
        return value

    def strings(self, table: dict[str, Any], loc: Loc, key: str) -> list[str]:
        """A list of strings; a single string is taken as a list of one."""
        value = table.get(key, _MISSING)
        if value is _MISSING:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(loc, key, "must be a list of strings")
        return list(value)

    def tables(self, table: dict[str, Any], loc: Loc, key: str) -> list[dict[str, Any]]:
        value = table.get(key, _MISSING)
        if value is _MISSING:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            name = table_name((*loc, key))
            raise self.error(loc, key, "must be an array of tables", hint=f"write [[{name}]]")
        return list(value)

    def port(self, table: dict[str, Any], loc: Loc, key: str, *, lo: int) -> int | None:
        n = self.integer(table, loc, key)
        if n is not None and not lo <= n <= 65535:
            raise self.error(loc, key, f"{n} is not a port number ({lo}..65535)")
        return n

    def text_or_int(self, table: dict[str, Any], loc: Loc, key: str) -> str | None:
        value = table.get(key, _MISSING)
        if value is _MISSING:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.error(loc, key, "must be a string or an integer")
        return str(value)

    def choice(
        self, table: dict[str, Any], loc: Loc, key: str, choices: tuple[str, ...]
    ) -> str | None:
        value = self.string(table, loc, key)
        if value is not None and value not in choices:
            raise self.error(loc, key, f"{show(value)} is not one of {' | '.join(choices)}")
        return value

    def resolve(self, name: str) -> str:
        """A file named in the profile: relative names are relative to the profile's folder."""
        return name if os.path.isabs(name) else os.path.join(os.path.dirname(self.path), name)
