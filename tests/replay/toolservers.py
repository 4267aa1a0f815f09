"""Real tool servers on loopback for tests: an HTTP JSON tool that records every request it
receives (with its headers), and an MCP server (``mcp``'s MCPServer over streamable HTTP)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any

    def header(self, name: str) -> str | None:
        return {k.lower(): v for k, v in self.headers.items()}.get(name.lower())


# A handler gets the request and answers (status, JSON body).
Handler = Callable[[Seen], tuple[int, Any]]


def echo(seen: Seen) -> tuple[int, Any]:
    return 200, {"echo": seen.body, "dry_run": seen.header("X-Dry-Run") == "true"}


@dataclass
class ToolServer:
    url: str
    seen: list[Seen] = field(default_factory=list)
    routes: dict[str, Handler] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def route(self, path: str, handler: Handler) -> str:
        self.routes[path] = handler
        return self.url + path

    def requests_to(self, path: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path == path]


@contextmanager
def http_tool_server() -> Iterator[ToolServer]:
    server_state = ToolServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode()
            seen = Seen("POST", self.path, dict(self.headers.items()), body)
            with server_state.lock:
                server_state.seen.append(seen)
            handler = server_state.routes.get(self.path)
            status, answer = handler(seen) if handler else (404, {"error": "no such tool"})
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server_state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


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
