"""Real tool servers on loopback for tests: an HTTP JSON tool that records every request it
receives (with its headers; ``ledger_portal.tool_server``, which the demo's tools run on too),
and an MCP server (``mcp``'s MCPServer over streamable HTTP)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ledger_portal.tool_server import Handler, Seen, ToolServer, echo, http_tool_server

__all__ = ["Handler", "McpServing", "Seen", "ToolServer", "echo", "free_port",
           "http_tool_server", "mcp_tool_server"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class McpServing:
    url: str
    headers: list[dict[str, str]] = field(default_factory=list)  # of every HTTP request


@contextmanager
def mcp_tool_server(server: Any) -> Iterator[McpServing]:
    """Serve an MCPServer over streamable HTTP on a loopback port, recording the headers of
    every HTTP request it receives."""
    import uvicorn

    port = free_port()
    serving = McpServing(url=f"http://127.0.0.1:{port}/mcp")
    inner = server.streamable_http_app(json_response=True, stateless_http=True,
                                       host="127.0.0.1")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            serving.headers.append({k.decode().lower(): v.decode()
                                    for k, v in scope["headers"]})
        await inner(scope, receive, send)

    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                       lifespan="on"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the MCP server did not start within 20 s")
        time.sleep(0.02)
    try:
        yield serving
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
