"""One check for every JSON payload the portal accepts: nothing stored can break a page later.

Refused anywhere in a payload (values and object keys alike), each with the path that names it:

- integers outside the signed 64-bit range (they were stored rounded or overflowed on read),
  and floats of integral value outside it (a JSON store may hand them back as such integers);
- NUL characters (PostgreSQL text and jsonb cannot hold them) and lone surrogates (not UTF-8);
- nesting deeper than ``MAX_DEPTH`` containers counted from the document's root.

External ids (run, agent, call, step ids, refs, idempotency keys) are restricted to
``EXTERNAL_ID_PATTERN`` so they are safe in URLs, headers, file names and log lines.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from django.core.validators import RegexValidator

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_DEPTH = 64
EXTERNAL_ID_CHARS = "A-Za-z0-9._:@-"
EXTERNAL_ID_PATTERN = re.compile(rf"^[{EXTERNAL_ID_CHARS}]{{1,200}}$")
EXTERNAL_ID_RULE = f"1 to 200 characters from [{EXTERNAL_ID_CHARS}]"

#: for Django and DRF fields holding an external id
external_id_validator = RegexValidator(EXTERNAL_ID_PATTERN, message=f"an id is {EXTERNAL_ID_RULE}")

Loc = tuple[int | str, ...]


def is_external_id(value: str) -> bool:
    return EXTERNAL_ID_PATTERN.match(value) is not None


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "NUL characters are not accepted"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "lone surrogates are not accepted (the text is not valid Unicode)"
    return None


def _surely_safe(value: Any) -> bool:
    """True only when ``value`` certainly has no unsafe part; False means "walk it".

    An ingestion batch holds tens of thousands of strings: the exact walk, which builds every
    location as it goes, took a quarter of ingestion's time. orjson serializes in C and already
    refuses lone surrogates in keys and values (and integers beyond 64 bits), and writes NULs as
    ``\\u0000``; so this pass skips strings and only looks at depth and numbers. Anything
    unusual (another type, text that merely contains that escape) goes to the exact walk, which
    alone names locations and reasons."""
    try:
        blob = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return False
    if b"\\u0000" in blob:
        return False
    stack: list[tuple[Any, int]] = [([value], -1)]
    while stack:
        container, depth = stack.pop()
        if depth >= MAX_DEPTH:
            return False
        for child in container.values() if type(container) is dict else container:
            kind = type(child)
            if kind is str or kind is bool or child is None:
                continue
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is int:
                if not INT64_MIN <= child <= INT64_MAX:
                    return False
            elif kind is float:
                if child.is_integer() and not INT64_MIN < child < INT64_MAX:
                    return False
            else:
                return False
    return True


def unsafe_parts(value: Any, loc: Loc = ()) -> list[tuple[Loc, str]]:
    """Every unsafe part of ``value`` as ``(location, reason)``; empty when all is safe."""
    if _surely_safe(value):
        return []
    problems: list[tuple[Loc, str]] = []
    # An explicit stack: a hostile document must not exhaust Python's recursion either.
    stack: list[tuple[Any, Loc, int]] = [(value, loc, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                problems.append((where, f"nested deeper than {MAX_DEPTH} levels"))
                continue
            if isinstance(item, dict):
                for key, child in item.items():
                    problem = _string_problem(key) if isinstance(key, str) else None
                    if problem:
                        problems.append((where, f"an object key: {problem}"))
                        continue
                    stack.append((child, (*where, key), depth + 1))
            else:
                stack.extend((child, (*where, i), depth + 1) for i, child in enumerate(item))
        elif isinstance(item, str):
            problem = _string_problem(item)
            if problem:
                problems.append((where, problem))
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                problems.append((where, "integers are accepted from -2^63 to 2^63-1"))
        # strict bounds for floats: one near -2^63 may be a rounded integer just beyond it
        elif isinstance(item, float) and item.is_integer() and not INT64_MIN < item < INT64_MAX:
            problems.append((where, "numbers of integral value are accepted from -2^63 "
                                    "to 2^63-1"))
    problems.sort(key=lambda p: [str(part) for part in p[0]])
    return problems


def dotted(loc: Loc) -> str:
    """``('data', 'a', 0)`` -> ``data.a[0]``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(body)"


def unsafe_paths(value: Any) -> dict[str, str]:
    """``{path: reason}`` for every unsafe part of a request body (for DRF's 400 answers)."""
    found: dict[str, str] = {}
    for loc, reason in unsafe_parts(value):
        found.setdefault(dotted(loc), reason)
    return found
