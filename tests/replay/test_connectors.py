"""Connectors reach tools over real loopback servers: HTTP (JSON, Idempotency-Key, dry-run by
header or flag, compensate, transient failures) and MCP (tools/call over streamable HTTP)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from operations.connectors import ConnectorError, ToolResult, connector_for
from runs.models import Tool

from .toolservers import Seen, echo, free_port, mcp_tool_server

pytestmark = pytest.mark.django_db


def make_tool(tenant: Any, name: str = "refund_payment", **fields: Any) -> Tool:
    fields.setdefault("connector", "http")
    return Tool.objects.create(tenant=tenant, name=name, action_class="write", **fields)


def test_an_http_call_sends_json_the_idempotency_key_and_the_bearer_secret(
        acme, tool_server, billing_token):
    url = tool_server.route("/refund", lambda s: (200, {"refund_id": "r-1", "got": s.body}))
    tool = make_tool(acme, endpoint=url, secret_ref="env:BILLING_API_TOKEN")
    result = connector_for(tool).call({"amount": 5}, idempotency_key="key-1", dry_run=False)
    assert result == ToolResult(True, {"refund_id": "r-1", "got": {"amount": 5}}, "succeeded",
                                "", result.latency_ms)
    [seen] = tool_server.requests_to("/refund")
    assert seen.header("Idempotency-Key") == "key-1"
    assert seen.header("Authorization") == f"Bearer {billing_token}"
    assert seen.header("Content-Type") == "application/json"


def test_a_dry_run_is_asked_for_with_the_header_the_tool_declares(acme, tool_server):
    url = tool_server.route("/refund", echo)
    tool = make_tool(acme, endpoint=url, dry_run_via="header", dry_run_name="X-Dry-Run")
    result = connector_for(tool).call({"amount": 5}, idempotency_key=None, dry_run=True)
    assert result.ok
    assert result.output["dry_run"] is True
    [seen] = tool_server.seen
    assert seen.body == {"amount": 5}
    assert seen.header("Idempotency-Key") is None


def test_a_dry_run_is_asked_for_with_the_json_flag_the_tool_declares(acme, tool_server):
    url = tool_server.route("/refund", echo)
    tool = make_tool(acme, endpoint=url, dry_run_via="flag", dry_run_name="simulate")
    connector_for(tool).call({"amount": 5}, idempotency_key="k", dry_run=True)
    assert tool_server.seen[0].body == {"amount": 5, "simulate": True}


def test_no_request_is_sent_when_a_dry_run_is_asked_of_a_tool_without_one(acme, tool_server):
    tool = make_tool(acme, endpoint=tool_server.route("/refund", echo))
    with pytest.raises(ConnectorError, match="declares no dry-run"):
        connector_for(tool).call({"amount": 5}, idempotency_key="k", dry_run=True)
    assert tool_server.seen == []


def test_a_tool_without_a_connector_has_none(acme):
    with pytest.raises(ConnectorError, match="no connector"):
        connector_for(make_tool(acme, connector="none"))


@pytest.mark.parametrize(("status", "expected"), [(503, "transient"), (500, "transient"),
                                                   (409, "failed"), (400, "failed")])
def test_server_errors_are_transient_and_client_errors_failed(acme, tool_server, status,
                                                               expected):
    tool = make_tool(acme, endpoint=tool_server.route("/refund", lambda s: (status, {"e": 1})))
    result = connector_for(tool).call({}, idempotency_key="k", dry_run=False)
    assert (result.ok, result.status) == (False, expected)
    assert str(status) in result.error


def test_a_timeout_is_transient(acme, tool_server):
    release = threading.Event()

    def slow(seen: Seen) -> tuple[int, Any]:
        release.wait(10)
        return 200, {}

    tool = make_tool(acme, endpoint=tool_server.route("/slow", slow), timeout_ms=200)
    try:
        result = connector_for(tool).call({}, idempotency_key="k", dry_run=False)
    finally:
        release.set()
    assert (result.ok, result.status) == (False, "transient")
    assert "200 ms" in result.error


def test_a_refused_connection_is_transient(acme):
    tool = make_tool(acme, endpoint=f"http://127.0.0.1:{free_port()}/gone")
    result = connector_for(tool).call({}, idempotency_key="k", dry_run=False)
    assert (result.ok, result.status) == (False, "transient")
    assert "connection error" in result.error


def test_compensate_posts_the_original_call_to_its_own_endpoint_with_the_key(acme,
                                                                             tool_server):
    tool = make_tool(acme, endpoint=tool_server.route("/refund", echo),
                     supports_rollback=True,
                     compensate_endpoint=tool_server.route("/refund/undo", lambda s: (
                         200, {"reversed": True})))
    result = connector_for(tool).compensate({"amount": 5}, {"refund_id": "r-1"},
                                            idempotency_key="undo-1")
    assert result.ok
    assert result.output == {"reversed": True}
    [seen] = tool_server.requests_to("/refund/undo")
    assert seen.body == {"input": {"amount": 5}, "output": {"refund_id": "r-1"}}
    assert seen.header("Idempotency-Key") == "undo-1"
    assert tool_server.requests_to("/refund") == []


def test_compensate_refuses_a_tool_without_a_compensate_endpoint(acme, tool_server):
    tool = make_tool(acme, endpoint=tool_server.route("/refund", echo))
    with pytest.raises(ConnectorError, match="no compensate endpoint"):
        connector_for(tool).compensate({}, {}, idempotency_key="k")
    assert tool_server.seen == []


def test_a_secret_echoed_by_a_tool_never_reaches_errors_or_outputs(acme, tool_server,
                                                                   billing_token):
    def leaky(seen: Seen) -> tuple[int, Any]:
        return 401, {"error": f"bad token {seen.header('Authorization')}"}

    tool = make_tool(acme, endpoint=tool_server.route("/leaky", leaky),
                     secret_ref="env:BILLING_API_TOKEN")
    result = connector_for(tool).call({}, idempotency_key="k", dry_run=False)
    assert result.status == "failed"
    assert billing_token not in result.error
    assert billing_token not in str(result.output)
    assert "[secret]" in result.error


@pytest.mark.parametrize("filler", [250, 262, 270, 278, 320])  # around the old 300-byte cut
def test_a_secret_at_any_offset_of_a_long_error_body_never_leaks_in_part(
        acme, tool_server, billing_token, filler):
    def leaky(seen: Seen) -> tuple[int, Any]:
        return 400, {"error": "x" * filler + f" {seen.header('Authorization')} tail"}

    tool = make_tool(acme, endpoint=tool_server.route("/leaky", leaky),
                     secret_ref="env:BILLING_API_TOKEN")
    result = connector_for(tool).call({}, idempotency_key="k", dry_run=False)
    assert result.status == "failed"
    assert billing_token[:8] not in result.error
    assert len(result.error) <= 500


def test_an_unset_secret_fails_naming_the_reference_and_sends_nothing(acme, tool_server,
                                                                     monkeypatch):
    monkeypatch.delenv("LEDGER_TENANT_ACME_NOT_THERE_TOKEN", raising=False)
    tool = make_tool(acme, endpoint=tool_server.route("/refund", echo),
                     secret_ref="env:NOT_THERE_TOKEN")
    result = connector_for(tool).call({}, idempotency_key="k", dry_run=False)
    assert (result.ok, result.status) == (False, "failed")
    assert "env:NOT_THERE_TOKEN" in result.error
    assert tool_server.seen == []


def test_the_secrets_backend_is_pluggable_by_a_setting(acme, tool_server, settings):
    settings.LEDGER_SECRETS_BACKEND = "tests.replay.test_connectors.VaultForTests"
    tool = make_tool(acme, endpoint=tool_server.route("/refund", echo),
                     secret_ref="vault:billing/token")
    connector_for(tool).call({}, idempotency_key="k", dry_run=False)
    assert tool_server.seen[0].header("Authorization") == "Bearer from-vault:acme/billing/token"


class VaultForTests:
    """A vault keeps each tenant's secrets under a path of its own."""

    def resolve(self, tenant_slug: str, reference: str) -> str:
        return f"from-vault:{tenant_slug}/{reference.partition(':')[2]}"


