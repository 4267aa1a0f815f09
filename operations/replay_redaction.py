"""Redacting what a replayed call produced, like the recorded call's output: the output itself
with the call's declared labels, and each difference's recorded and replayed values as they
would be redacted in place in the output. Pure Python over :class:`runs.redaction.Redactor`
(the replay page, its reports and audit exports use it)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from runs.redaction import Redactor, marker

_PART = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")
# An item keeps its position (an exact ``[3]`` label matches) unless that would mean a long list
# of fillers; then it is the only item (``[*]`` labels still match).
_SPREAD = 1000


def _position(index: str) -> int:
    return int(index) if int(index) < _SPREAD else 0


def _is_marker(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"redacted", "path", "reason"}


def redact_at(redactor: Redactor, labels: Mapping[str, str] | None, path: str,
              value: Any) -> Any:
    """Redact a value found at ``path`` (``$.a.b[2]``) of an output, as it would be redacted in
    place: it is put back at its path (list items as items, so ``[*]`` labels match) and the
    whole is redacted; a marker on an ancestor covers it."""
    if value is None or not path.startswith("$"):
        return redactor.redact(value, "output", labels)
    keys: list[str | int] = [name or _position(index) for name, index in _PART.findall(path[1:])]
    nested: Any = value
    for key in reversed(keys):
        nested = {key: nested} if isinstance(key, str) else [None] * key + [nested]
    redacted = redactor.redact(nested, "output", labels)
    for key in keys:
        if _is_marker(redacted):
            return redacted
        if isinstance(key, str) and isinstance(redacted, dict):
            redacted = redacted.get(key)
        elif isinstance(key, int) and isinstance(redacted, list) and key < len(redacted):
            redacted = redacted[key]
        else:  # not where it was put: nothing of it is shown
            return marker("secret", path, "declared")
    return redacted


def redact_divergence(redactor: Redactor, labels: Mapping[str, str] | None,
                      divergence: Any) -> Any:
    """A replayed step's differences (``operations.replay_compare``: ``path``, ``change``,
    ``recorded``, ``replayed``) with each value redacted as it would be in place in the output
    (with the recorded call's labels). Any other key, and anything that is not a list of
    differences, is redacted as output content."""
    if not isinstance(divergence, list):
        return redactor.redact(divergence, "output", labels)
    redacted = []
    for entry in divergence:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            redacted.append(redactor.redact(entry, "output", labels))
            continue
        redacted.append({
            key: value if key == "path"
            else redact_at(redactor, labels, entry["path"], value)
            if key in ("recorded", "replayed")
            else redactor.redact(value, "output", labels)
            for key, value in entry.items()})
    return redacted
