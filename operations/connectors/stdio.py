"""The MCP connector over stdio: the portal starts an allowlisted MCP server itself.

The command is the platform operator's (``LEDGER_MCP_STDIO_COMMANDS``, core.mcp_stdio); a
tool only names an entry. The server is started once per replay (``stdio_servers()`` around the
walk; a call outside one starts a server for itself) and always stopped with it:

- Its environment is PATH, a HOME of its own (a fresh temporary folder, also its working
  folder, removed afterwards), the operator's fixed ``env`` of the entry, and the tool's own
  credential in the entry's ``secret_env``. Nothing else of the portal's environment reaches
  it: a small launcher (``LAUNCHER``) drops every other variable before it execs the server.
- Starting and ``initialize`` have ``LEDGER_MCP_STDIO_START_TIMEOUT`` seconds; each call the
  tool's ``timeout_ms``. A server that does not answer in time is killed (its whole process
  group) and the next call starts a fresh one: a stuck server is never trusted with a retry.
  No server outlives the replay's time limit (``LEDGER_REPLAY_TIME_LIMIT``).
- On Linux the launcher asks the kernel to kill the server if the thread that started it dies
  (``PR_SET_PDEATHSIG``), so a worker killed outright leaves no server behind either.

The MCP client is async; each server has an event loop of its own in a thread, holding the
session open between the (sync) calls of a replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import anyio
from django.conf import settings

from core.mcp_stdio import SETTING, StdioCommand, allowed_names_text, allowed_stdio_commands
from core.secrets import SecretError, resolve_secret
from runs.models import DryRunVia

from . import FAILED, TRANSIENT, ConnectorError, ToolResult
from .base import ToolEndpoint
from .mcp import call_outcome

IDEMPOTENCY_META = "idempotency_key"  # in the tools/call request's _meta

# Runs as ``python -I -S -c LAUNCHER <parent pid> <pid file> <kept variables> <argv...>``:
# dies with the thread that started it (Linux), keeps only the variables the portal chose,
# notes its process id (the server's: exec keeps it), then becomes the server.
LAUNCHER = """\
import os, sys
parent, pid_file, kept, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
if sys.platform.startswith("linux"):
    import ctypes, signal
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
if os.getppid() != parent:
    os._exit(70)
env = {k: v for k, v in os.environ.items() if k in kept.split(",")}
with open(pid_file, "w") as f:
    f.write(str(os.getpid()))