def test_a_tool_registry_entry_is_validated(acme):
    tool = Tool(tenant=acme, name="t", connector="http", dry_run_via="header",
                supports_rollback=True, volatile_fields=["ok", 3], secret_ref="Bearer abc")
    with pytest.raises(ValidationError) as caught:
        tool.full_clean()
    assert set(caught.value.message_dict) == {"endpoint", "dry_run_name", "compensate_endpoint",
                                              "volatile_fields", "secret_ref"}


def _billing_mcp() -> tuple[Any, list[dict[str, Any]]]:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    server = MCPServer("billing")
    calls: list[dict[str, Any]] = []

    @server.tool()
    def lookup_invoice(invoice_id: str, dry_run: bool = False) -> dict[str, Any]:
        calls.append({"invoice_id": invoice_id, "dry_run": dry_run})
        return {"invoice_id": invoice_id, "amount_cents": 1200, "dry_run": dry_run}

    @server.tool()
    def void_invoice(invoice_id: str) -> str:
        raise ToolError(f"invoice {invoice_id} is already paid")

    return server, calls


def test_an_mcp_tool_is_called_with_tools_call_and_its_headers(acme, billing_token):
    server, calls = _billing_mcp()
    with mcp_tool_server(server) as serving:
        tool = make_tool(acme, name="lookup_invoice", connector="mcp", endpoint=serving.url,
                         dry_run_via="flag", dry_run_name="dry_run",
                         secret_ref="env:BILLING_API_TOKEN")
        result = connector_for(tool).call({"invoice_id": "inv-7"}, idempotency_key="idem-7",
                                          dry_run=True)
    assert result.ok, result.error
    assert result.output == {"invoice_id": "inv-7", "amount_cents": 1200, "dry_run": True}
    assert calls == [{"invoice_id": "inv-7", "dry_run": True}]
    assert serving.headers
    assert all(h.get("authorization") == f"Bearer {billing_token}" for h in serving.headers)
    assert all(h.get("idempotency-key") == "idem-7" for h in serving.headers)


