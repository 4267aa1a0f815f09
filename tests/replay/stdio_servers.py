"""Tiny stdio MCP servers (the ``mcp`` SDK's MCPServer) that the portal starts in the tests,
as a platform operator would allow them: ``python stdio_servers.py <kind> <pid file>``.

Each appends its process id to the pid file as it starts, so a test can tell how many were
started and check that none is left behind.

- ``report_env``: the tool ``environment`` answers the server's environment and working
  directory (the value of each variable, and its SHA-256 so a scrubbed value can be checked),
  and the idempotency key of the request (its ``_meta``).
- ``hang``: the tool ``wait_forever`` never answers; the process ignores SIGTERM and the end
  of its stdin.
- ``crash``: the tool ``fall_over`` ends the server's process mid-call.
- ``hang_at_start``: never answers at all (not even ``initialize``), ignoring SIGTERM.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from typing import Any

from mcp.server.mcpserver import Context, MCPServer


def report_env() -> None:
    server = MCPServer("report-env")

    @server.tool()
    def environment(ctx: Context) -> dict[str, Any]:
        meta = ctx.request_context.meta or {}
        return {"env": dict(os.environ), "cwd": os.getcwd(), "pid": os.getpid(),
                "sha256": {k: hashlib.sha256(v.encode()).hexdigest()
                           for k, v in os.environ.items()},
                "idempotency_key": meta.get("idempotency_key")}

    server.run("stdio")


def hang() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    server = MCPServer("hang")

    @server.tool()
    def wait_forever() -> str:
        while True:
            time.sleep(1)

    try:
        server.run("stdio")
    finally:  # stuck for good: not even the end of its stdin stops it
        while True:
            time.sleep(1)


def crash() -> None:
    server = MCPServer("crash")

    @server.tool()
    def fall_over() -> str:
        os._exit(3)

    server.run("stdio")


def hang_at_start() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    kind, pid_file = sys.argv[1], sys.argv[2]
    with open(pid_file, "a") as pids:
        pids.write(f"{os.getpid()}\n")
    {"report_env": report_env, "hang": hang, "hang_at_start": hang_at_start,
     "crash": crash}[kind]()
