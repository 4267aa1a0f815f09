"""Outbound calls go only where the platform operator allowed (LEDGER_EGRESS_ALLOW), judged on
the resolved address at connect time; special-purpose addresses need an entry of their own;
redirects are not followed; answers are size-capped. Every outbound path (HTTP and MCP
connectors, compensate hooks, OPA, both webhooks) uses the one guard, and a refusal is a clear
error recorded where the call was (replay step, rollback, decision, delivery)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

from core.egress import EgressRefused, allowed_address, check_url
from core.env import env_destinations
from operations.connectors import connector_for
from operations.models import Replay, ReplayStep, Rollback
from runs.models import Tool
from tests.replay.scenario import RUN_ID, allow_everything, recorded_run, walk, wire_tools
from tests.replay.toolservers import echo, mcp_tool_server

from .conftest import PLANTED_SECRET_KEY, leaked

pytestmark = pytest.mark.django_db


def http_tool(tenant: Any, endpoint: str, **fields: Any) -> Tool:
    return Tool.objects.create(tenant=tenant, name=fields.pop("name", "refund_payment"),
                               action_class="write", connector="http", endpoint=endpoint,
                               **fields)


def test_loopback_is_refused_when_it_is_not_listed_and_nothing_is_sent(
        acme, tool_server, settings, monkeypatch):
    settings.LEDGER_EGRESS_ALLOW = []
    monkeypatch.setenv("LEDGER_TENANT_ACME_TOKEN", PLANTED_SECRET_KEY)
    tool = http_tool(acme, tool_server.route("/t", echo), secret_ref="env:TOKEN")
    result = connector_for(tool).call({}, idempotency_key=None, dry_run=False)
    assert (result.ok, result.status) == (False, "failed")
    assert "refused" in result.error
    assert "loopback" in result.error
    assert tool_server.seen == []


def test_a_listed_address_with_a_port_admits_that_port_only(acme, tool_server, settings):
    port = int(tool_server.url.rsplit(":", 1)[1])
    settings.LEDGER_EGRESS_ALLOW = [f"127.0.0.1:{port}"]
    assert allowed_address("127.0.0.1", port) == "127.0.0.1"
    with pytest.raises(EgressRefused):
        allowed_address("127.0.0.1", port + 1)


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/iam/",
                                 "http://[::ffff:169.254.169.254]/latest/",
                                 "http://10.1.2.3:8080/", "http://[fd00::1]/",
                                 "http://0.0.0.0:80/"])
def test_special_addresses_are_refused_even_under_a_catch_all(acme, settings, url):
    settings.LEDGER_EGRESS_ALLOW = ["0.0.0.0/0", "::/0"]
    tool = http_tool(acme, url, timeout_ms=300)
    result = connector_for(tool).call({}, idempotency_key=None, dry_run=False)
    assert (result.ok, result.status) == (False, "failed")
    assert "refused" in result.error


def test_a_name_is_judged_by_the_address_it_resolves_to(acme, tool_server, settings):
    settings.LEDGER_EGRESS_ALLOW = ["0.0.0.0/0"]  # every public address, not loopback
    port = tool_server.url.rsplit(":", 1)[1]
    tool = http_tool(acme, f"http://localhost:{port}/t")
    tool_server.route("/t", echo)
    result = connector_for(tool).call({}, idempotency_key=None, dry_run=False)
    assert "refused" in result.error
    assert tool_server.seen == []


def test_a_dns_answer_that_changes_after_the_check_cannot_redirect_the_call(
        acme, tool_server, settings, monkeypatch):
    """DNS rebinding: the name first resolves to an allowed public address, then to loopback.
    The connection goes only to an address checked at connect time."""
    settings.LEDGER_EGRESS_ALLOW = ["8.8.8.0/24"]
    # Public for the checks before sending (the connector's and egress.post's), then loopback.
    resolving(monkeypatch, "rebind.example", "8.8.8.8", "8.8.8.8", "127.0.0.1")
    port = tool_server.url.rsplit(":", 1)[1]
    tool = http_tool(acme, f"http://rebind.example:{port}/t", timeout_ms=500)
    tool_server.route("/t", echo)
    result = connector_for(tool).call({}, idempotency_key=None, dry_run=False)
    assert not result.ok
    assert tool_server.seen == []


class Scripted(BaseHTTPRequestHandler):
    """Answers what the test scripts: a redirect, or a big body (with or without a length)."""

    location = ""
    body = b""
    declare_length = True
    hits: list[str] = []

    def do_POST(self) -> None:
        Scripted.hits.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if Scripted.location:
            self.send_response(307)
            self.send_header("Location", Scripted.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if Scripted.declare_length:
            self.send_header("Content-Length", str(len(Scripted.body)))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(Scripted.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.daemon_threads = True
    Scripted.location, Scripted.body, Scripted.declare_length, Scripted.hits = "", b"", True, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_redirect_to_another_host_is_not_followed(acme, scripted, tool_server):
    Scripted.location = tool_server.route("/elsewhere", echo)
    result = connector_for(http_tool(acme, f"{scripted}/t")).call(
        {}, idempotency_key=None, dry_run=False)
    assert (result.ok, result.status) == (False, "failed")
    assert "redirect" in result.error
    assert tool_server.seen == []


@pytest.mark.parametrize("declare_length", [True, False])
def test_an_answer_over_the_size_cap_is_refused(acme, scripted, settings, declare_length):
    settings.LEDGER_EGRESS_MAX_BYTES = 64 * 1024
    Scripted.body = b'{"blob": "' + b"x" * (200 * 1024) + b'"}'
    Scripted.declare_length = declare_length
    result = connector_for(http_tool(acme, f"{scripted}/t")).call(
        {}, idempotency_key=None, dry_run=False)
    assert (result.ok, result.status) == (False, "failed")
    assert "LEDGER_EGRESS_MAX_BYTES" in result.error
    assert result.output is None


def test_an_mcp_server_that_is_not_listed_is_never_contacted(acme, settings):
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("billing")

    @server.tool()
    def lookup_invoice(invoice_id: str) -> str:
        return invoice_id

    settings.LEDGER_EGRESS_ALLOW = []
    with mcp_tool_server(server) as serving:
        tool = Tool.objects.create(tenant=acme, name="lookup_invoice", connector="mcp",
                                   endpoint=serving.url, timeout_ms=3000)
        result = connector_for(tool).call({"invoice_id": "i-1"}, idempotency_key=None,
                                          dry_run=False)
    assert (result.ok, result.status) == (False, "failed")
    assert "refused" in result.error
    assert serving.headers == []


def test_a_sandbox_replay_records_the_refusal_on_its_step(acme, record, tool_server, settings,
                                                         key_client):
    record(acme, recorded_run())
    allow_everything(acme)
    wire_tools(acme, tool_server, lookup_customer={
        "endpoint": "http://169.254.169.254/latest/meta-data/"})
    client = key_client(acme, ["operate", "view_ledger"])
    response = client.post("/api/v1/replays/", {"run_id": RUN_ID, "until_step": 1},
                           format="json")
    replay = walk(Replay.objects.get(pk=response.json()["id"]))
    step = ReplayStep.objects.get(replay=replay, seq=1)
    assert step.status == "failed"
    assert "egress to 169.254.169.254:80 refused" in step.error


def test_a_rollback_to_an_unlisted_compensate_endpoint_fails_with_the_reason(
        acme, refunds, compensating, tool_server, settings, key_client, eager,
        django_capture_on_commit_callbacks, platform_secrets):
    tool = compensating(Tool.objects.get(tenant=acme, name="refund_payment"),
                        (200, {"ok": True}))
    settings.LEDGER_EGRESS_ALLOW = []
    client = key_client(acme, ["view_ledger", "operate"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("api:rollback-list"), {"call_id": "run-refunds-c2"},
                               format="json")
    assert response.status_code in (202, 400), response.content
    assert "refused" in (Rollback.objects.get().last_error if Rollback.objects.exists()
                         else response.json()["detail"])
    assert tool_server.requests_to(f"/{tool.name}/compensate") == []
    assert leaked(tool_server, platform_secrets) == []


def test_opa_at_an_unlisted_address_is_never_asked_and_the_fallback_applies(acme, alice,
                                                                           settings):
    from policies.models import Policy
    from policies.services import (
        ProposedCall,
        create_draft,
        decide_tool_call,
        publish_policy_version,
    )
    from tests.replay.scenario import approver

    policy = Policy.objects.create(tenant=acme, name="opa")
    publisher = approver(acme, "publisher")
    from core.services import grant_role

    grant_role(publisher, "manage_policies", acme)
    publish_policy_version(create_draft(
        policy, by=alice, change_note="opa", engine="opa", opa_url="http://169.254.169.254",
        opa_path="x/decision", opa_timeout_ms=300, opa_fallback_effect="deny"), by=publisher)
    decision = decide_tool_call(acme, ProposedCall(tool="send_email", action_class="exfil",
                                                   arguments={}, agent_id="mailer"))
    assert decision.effect == "deny"
    assert "refused" in decision.reason


class Hook(BaseHTTPRequestHandler):
    received: list[str] = []

    def do_POST(self) -> None:
        Hook.received.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    Hook.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_the_approval_webhook_goes_only_to_a_listed_destination(acme, settings, hook_url):
    from approvals.notify import WebhookNotifier
    from approvals.services import request_approval

    settings.LEDGER_NOTIFY_WEBHOOK_URL = hook_url
    settings.LEDGER_EGRESS_ALLOW = []
    request = request_approval(acme, tool="t", action_class="write", arguments={},
                               requested_by="agent")

    refused = WebhookNotifier().notify("escalated", request)
    assert Hook.received == []
    assert not refused.delivered
    assert refused.detail.startswith("refused: egress to 127.0.0.1")
    settings.LEDGER_EGRESS_ALLOW = ["127.0.0.1"]
    assert WebhookNotifier().notify("escalated", request).delivered
    assert Hook.received == ["/hook"]


def test_the_incident_webhook_reports_a_refused_destination(acme, settings, hook_url):
    from incidents.notify import Contacts, WebhookNotifier

    settings.LEDGER_INCIDENT_WEBHOOK_URL = hook_url
    settings.LEDGER_EGRESS_ALLOW = []
    delivery = WebhookNotifier().notify("escalated", {"incident": "INC-1"}, Contacts())
    assert not delivery.delivered
    assert "refused" in delivery.error
    assert Hook.received == []


@pytest.mark.parametrize("bad", ["http://x", "10.0.0.1/8", "host:99999", "[::1", "a b",
                                 "10.0.0.0/8:80"])
def test_a_bad_allow_entry_is_an_improperly_configured_naming_it(monkeypatch, bad):
    monkeypatch.setenv("LEDGER_EGRESS_ALLOW", f"127.0.0.1,{bad}")
    with pytest.raises(ImproperlyConfigured, match="LEDGER_EGRESS_ALLOW"):
        env_destinations("LEDGER_EGRESS_ALLOW")


def test_the_allow_list_reads_hosts_ports_addresses_and_ranges(monkeypatch):
    monkeypatch.setenv("LEDGER_EGRESS_ALLOW", "opa.internal:8181, 10.0.0.0/8,[::1]:80,Tools")
    assert env_destinations("LEDGER_EGRESS_ALLOW") == ["opa.internal:8181", "10.0.0.0/8",
                                                        "[::1]:80", "Tools"]


def test_check_url_refuses_other_schemes(settings):
    for url in ["file:///etc/passwd", "gopher://127.0.0.1/", "http:///nohost"]:
        with pytest.raises(EgressRefused):
            check_url(url)


def resolving(monkeypatch: Any, name: str, *addresses: str) -> None:
    """``name`` resolves to ``addresses`` in turn (the last one repeats)."""
    real = socket.getaddrinfo
    answers = list(addresses)

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == name:
            return real(answers.pop(0) if len(answers) > 1 else answers[0], port, *args,
                        **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_a_listed_name_opens_its_private_address_but_never_link_local(settings, monkeypatch):
    settings.LEDGER_EGRESS_ALLOW = ["tools.internal"]
    resolving(monkeypatch, "tools.internal", "10.0.0.5")
    assert allowed_address("tools.internal", 8080) == "10.0.0.5"
    resolving(monkeypatch, "tools.internal", "169.254.169.254")
    with pytest.raises(EgressRefused, match="link-local or metadata"):
        allowed_address("tools.internal", 80)


def test_ranges_open_what_they_cover_and_special_blocks_only_from_inside(settings):
    settings.LEDGER_EGRESS_ALLOW = ["0.0.0.0/0", "169.254.169.254:80", "10.2.0.0/16"]
    assert allowed_address("8.8.8.8", 443) == "8.8.8.8"
    assert allowed_address("169.254.169.254", 80) == "169.254.169.254"
    assert allowed_address("10.2.3.4", 5432) == "10.2.3.4"
    for address, port in [("169.254.169.254", 8080), ("10.3.0.1", 80), ("127.0.0.1", 80)]:
        with pytest.raises(EgressRefused):
            allowed_address(address, port)


def test_an_mcp_connection_is_checked_at_connect_time_too(acme, settings, monkeypatch):
    """The MCP transport resolves and checks again when it connects: a name that passed the
    first check but then resolves to loopback never reaches the server."""
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("billing")

    @server.tool()
    def lookup_invoice(invoice_id: str) -> str:
        return invoice_id

    settings.LEDGER_EGRESS_ALLOW = ["8.8.8.0/24"]
    resolving(monkeypatch, "rebind.example", "8.8.8.8", "127.0.0.1")
    with mcp_tool_server(server) as serving:
        port = serving.url.rsplit(":", 1)[1].split("/")[0]
        tool = Tool.objects.create(tenant=acme, name="lookup_invoice", connector="mcp",
                                   endpoint=f"http://rebind.example:{port}/mcp",
                                   timeout_ms=3000)
        result = connector_for(tool).call({"invoice_id": "i-1"}, idempotency_key=None,
                                          dry_run=False)
    assert (result.ok, result.status) == (False, "failed"), result.error
    assert "refused" in result.error
    assert serving.headers == []


@pytest.mark.parametrize(("variable", "value"), [("LEDGER_EGRESS_ALLOW", "127.0.0.1,http://x"),
                                                 ("LEDGER_EGRESS_MAX_BYTES", "10")])
def test_the_portal_does_not_start_with_a_bad_egress_setting(tmp_path, variable, value):
    from tests.core.test_settings import _settings_in_subprocess

    done = _settings_in_subprocess({"LEDGER_DATA_DIR": str(tmp_path), variable: value})
    assert done.returncode != 0
    assert f"{variable}" in done.stderr
    assert "ImproperlyConfigured" in done.stderr
