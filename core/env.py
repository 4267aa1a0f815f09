"""Strict readers for settings that come from the environment.

A bad value is an ``ImproperlyConfigured`` naming the variable, never a silent default.
Every reader also accepts ``NAME_FILE`` pointing at a file holding the value (for secrets
mounted by an orchestrator).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str | None:
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_name!r} cannot be read: {exc}") from exc
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no)")


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = env_str(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def read_or_create_secret(path: Path) -> str:
    """Return the secret stored at ``path``, creating a random one (mode 0600) if missing."""
    import secrets

    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(50)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)
    return value


def env_json(name: str, default: Any) -> Any:
    """A JSON value (e.g. a per-tenant mapping); bad JSON names the variable."""
    import json

    raw = env_str(name)
    if raw is None or not raw.strip():
        return default
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is not valid JSON: {exc}") from exc


def parse_destination(entry: str) -> tuple[str, int | None]:
    """One ``LEDGER_EGRESS_ALLOW`` entry -> (host name, IP address or CIDR network; port or None).

    Accepted: ``billing.internal``, ``billing.internal:8443``, ``10.0.0.0/8``, ``127.0.0.1``,
    ``127.0.0.1:8181``, ``::1``, ``[::1]:8181``, ``fd00::/8``. Raises ValueError naming the
    entry; host names come back lower-cased, networks in their canonical form.
    """
    import ipaddress
    import re

    text = entry.strip().lower()
    host, port = text, None
    if text.startswith("["):
        if "]" not in text:
            raise ValueError(f"{entry!r}: an IPv6 address in brackets needs its closing ]")
        host, _, rest = text[1:].partition("]")
        port = _port(entry, rest.removeprefix(":")) if rest else None
        if rest and not rest.startswith(":"):
            raise ValueError(f"{entry!r} is not host, host:port or a CIDR")
    elif text.count(":") == 1:
        host, _, raw_port = text.partition(":")
        port = _port(entry, raw_port)
    try:
        if "/" in host:
            if port is not None:
                raise ValueError(f"{entry!r}: a CIDR range takes no port")
            return str(ipaddress.ip_network(host, strict=True)), None
        return str(ipaddress.ip_address(host)), port
    except ValueError as exc:
        if "/" in host or ":" in host:
            raise ValueError(f"{entry!r} is not a valid address or CIDR range ({exc})") from None
    if not re.fullmatch(r"[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*",
                        host.rstrip(".")):
        raise ValueError(f"{entry!r} is not host, host:port or a CIDR")
    return host.rstrip("."), port


def _port(entry: str, raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
    return int(raw)


def env_destinations(name: str) -> list[str]:
    """A comma-separated list of allowed destinations (see ``parse_destination``); a bad entry
    is an ImproperlyConfigured naming it."""
    entries = env_list(name, [])
    for entry in entries:
        try:
            parse_destination(entry)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{name}: {exc}") from None
    return entries
