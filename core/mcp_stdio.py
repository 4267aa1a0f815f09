"""The stdio MCP servers the platform operator allows (``LEDGER_MCP_STDIO_COMMANDS``).

A tenant's tool never carries a command: it names one entry of this allowlist, which only the
operator sets (settings, environment). An entry is an argv list, or an object::

    {"time": ["mcp-server-time", "--local-timezone", "UTC"],
     "github": {"argv": ["github-mcp-server", "stdio"],
                "secret_env": "GITHUB_PERSONAL_ACCESS_TOKEN",
                "env": {"GITHUB_TOOLSETS": "repos"}}}

``secret_env`` is the variable the tool's own credential (its secret reference, resolved in its
tenant's namespace) is handed in; a server without one gets no credential. ``env`` holds fixed,
non-secret values the operator wants the server to see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured

SETTING = "LEDGER_MCP_STDIO_COMMANDS"
SERVER_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Set by the portal itself for every server; an entry cannot override them.
RESERVED_ENV = frozenset({"PATH", "HOME"})


@dataclass(frozen=True)
class StdioCommand:
    name: str
    argv: tuple[str, ...]
    secret_env: str = ""
    env: dict[str, str] = field(default_factory=dict)


def _entry(name: str, value: Any) -> StdioCommand:
    where = f"{SETTING}[{name!r}]"
    if not isinstance(name, str) or not SERVER_NAME.match(name):
        raise ImproperlyConfigured(f"{SETTING}: {name!r} is not a server name (lower-case "
                                   "letters, digits, '.', '_', '-'; at most 64)")
    if isinstance(value, list):
        value = {"argv": value}
    if not isinstance(value, dict) or set(value) - {"argv", "secret_env", "env"}:
        raise ImproperlyConfigured(f"{where} is an argv list or an object with argv, "
                                   "secret_env and env")
    argv, secret_env, env = value.get("argv"), value.get("secret_env") or "", value.get(
        "env") or {}
    if not isinstance(argv, list) or not argv or not all(
            isinstance(a, str) and a and "\0" not in a for a in argv):
        raise ImproperlyConfigured(f"{where}: argv is a non-empty list of strings")
    if secret_env and (not isinstance(secret_env, str) or not ENV_NAME.match(secret_env)
                       or secret_env in RESERVED_ENV):
        raise ImproperlyConfigured(f"{where}: secret_env is an environment variable name "
                                   "other than PATH and HOME")
    if not isinstance(env, dict) or not all(
            isinstance(k, str) and ENV_NAME.match(k) and k not in RESERVED_ENV
            and k != secret_env and isinstance(v, str) for k, v in env.items()):
        raise ImproperlyConfigured(f"{where}: env maps variable names (not PATH, HOME or the "
                                   "secret_env) to strings")
    return StdioCommand(name, tuple(argv), secret_env, dict(env))


def parse_stdio_commands(value: Any) -> dict[str, StdioCommand]:
    """The allowlist from its JSON form; ImproperlyConfigured naming what is wrong."""
    if not value:
        return {}
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f"{SETTING} is a JSON object: server name -> argv list "
                                   'or {"argv": [...], "secret_env": ..., "env": {...}}')
    return {name: _entry(name, entry) for name, entry in value.items()}


def allowed_stdio_commands() -> dict[str, StdioCommand]:
    """The allowlist as configured now."""
    from django.conf import settings

    return parse_stdio_commands(getattr(settings, SETTING, {}))


def allowed_names_text() -> str:
    names = sorted(allowed_stdio_commands())
    return ", ".join(names) if names else "none: the platform operator allows no stdio server"


__all__ = ["SETTING", "StdioCommand", "allowed_names_text", "allowed_stdio_commands",
           "parse_stdio_commands"]
