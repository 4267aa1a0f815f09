"""How the portal reaches a tool itself (replay, rollback): HTTP or MCP (streamable HTTP or
a stdio server from the platform's allowlist).

``connector_for(tool)`` gives the tool's connector; ``call`` sends arguments (for real or as a
dry run, with the original idempotency key) and ``compensate`` asks the tool to undo an earlier
call. Both answer a ``ToolResult``; what went wrong is a readable reason that never contains a
secret. ``transient`` means worth retrying (timeout, 5xx, connection error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from runs.models import Tool

SUCCEEDED, FAILED, TRANSIENT = "succeeded", "failed", "transient"
IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class ToolResult:
    ok: bool                 # the tool answered with success
    output: Any              # parsed JSON output (or MCP structured/text content)
    status: str              # "succeeded" | "failed" | "transient"
    error: str = ""          # a readable reason, never containing secrets
    latency_ms: float = 0.0


class ConnectorError(Exception):
    """The tool cannot be reached this way (no connector, no dry-run, no compensate): nothing
    was sent."""


class Connector(Protocol):
    def call(self, arguments: Any, *, idempotency_key: str | None,
             dry_run: bool) -> ToolResult: ...

    def compensate(self, original_input: Any, original_output: Any, *,
                   idempotency_key: str | None) -> ToolResult: ...


def connector_for(tool: Tool) -> Connector:
    from runs.models import ConnectorKind

    if tool.connector == ConnectorKind.HTTP and tool.endpoint:
        from .http import HttpConnector

        return HttpConnector(tool)
    if tool.connector == ConnectorKind.MCP and tool.stdio_server:
        from .stdio import McpStdioConnector

        return McpStdioConnector(tool)
    if tool.connector == ConnectorKind.MCP and tool.endpoint:
        from .mcp import McpConnector

        return McpConnector(tool)
    raise ConnectorError(f"tool {tool.name!r} has no connector configured")


__all__ = ["FAILED", "IDEMPOTENCY_HEADER", "SUCCEEDED", "TRANSIENT", "Connector",
           "ConnectorError", "ToolResult", "connector_for"]
