"""The HTTP connector: JSON in and out, ``Idempotency-Key``, dry-run by header or flag."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx2
import orjson

from core import egress
from core.egress import EgressRefused
from core.secrets import SecretError

from . import FAILED, SUCCEEDED, TRANSIENT, ToolResult
from .base import ToolEndpoint


def parse_body(content: bytes) -> Any:
    if not content:
        return None
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return content.decode("utf-8", errors="replace")


class HttpConnector(ToolEndpoint):
    def call(self, arguments: Any, *, idempotency_key: str | None,
             dry_run: bool) -> ToolResult:
        return self.prepared(arguments, idempotency_key=idempotency_key, dry_run=dry_run)()

    def prepared(self, arguments: Any, *, idempotency_key: str | None,
                 dry_run: bool) -> Callable[[], ToolResult]:
        try:
            headers = self.prepare(self.tool.endpoint, idempotency_key)
        except (SecretError, EgressRefused) as exc:
            return partial(self.refusal, exc)
        if dry_run:
            arguments = self.as_dry_run(arguments, headers)
        return partial(self._post, self.tool.endpoint, arguments, headers)

    def compensate(self, original_input: Any, original_output: Any, *,
                   idempotency_key: str | None) -> ToolResult:
        url = self.compensate_target()
        try:
            headers = self.prepare(url, idempotency_key)
        except (SecretError, EgressRefused) as exc:
            return self.refusal(exc)
        return self._post(url, {"input": original_input, "output": original_output}, headers)

    def _post(self, url: str, body: Any, headers: dict[str, str]) -> ToolResult:
        started = time.perf_counter()

        def elapsed() -> float:
            return (time.perf_counter() - started) * 1000

        try:
            response = egress.post(url, content=orjson.dumps(body), headers=headers,
                                   timeout=self.timeout_s)
        except EgressRefused as exc:  # checked again at connect time, or the answer too big
            return ToolResult(False, None, FAILED, self.clean(str(exc)), elapsed())
        except httpx2.TimeoutException:
            return ToolResult(False, None, TRANSIENT,
                              f"no answer within {self.tool.timeout_ms} ms", elapsed())
        except httpx2.TransportError as exc:
            return ToolResult(False, None, TRANSIENT,
                              self.clean(f"connection error: {type(exc).__name__}: {exc}"),
                              elapsed())
        code = response.status_code
        if 300 <= code < 400:  # never followed: a tool answers where it was registered
            return ToolResult(False, None, FAILED, self.clean(
                f"the tool answered HTTP {code} (a redirect to "
                f"{response.headers.get('location', '?')}), which is not followed"), elapsed())
        output = self.clean_output(parse_body(response.content))
        if code >= 400:
            # Scrubbed whole, then cut (by ``clean``): a cut first could split the secret
            # and let its beginning through.
            detail = response.content.decode("utf-8", errors="replace")
            return ToolResult(False, output, TRANSIENT if code >= 500 else FAILED,
                              self.clean(f"the tool answered HTTP {code}: {detail}"), elapsed())
        return ToolResult(True, output, SUCCEEDED, "", elapsed())
