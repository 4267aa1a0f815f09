"""CEL ``matches()`` with its regular expression compiled once, not on every evaluation.

The CEL binding builds the regex anew each time ``s.matches('...')`` runs: 100 us for ``'a'``,
0.7 ms for ``'(?i)(drop|truncate) table'`` (bench/decisions.py), more than the rest of a
50-rule decision. When a condition calls ``matches`` on a plain path (``args.query``) with a
string literal, and the pattern sits in the part of the syntax where the binding's engine (Rust
``regex``) and RE2 mean the same thing, the call is rewritten to a function of the rule's own
holding the pattern compiled by RE2 (linear time, like the binding's, so an agent's argument
cannot make it backtrack). Anything else (``\\d``, ``\\w``, ``\\b``, Unicode classes, flags
other than a leading ``(?i)``, a pattern RE2 refuses, a computed pattern) keeps the binding's
own ``matches``: slower, never different.

A non-string operand raises in the function, which CEL turns into an evaluation error, as the
binding's "no such overload": the rule's fail-closed path either way.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

try:  # google-re2: a dependency; without it every matches() stays the binding's own
    import re2
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    re2 = None

# The binding logs each exception a registered function raises; a non-string operand is an
# ordinary fail-closed evaluation, not news.
logging.getLogger("cel").setLevel(logging.CRITICAL)

#: Punctuation that may follow a backslash: an escaped literal in both engines.
_ESCAPABLE = frozenset("\\.+*?()|[]{}^$-/")
_MAX_REPEAT = 100
_QUANTIFIERS = frozenset("*+?")

_STRING = re.compile(r"""(?P<prefix>[rRbB]{0,2})(?P<quote>'''|\"\"\"|'|")""")
_OPERAND = re.compile(r"(?<![\w.\])'\"])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\.matches\(\s*$")


def _class_end(pattern: str, start: int) -> int | None:
    """The index after the ``]`` closing the class opened at ``start``, when the class holds
    only literal characters, ranges and escaped punctuation (no POSIX classes, nesting or
    the set operations only one of the engines has)."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    first = i
    while i < len(pattern):
        char = pattern[i]
        if char == "]":
            return i + 1 if i > first else None
        if char == "[":
            return None
        if char == "\\":
            if i + 1 >= len(pattern) or pattern[i + 1] not in _ESCAPABLE:
                return None
            i += 2
            continue
        if pattern[i:i + 2] in ("&&", "--", "~~"):
            return None
        i += 1
    return None


def _repeat_end(pattern: str, start: int) -> int | None:
    match = re.compile(r"\{(\d{1,3})(,(\d{0,3}))?\}").match(pattern, start)
    if match is None:
        return None
    low = int(match.group(1))
    high = match.group(3)
    if low > _MAX_REPEAT or (high and (int(high) > _MAX_REPEAT or int(high) < low)):
        return None
    return match.end()


def same_in_both_engines(pattern: str) -> bool:
    """Whether ``pattern`` uses only syntax that the Rust ``regex`` crate and RE2 read the
    same way: literals, escaped punctuation, ``.``, ``^``, ``$``, groups (plain and ``(?:``),
    ``|``, ``* + ?`` (lazy too) and ``{n,m}`` up to 100 after an atom, classes of literals
    and ranges, and ``(?i)`` only at the start."""
    i = 4 if pattern.startswith("(?i)") else 0
    depth = 0
    after_atom = False  # a quantifier may follow
    quantified = False  # ... but not twice
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 >= len(pattern) or pattern[i + 1] not in _ESCAPABLE:
                return False
            i, after_atom, quantified = i + 2, True, False
        elif char == "[":
            end = _class_end(pattern, i)
            if end is None:
                return False
            i, after_atom, quantified = end, True, False
        elif char == "(":
            if pattern.startswith("(?:", i):
                i += 3
            elif pattern.startswith("(?", i):
                return False
            else:
                i += 1
            depth, after_atom, quantified = depth + 1, False, False
        elif char == ")":
            if depth == 0:
                return False
            i, depth, after_atom, quantified = i + 1, depth - 1, True, False
        elif char in _QUANTIFIERS or char == "{":
            if char == "?" and quantified and pattern[i - 1] != "?":
                i += 1  # lazy
                after_atom = False
                continue
            if not after_atom:
                return False
            if char == "{":
                end = _repeat_end(pattern, i)
                if end is None:
                    return False
                i = end
            else:
                i += 1
            after_atom, quantified = False, True
        elif char in "}]":
            return False
        elif char in "^$|":
            i, after_atom, quantified = i + 1, False, False
        else:  # a literal character, or "."
            i, after_atom, quantified = i + 1, True, False
    return depth == 0


def compiled_pattern(pattern: str) -> Any:
    """RE2's compiled ``pattern`` when it means the same as in the binding, else None."""
    if re2 is None or not same_in_both_engines(pattern):
        return None
    options = re2.Options()
    options.log_errors = False  # a refused pattern is an answer here, not an error to log
    try:
        return re2.compile(pattern, options)
    except Exception:  # RE2 refuses it: the binding decides (and fails closed the same way)
        return None


def _string_literal(source: str, start: int) -> tuple[str, int] | None:
    """The value and end of a plain single-line quoted CEL string at ``start`` whose escapes
    are only ``\\\\``, ``\\'`` and ``\\"``."""
    if start >= len(source) or source[start] not in "'\"":
        return None
    quote = source[start]
    if source.startswith(quote * 3, start):
        return None
    out: list[str] = []
    i = start + 1
    while i < len(source):
        char = source[i]
        if char == quote:
            return "".join(out), i + 1
        if char == "\n":
            return None
        if char == "\\":
            if i + 1 < len(source) and source[i + 1] in "\\'\"":
                out.append(source[i + 1])
                i += 2
                continue
            return None
        out.append(char)
        i += 1
    return None


def _skip_string(source: str, start: int) -> int:
    """The index after the CEL string literal that starts at ``start`` (with its prefix)."""
    match = _STRING.match(source, start)
    assert match is not None
    quote, raw = match.group("quote"), "r" in match.group("prefix").lower()
    i = match.end()
    while i < len(source):
        if not raw and source[i] == "\\":
            i += 2
            continue
        if source.startswith(quote, i):
            return i + len(quote)
        i += 1
    return len(source)


def rewrite_matches(source: str, prefix: str = "ledger_rx"
                    ) -> tuple[str, dict[str, Callable[[Any], bool]]]:
    """``source`` with each ``path.matches('literal')`` whose pattern RE2 reads as the binding
    does replaced by ``<prefix>_<n>(path)``, and those functions by name."""
    functions: dict[str, Callable[[Any], bool]] = {}
    out: list[str] = []
    i = 0
    while i < len(source):
        char = source[i]
        prefixed = _STRING.match(source, i)
        starts_string = char in "'\"" or (
            prefixed is not None and prefixed.group("prefix") != ""
            and (i == 0 or not (source[i - 1].isalnum() or source[i - 1] == "_")))
        if starts_string:
            end = _skip_string(source, i)
            out.append(source[i:end])
            i = end
            continue
        if source.startswith(".matches(", i):
            replaced = _rewrite_one(source, i, out, functions, prefix)
            if replaced is not None:
                i = replaced
                continue
        out.append(char)
        i += 1
    return "".join(out), functions


def _rewrite_one(source: str, at: int, out: list[str],
                 functions: dict[str, Callable[[Any], bool]], prefix: str) -> int | None:
    done = "".join(out)
    operand = _OPERAND.search(done + ".matches(")
    if operand is None:
        return None
    start = at + len(".matches(")
    while start < len(source) and source[start] == " ":
        start += 1
    literal = _string_literal(source, start)
    if literal is None:
        return None
    pattern, end = literal
    while end < len(source) and source[end] == " ":
        end += 1
    if end >= len(source) or source[end] != ")":
        return None
    compiled = compiled_pattern(pattern)
    if compiled is None:
        return None
    name = f"{prefix}_{len(functions)}"
    functions[name] = _searcher(compiled)
    path = operand.group(1)
    out[:] = [done[:len(done) - len(path)], f"{name}({path})"]
    return end + 1


def _searcher(compiled: Any) -> Callable[[Any], bool]:
    search = compiled.search

    def matches(value: Any) -> bool:
        if type(value) is not str:
            raise TypeError(f"matches() needs a string, not {type(value).__name__}")
        return search(value) is not None

    return matches
