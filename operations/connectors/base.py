"""What the HTTP and MCP connectors share: headers, the credential, dry-run requests."""

from __future__ import annotations

from typing import Any

import orjson

from core.egress import EgressRefused, check_url
from core.secrets import SecretError, resolve_secret, scrub
from runs.models import DryRunVia, Tool

from . import FAILED, IDEMPOTENCY_HEADER, ConnectorError, ToolResult


class ToolEndpoint:
    def __init__(self, tool: Tool) -> None:
        self.tool = tool
        self._secret = ""

    @property
    def timeout_s(self) -> float:
        return max(self.tool.timeout_ms, 1) / 1000

    def prepare(self, url: str, idempotency_key: str | None) -> dict[str, str]:
        """The request headers for ``url``: the destination is checked against the egress
        allow list first (raises EgressRefused), so a refused one never even gets the
        credential resolved; then the credential (raises SecretError)."""
        check_url(url)
        return self.headers(idempotency_key)

    def headers(self, idempotency_key: str | None) -> dict[str, str]:
        """Request headers; resolves the credential now (raises SecretError)."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.tool.secret_ref:
            self._secret = resolve_secret(self.tool.tenant.slug, self.tool.secret_ref)
            headers["Authorization"] = f"Bearer {self._secret}"
        if idempotency_key:
            headers[IDEMPOTENCY_HEADER] = idempotency_key
        return headers

    def as_dry_run(self, arguments: Any, headers: dict[str, str]) -> Any:
        """The arguments (and headers, changed in place) that ask the tool for a dry run."""
        tool = self.tool
        if not tool.has_dry_run:
            raise ConnectorError(f"tool {tool.name!r} declares no dry-run; nothing was sent")
        if tool.dry_run_via == DryRunVia.HEADER:
            headers[tool.dry_run_name] = "true"
            return arguments
        if not isinstance(arguments, dict):
            raise ConnectorError(f"tool {tool.name!r} asks for dry runs with a JSON flag but "
                                 "the arguments are not an object; nothing was sent")
        return {**arguments, tool.dry_run_name: True}

    def compensate_target(self) -> str:
        if not self.tool.can_compensate:
            raise ConnectorError(f"tool {self.tool.name!r} has no compensate endpoint; "
                                 "nothing was sent")
        return self.tool.compensate_endpoint

    def clean(self, text: str) -> str:
        """A reason fit for logs and pages: no secret, bounded length."""
        return scrub(text, self._secret)[:500]

    def clean_output(self, output: Any) -> Any:
        """The output with the credential taken out, should a tool echo it back."""
        if not self._secret or output is None:
            return output
        dumped = orjson.dumps(output).decode()
        if self._secret not in dumped:
            return output
        return orjson.loads(scrub(dumped, orjson.dumps(self._secret).decode()[1:-1]))

    @staticmethod
    def refusal(exc: SecretError | EgressRefused) -> ToolResult:
        """A credential or destination the platform does not allow: nothing was sent, and a
        retry would not change that."""
        return ToolResult(ok=False, output=None, status=FAILED, error=str(exc))