os.execvpe(argv[0], argv, env)
"""


class StdioStartError(Exception):
    """The server cannot be started (nothing ran): a retry would not help."""


def _command_for(tool_server: str) -> StdioCommand:
    command = allowed_stdio_commands().get(tool_server)
    if command is None:
        raise StdioStartError(
            f"stdio MCP server {tool_server!r} is not on the platform's allowlist ({SETTING}:"
            f" {allowed_names_text()}); nothing was started")
    return command


FOLDER_PREFIX = "ledger-mcp-"


def sweep_stale_folders() -> int:
    """Remove server folders older than any server may live: what a worker killed outright
    left behind (its server died with it; nobody was left to remove the folder)."""
    from django.conf import settings

    oldest = time.time() - settings.LEDGER_REPLAY_TIME_LIMIT - 60
    removed = 0
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        try:
            stale = folder.is_dir() and folder.stat().st_mtime < oldest and (
                folder.stat().st_uid == os.getuid())
        except OSError:
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


class StdioServer:
    """One running server and its MCP session, driven from sync code."""

    def __init__(self, command: StdioCommand, secret: str = "") -> None:
        self.command = command
        sweep_stale_folders()
        self.root = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{command.name}-"))
        self.home = self.root / "home"
        self.home.mkdir()
        self.pid_file = self.root / "pid"
        self.errlog_path = self.root / "stderr"
        path = os.environ.get("PATH") or os.defpath
        self.env = {**command.env, "PATH": path, "HOME": str(self.home)}
        if command.secret_env and secret:
            self.env[command.secret_env] = secret
        self.executable = shutil.which(command.argv[0], path=path)
        self.broken = False
        self._session: Any = None
        self._ready: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"mcp-stdio-{command.name}")
        self._serving: Any = None
        self._failure: BaseException | None = None

    # -- life ---------------------------------------------------------------------------------

    def start(self, timeout_s: float) -> None:
        """Start the server and initialize the session; raises TimeoutError, StdioStartError
        or what the session raised (the server is stopped then)."""
        if self.executable is None:
            raise StdioStartError(f"stdio MCP server {self.command.name!r}: "
                                  f"{self.command.argv[0]!r} is not found on PATH; nothing "
                                  "was started")
        self._thread.start()
        self._serving = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        ready = asyncio.run_coroutine_threadsafe(self._wait_ready(timeout_s), self._loop)
        ready.result(timeout_s + 5)

    async def _wait_ready(self, timeout_s: float) -> None:
        while self._ready is None:
            await asyncio.sleep(0.005)
        with anyio.fail_after(timeout_s):
            await self._ready.wait()  # set once initialized, or once the serving ended
        if self._session is None:
            raise self._failure or ConnectionError("the server exited before it answered")

    async def _serve(self) -> None:
        from mcp.client.session import ClientSession
        from mcp.client.stdio import StdioServerParameters, stdio_client

        self._ready, self._stop = asyncio.Event(), asyncio.Event()
        kept = ",".join(sorted(self.env))
        params = StdioServerParameters(
            command=sys.executable,
            args=["-I", "-S", "-c", LAUNCHER, str(os.getpid()), str(self.pid_file), kept,
                  str(self.executable), *self.command.argv[1:]],
            env=self.env, cwd=str(self.home))
        try:
            with self.errlog_path.open("w") as errlog, anyio.move_on_after(
                    settings.LEDGER_REPLAY_TIME_LIMIT):
                async with stdio_client(params, errlog=errlog) as (read, write), \
                        ClientSession(read, write) as session:
                    await session.initialize()
                    self._session = session
                    self._ready.set()
                    await self._stop.wait()
        except BaseException as exc:  # kept for the caller waiting on the start
            self._failure = exc
        finally:
            self._session = None
            self.broken = True
            self._ready.set()

    def call_tool(self, name: str, arguments: dict[str, Any], meta: dict[str, Any],
                  timeout_s: float) -> Any:
        """tools/call; raises TimeoutError (the server is killed then) or the session's error."""

        async def call() -> Any:
            session = self._session
            if session is None:
                raise self._failure or ConnectionError("the server has stopped")
            with anyio.fail_after(timeout_s):
                return await session.call_tool(name, arguments, meta=meta or None)

        future = asyncio.run_coroutine_threadsafe(call(), self._loop)
        try:
            return future.result(timeout_s + 5)
        except BaseException as exc:
            if not is_server_answer(exc):  # gone or stuck: never trusted with another call
                self.kill()
            raise

    def stderr_tail(self) -> str:
        try:
            return self.errlog_path.read_text(errors="replace")[-300:].strip()
        except OSError:
            return ""

    # -- death ---------------------------------------------------------------------------------

    def _our_live_child(self) -> int | None:
        """The server's process id while it is still our child (not yet reaped)."""
        try:
            pid = int(self.pid_file.read_text())
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (OSError, ValueError):
            return None
        ppid = int(stat.rpartition(")")[2].split()[1])
        return pid if ppid == os.getpid() else None

    def kill(self) -> None:
        """Kill the server's process group now, then stop the session (which reaps it)."""
        self.broken = True
        pid = self._our_live_child()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # its own group: started in a new session
        self.close()

    def close(self) -> None:
        """Stop the session (stdin closed, then SIGTERM, then SIGKILL: the SDK's shutdown),
        make sure the process is gone and reaped, remove its folder, stop the loop."""
        self.broken = True
        if self._thread.is_alive():
            if self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)
            if self._serving is not None:
                with contextlib.suppress(BaseException):
                    self._serving.result(15)
            pid = self._our_live_child()
            if pid is not None:  # the SDK gave up on it: kill, and reap it ourselves
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                _reap(pid)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _reap(pid: int, seconds: float = 5.0) -> None:
    """Collect a killed child's exit status (bounded: a process stuck in the kernel is left)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped already (by the event loop's child watcher)
            return
        if done:
            return
        time.sleep(0.05)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def is_server_answer(exc: BaseException) -> bool:
    """A JSON-RPC error the server itself answered (an unknown tool, bad arguments), not the
    connection closing or a timeout: the server is fine, and a retry would get the same."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

    leaves = _leaves(exc)
    return all(isinstance(leaf, MCPError) and leaf.error.code not in (
        CONNECTION_CLOSED, REQUEST_TIMEOUT) for leaf in leaves)


class ServerPool:
    """The servers of one replay, one per tool (and credential), started on first use."""

    def __init__(self) -> None:
        self.servers: dict[tuple[Any, ...], StdioServer] = {}

    def get(self, key: tuple[Any, ...]) -> StdioServer | None:
        server = self.servers.get(key)
        if server is not None and server.broken:
            self.servers.pop(key)
            server.close()
            return None
        return server

    def keep(self, key: tuple[Any, ...], server: StdioServer) -> None:
        self.servers[key] = server

    def close(self) -> None:
        while self.servers:
            _key, server = self.servers.popitem()
            try:
                server.close()
            except Exception:  # the others are stopped all the same
                server.kill()


