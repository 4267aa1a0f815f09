"""How the portal reaches a tool itself (replay, rollback): HTTP or MCP (streamable HTTP or
a stdio server from the platform's allowlist).

``connector_for(tool)`` gives the tool's connector; ``call`` sends arguments (for real or as a
dry run, with the original idempotency key) and ``compensate`` asks the tool to undo an earlier
call. Both answer a ``ToolResult``; what went wrong is a readable reason that never contains a
secret. ``transient`` means worth retrying (timeout, 5xx, connection error).
"""

from __future__ import annotations

from collections.abc import Callable
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


class SendsPrepared(Protocol):
    """A connector reached over the network (HTTP, MCP at a URL) can split a call in two:
    ``prepared`` does what may read the database (the credential) and checks the destination
    in the calling thread; the function it returns only sends, so it may run on another
    thread. The HTTP connector's ``call`` is the two run back to back."""

    def prepared(self, arguments: Any, *, idempotency_key: str | None,
                 dry_run: bool) -> Callable[[], ToolResult]: ...


def concurrent_dry_runs(tool: Tool) -> int:
    """How many dry runs of ``tool`` a sandbox replay may have in flight at once: the bound the
    tool declares (``dry_run_concurrency``) when it has a dry run reached over the network, 1
    otherwise (a stdio server answers one call at a time)."""
    from runs.models import ConnectorKind

    if (tool.dry_run_concurrency > 1 and tool.has_dry_run and tool.endpoint
            and not tool.stdio_server and tool.connector in (ConnectorKind.HTTP,
                                                             ConnectorKind.MCP)):
        return int(tool.dry_run_concurrency)
    return 1


def prepared_dry_run(tool: Tool, arguments: Any) -> Callable[[], ToolResult]:
    """The dry run of ``arguments`` made ready in this thread (destination checked, credential
    resolved, dry-run form of the arguments; ConnectorError as ``call`` raises it), as a
    function that sends it and needs no database."""
    connector = connector_for(tool)
    if not hasattr(connector, "prepared"):
        raise ConnectorError(f"tool {tool.name!r}: its connector sends one call at a time")
    sender: SendsPrepared = connector  # type: ignore[assignment]
    return sender.prepared(arguments, idempotency_key=None, dry_run=True)


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
           "ConnectorError", "SendsPrepared", "ToolResult", "concurrent_dry_runs",
           "connector_for", "prepared_dry_run"]