def test_an_mcp_call_works_from_inside_a_running_event_loop(acme):
    server, _calls = _billing_mcp()
    with mcp_tool_server(server) as serving:
        tool = make_tool(acme, name="lookup_invoice", connector="mcp", endpoint=serving.url)

        async def inside_a_loop() -> ToolResult:
            return connector_for(tool).call({"invoice_id": "inv-8"}, idempotency_key=None,
                                            dry_run=False)

        result = asyncio.run(inside_a_loop())
    assert result.ok
    assert result.output["invoice_id"] == "inv-8"


def test_an_mcp_tool_error_is_a_failure_with_its_reason(acme):
    server, _ = _billing_mcp()
    with mcp_tool_server(server) as serving:
        tool = make_tool(acme, name="void_invoice", connector="mcp", endpoint=serving.url)
        result = connector_for(tool).call({"invoice_id": "inv-9"}, idempotency_key="k",
                                          dry_run=False)
    assert (result.ok, result.status) == (False, "failed")
    assert "already paid" in result.error


def test_an_unreachable_mcp_server_is_transient(acme):
    tool = make_tool(acme, name="lookup_invoice", connector="mcp",
                     endpoint=f"http://127.0.0.1:{free_port()}/mcp", timeout_ms=3000)
    result = connector_for(tool).call({"invoice_id": "x"}, idempotency_key=None, dry_run=False)
    assert (result.ok, result.status) == (False, "transient"), result.error