_pool: ContextVar[ServerPool | None] = ContextVar("mcp_stdio_servers", default=None)


@contextlib.contextmanager
def stdio_servers() -> Iterator[ServerPool]:
    """Stdio calls inside share one server per tool; every server is stopped on the way out
    (a return, a pause for approval, an error, a stop)."""
    pool = ServerPool()
    token = _pool.set(pool)
    try:
        yield pool
    finally:
        _pool.reset(token)
        pool.close()


class McpStdioConnector(ToolEndpoint):
    def call(self, arguments: Any, *, idempotency_key: str | None,
             dry_run: bool) -> ToolResult:
        arguments = dict(arguments or {})
        if dry_run:
            if self.tool.dry_run_via == DryRunVia.HEADER:
                raise ConnectorError(f"tool {self.tool.name!r} asks for dry runs with a header, "
                                     "which a stdio server has no way to receive; nothing was "
                                     "sent")
            arguments = self.as_dry_run(arguments, {})
        return self._call_tool(self.tool.remote_name or self.tool.name, arguments,
                               idempotency_key)

    def compensate(self, original_input: Any, original_output: Any, *,
                   idempotency_key: str | None) -> ToolResult:
        name = self.compensate_target()
        return self._call_tool(name, {"input": original_input, "output": original_output},
                               idempotency_key)

    def _credential(self, command: StdioCommand) -> str:
        if not self.tool.secret_ref:
            return ""
        if not command.secret_env:
            raise StdioStartError(
                f"tool {self.tool.name!r} has a secret reference, but stdio MCP server "
                f"{command.name!r} takes no credential (its {SETTING} entry names no "
                "secret_env); nothing was started")
        self._secret = resolve_secret(self.tool.tenant.slug, self.tool.secret_ref)
        return self._secret

    def _server(self) -> tuple[StdioServer, bool]:
        """The replay's server for this tool (started now if need be), and whether it is
        this call's own (to stop after it)."""
        command = _command_for(self.tool.stdio_server)
        secret = self._credential(command)
        pool = _pool.get()
        key = (self.tool.pk, command.name, command.argv, self.tool.secret_ref)
        server = pool.get(key) if pool is not None else None
        if server is not None:
            return server, False
        server = StdioServer(command, secret)
        start_s = settings.LEDGER_MCP_STDIO_START_TIMEOUT
        try:
            server.start(start_s)
        except StdioStartError:
            server.close()
            raise
        except TimeoutError:
            server.kill()
            raise TimeoutError(f"the stdio MCP server {command.name!r} did not start within "
                               f"{start_s} s; it was stopped") from None
        except BaseException as exc:
            tail = server.stderr_tail()
            server.kill()
            raise ConnectionError(f"the stdio MCP server {command.name!r} did not start: "
                                  f"{'; '.join(str(e) or type(e).__name__ for e in _leaves(exc))}"
                                  + (f" (its stderr: {tail})" if tail else "")) from None
        if pool is None:
            return server, True
        pool.keep(key, server)
        return server, False

    def _call_tool(self, name: str, arguments: dict[str, Any],
                   idempotency_key: str | None) -> ToolResult:
        started = time.perf_counter()

        def elapsed() -> float:
            return (time.perf_counter() - started) * 1000

        own = None
        try:
            server, owned = self._server()
            own = server if owned else None
            meta = {IDEMPOTENCY_META: idempotency_key} if idempotency_key else {}
            result = server.call_tool(name, arguments, meta, self.timeout_s)
        except (StdioStartError, SecretError, ConnectorError) as exc:
            return ToolResult(False, None, FAILED, self.clean(str(exc)), elapsed())
        except TimeoutError as exc:
            reason = str(exc) if "did not start" in str(exc) else (
                f"no answer within {self.tool.timeout_ms} ms; the server was stopped")
            return ToolResult(False, None, TRANSIENT, self.clean(reason), elapsed())
        except Exception as exc:  # the MCP stack wraps failures in exception groups
            return self._failure(exc, elapsed())
        finally:
            if own is not None:
                own.close()
        return call_outcome(self, result, elapsed())

    def _failure(self, exc: Exception, elapsed: float) -> ToolResult:
        reason = "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in _leaves(exc))
        status = FAILED if is_server_answer(exc) else TRANSIENT
        return ToolResult(False, None, status, self.clean(f"MCP call failed: {reason}"),
                          elapsed)


__all__ = ["IDEMPOTENCY_META", "McpStdioConnector", "ServerPool", "StdioServer",
           "stdio_servers"]
