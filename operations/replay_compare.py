"""Comparing a replayed tool output with the recorded one.

Both sides are normalised first: key order does not matter, and the tool's volatile fields
(timestamps, generated ids) are dropped. A volatile field is a key name matched anywhere
(``created_at``) or a JSON path from the root (``$.receipt.id``, ``$.items[*].ts``,
``$.*.etag``). The differences come back as a list of ``{"path", "change", "recorded",
"replayed"}`` entries, ``change`` being ``changed``, ``added`` or ``removed``.

An MCP tool's outputs are reduced to the answer they carry first (``operations.mcp_output``):
a JSON text block and structuredContent of the same JSON, annotations and ``_meta`` are not
differences.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_SEGMENT = re.compile(r"\.([^.\[\]]+)|\[(\*|\d+)\]")
WILDCARD = "*"


@dataclass(frozen=True)
class Volatile:
    keys: frozenset[str]
    paths: tuple[tuple[str, ...], ...]

    @classmethod
    def parse(cls, fields: Sequence[str]) -> Volatile:
        keys, paths = set(), []
        for field in fields:
            if field.startswith("$"):
                paths.append(tuple(a or b for a, b in _SEGMENT.findall(field[1:])))
            else:
                keys.add(field)
        return cls(frozenset(keys), tuple(paths))

    def drops(self, key: str, path: tuple[str, ...]) -> bool:
        if key in self.keys:
            return True
        return any(len(p) == len(path) and all(a in (WILDCARD, b) for a, b in zip(
            p, path, strict=True)) for p in self.paths)


def normalise(value: Any, volatile: Volatile, path: tuple[str, ...] = ()) -> Any:
    """``value`` without its volatile fields, dict keys sorted."""
    if isinstance(value, dict):
        return {k: normalise(v, volatile, (*path, str(k))) for k, v in sorted(value.items())
                if not volatile.drops(str(k), (*path, str(k)))}
    if isinstance(value, list):
        return [normalise(v, volatile, (*path, str(i))) for i, v in enumerate(value)]
    return value


def _path_text(path: tuple[str, ...]) -> str:
    return "$" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in path)


def diff(recorded: Any, replayed: Any, path: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The differences between two normalised values, depth first."""
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        found: list[dict[str, Any]] = []
        for key in sorted(set(recorded) | set(replayed)):
            sub = (*path, str(key))
            if key not in replayed:
                found.append({"path": _path_text(sub), "change": "removed",
                              "recorded": recorded[key], "replayed": None})
            elif key not in recorded:
                found.append({"path": _path_text(sub), "change": "added", "recorded": None,
                              "replayed": replayed[key]})
            else:
                found += diff(recorded[key], replayed[key], sub)
        return found
    if isinstance(recorded, list) and isinstance(replayed, list) and len(recorded) == len(
            replayed):
        return [d for i, (a, b) in enumerate(zip(recorded, replayed, strict=True))
                for d in diff(a, b, (*path, str(i)))]
    if recorded == replayed and type(recorded) is type(replayed):
        return []
    return [{"path": _path_text(path), "change": "changed", "recorded": recorded,
             "replayed": replayed}]


def compare_outputs(recorded: Any, replayed: Any, volatile_fields: Sequence[str], *,
                    mcp: bool = False) -> list[dict[str, Any]]:
    """``mcp``: the outputs of an MCP tool, compared as the answers they carry."""
    if mcp:
        from .mcp_output import mcp_answer

        recorded, replayed = mcp_answer(recorded), mcp_answer(replayed)
    volatile = Volatile.parse(volatile_fields)
    return diff(normalise(recorded, volatile), normalise(replayed, volatile))
