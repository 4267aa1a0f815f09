"""The MCP connector: ``tools/call`` on a streamable-HTTP MCP server (stdio servers: stdio.py).

The MCP client is async; the portal's callers (Celery tasks, services, the CLI) are not. Each
call runs the client to completion on an event loop of its own: ``asyncio.run`` when the
calling thread has no loop, a short-lived worker thread when it has one (never nesting loops).
The credential and the idempotency key travel as HTTP headers of the transport.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import anyio
import httpx2

from core import egress
from core.egress import EgressRefused
from core.secrets import SecretError

from . import FAILED, SUCCEEDED, TRANSIENT, ToolResult
from .base import ToolEndpoint

T = TypeVar("T")


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine from sync code, whether or not this thread already runs a loop."""

    def run() -> T:
        async def main() -> T:
            return await factory()

        return asyncio.run(main())

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mcp-call") as pool:
        return pool.submit(run).result()


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError | httpx2.TimeoutException | httpx2.TransportError | OSError):
        return True
    return isinstance(exc, httpx2.HTTPStatusError) and exc.response.status_code >= 500


def content_output(result: Any) -> Any:
    """The answer a tools/call result carries (``operations.mcp_output``), error or not."""
    from ..mcp_output import mcp_answer

    blocks = [block.model_dump(by_alias=True, mode="json", exclude_none=True)
              for block in result.content]
    structured = getattr(result, "structured_content", None)
    return mcp_answer({"content": blocks} | (
        {"structuredContent": structured} if structured is not None else {}))


def call_outcome(endpoint: ToolEndpoint, result: Any, elapsed_ms: float) -> ToolResult:
    """The ToolResult of a tools/call answer, the credential taken out."""
    output = endpoint.clean_output(content_output(result))
    if result.is_error:
        return ToolResult(False, output, FAILED,
                          endpoint.clean(f"the tool reported an error: {output}"), elapsed_ms)
    return ToolResult(True, output, SUCCEEDED, "", elapsed_ms)


class McpConnector(ToolEndpoint):
    def call(self, arguments: Any, *, idempotency_key: str | None,
             dry_run: bool) -> ToolResult:
        return self.prepared(arguments, idempotency_key=idempotency_key, dry_run=dry_run)()

    def prepared(self, arguments: Any, *, idempotency_key: str | None,
                 dry_run: bool) -> Callable[[], ToolResult]:
        try:
            headers = self.prepare(self.tool.endpoint, idempotency_key)
        except (SecretError, EgressRefused) as exc:
            return partial(self.refusal, exc)
        arguments = dict(arguments or {})
        if dry_run:
            arguments = self.as_dry_run(arguments, headers)
        return partial(self._call_tool, self.tool.remote_name or self.tool.name, arguments,
                       headers)

    def compensate(self, original_input: Any, original_output: Any, *,
                   idempotency_key: str | None) -> ToolResult:
        name = self.compensate_target()
        try:
            headers = self.prepare(self.tool.endpoint, idempotency_key)
        except (SecretError, EgressRefused) as exc:
            return self.refusal(exc)
        return self._call_tool(name, {"input": original_input, "output": original_output},
                               headers)

    def _call_tool(self, name: str, arguments: dict[str, Any],
                   headers: dict[str, str]) -> ToolResult:
        from mcp.client.session import ClientSession
        from mcp.client.streamable_http import streamable_http_client

        timeout = self.timeout_s
        headers.pop("Content-Type", None)  # the transport sets its own
        headers.pop("Accept", None)

        async def call() -> Any:
            with anyio.fail_after(timeout):
                async with egress.async_client(headers, timeout) as http, \
                        streamable_http_client(self.tool.endpoint, http_client=http) as (
                            read, write), \
                        ClientSession(read, write, read_timeout_seconds=timeout) as session:
                    await session.initialize()
                    return await session.call_tool(name, arguments)

        started = time.perf_counter()
        try:
            result = run_sync(call)
        except Exception as exc:  # the MCP stack wraps failures in exception groups
            elapsed = (time.perf_counter() - started) * 1000
            leaves = _leaves(exc)
            if any(isinstance(leaf, TimeoutError) for leaf in leaves):
                return ToolResult(False, None, TRANSIENT,
                                  f"no answer within {self.tool.timeout_ms} ms", elapsed)
            refused = [leaf for leaf in leaves if isinstance(leaf, EgressRefused)]
            if refused:  # checked again at connect time, or an answer too big
                return ToolResult(False, None, FAILED, self.clean(str(refused[0])), elapsed)
            reason = "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in leaves)
            status = TRANSIENT if any(_is_transient(leaf) for leaf in leaves) else FAILED
            return ToolResult(False, None, status, self.clean(f"MCP call failed: {reason}"),
                              elapsed)
        return call_outcome(self, result, (time.perf_counter() - started) * 1000)
