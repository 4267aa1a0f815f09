"""A JSON tool server on loopback: what the demo's tools (``ledger_portal.demo_tools``) and the
tests' tools run on. Each route answers a request with (status, JSON body); every request is
kept (method, path, headers, body), so a test can see what the portal sent.

Loopback only: a tool server that answers whoever asks has no place on a shared network.
"""

from __future__ import annotations

import ipaddress
import json
import threading
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

    @property
    def address(self) -> str:
        """host:port, as ``DEMO_TOOLS_ADDR`` takes it."""
        return self.url.removeprefix("http://")


def require_loopback(host: str) -> None:
    """Refuse (ValueError) to serve anywhere but on this machine."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"a tool server listens on loopback only (127.0.0.1), not {host!r}")


def _handler_class(state: ToolServer, log: Callable[[str], None] | None
                   ) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer("GET", None)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode()
            self._answer("POST", body)

        def _answer(self, method: str, body: Any) -> None:
            seen = Seen(method, self.path, dict(self.headers.items()), body)
            with state.lock:
                state.seen.append(seen)
            handler = state.routes.get(self.path)
            status, answer = handler(seen) if handler else (404, {"error": "no such tool"})
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            if log is not None:
                log(f"{self.address_string()} {format % args}")

    return Handler


@contextmanager
def http_tool_server(host: str = "127.0.0.1", port: int = 0,
                     routes: dict[str, Handler] | None = None,
                     log: Callable[[str], None] | None = None) -> Iterator[ToolServer]:
    """Serve ``routes`` on ``host:port`` (port 0: any free one) in a thread while the block
    runs. ``log`` gets one line per request (None: quiet). OSError if the port is taken."""
    require_loopback(host)
    state = ToolServer(url="", routes=dict(routes or {}))
    httpd = ThreadingHTTPServer((host, port), _handler_class(state, log))
    httpd.daemon_threads = True
    state.url = f"http://{host}:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True, name="tool-server")
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
