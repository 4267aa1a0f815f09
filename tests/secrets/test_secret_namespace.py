"""A tool's secret reference resolves only inside its tenant's namespace: ``env:NAME`` on tenant
``acme`` reads ``LEDGER_TENANT_ACME_NAME``, never the portal's own environment. A tenant admin
who names ``env:DATABASE_URL`` or ``env:SECRET_KEY`` gets a clear failure and nothing is sent,
whichever face starts the call (connector, replay API and CLI, rollback API and CLI, admin)."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from core.models import Tenant
from core.secrets import EnvironmentSecrets, SecretError, resolve_secret
from ledger_portal.cli import main
from operations.connectors import connector_for
from operations.models import Replay, ReplayStep, Rollback
from runs.models import Tool
from tests.replay.scenario import RUN_ID, recorded_run, walk, wire_tools
from tests.replay.toolservers import echo, mcp_tool_server

from .conftest import TENANT_TOKEN, leaked

pytestmark = pytest.mark.django_db

PLATFORM_REFERENCES = ["env:DATABASE_URL", "env:SECRET_KEY"]


def make_tool(tenant: Any, server: Any, name: str = "refund_payment", **fields: Any) -> Tool:
    fields.setdefault("connector", "http")
    fields.setdefault("endpoint", server.route("/tool", echo))
    return Tool.objects.create(tenant=tenant, name=name, action_class="write", **fields)


def test_env_name_reads_the_tenants_own_variable(acme, tool_server, monkeypatch):
    monkeypatch.setenv("LEDGER_TENANT_ACME_BILLING_API_TOKEN", TENANT_TOKEN)
    monkeypatch.setenv("BILLING_API_TOKEN", "the-raw-process-variable")
    tool = make_tool(acme, tool_server, secret_ref="env:BILLING_API_TOKEN")
    assert connector_for(tool).call({}, idempotency_key=None, dry_run=False).ok
    assert tool_server.seen[0].header("Authorization") == f"Bearer {TENANT_TOKEN}"


def test_the_file_variant_of_the_tenants_variable_is_read(acme, tmp_path, monkeypatch):
    secret_file = tmp_path / "token"
    secret_file.write_text(TENANT_TOKEN + "\n")
    monkeypatch.setenv("LEDGER_TENANT_ACME_BILLING_API_TOKEN_FILE", str(secret_file))
    assert resolve_secret("acme", "env:BILLING_API_TOKEN") == TENANT_TOKEN


def test_a_slug_is_upper_cased_with_every_other_character_an_underscore(db, monkeypatch):
    Tenant.objects.create(slug="north-eu", name="North EU")
    monkeypatch.setenv("LEDGER_TENANT_NORTH_EU_TOKEN", TENANT_TOKEN)
    assert EnvironmentSecrets().resolve("north-eu", "env:TOKEN") == TENANT_TOKEN


@pytest.mark.parametrize("reference", PLATFORM_REFERENCES)
def test_a_platform_variable_is_unreachable_and_nothing_is_sent(
        acme, tool_server, platform_secrets, reference):
    tool = make_tool(acme, tool_server, secret_ref=reference)
    result = connector_for(tool).call({}, idempotency_key=None, dry_run=False)
    assert (result.ok, result.status) == (False, "failed")
    name = reference.partition(":")[2]
    assert f"LEDGER_TENANT_ACME_{name}" in result.error
    assert tool_server.seen == []
    assert leaked(tool_server, platform_secrets) == []


def test_an_mcp_tool_cannot_reach_a_platform_variable_either(acme, platform_secrets):
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("billing")

    @server.tool()
    def lookup_invoice(invoice_id: str) -> str:
        return invoice_id

    with mcp_tool_server(server) as serving:
        tool = Tool.objects.create(tenant=acme, name="lookup_invoice", connector="mcp",
                                   endpoint=serving.url, secret_ref="env:SECRET_KEY")
        result = connector_for(tool).call({"invoice_id": "i-1"}, idempotency_key=None,
                                          dry_run=False)
    assert not result.ok
    assert serving.headers == []
    assert not any(s in repr(serving.headers) for s in platform_secrets)


def test_one_tenant_never_reads_another_tenants_namespace(acme, globex, monkeypatch):
    monkeypatch.setenv("LEDGER_TENANT_ACME_BILLING_API_TOKEN", TENANT_TOKEN)
    with pytest.raises(SecretError, match="LEDGER_TENANT_GLOBEX_BILLING_API_TOKEN"):
        resolve_secret("globex", "env:BILLING_API_TOKEN")


def test_tenants_whose_namespaces_nest_cannot_read_each_others_secrets(acme, monkeypatch):
    # acme-eu's TOKEN and acme's EU_TOKEN would both be LEDGER_TENANT_ACME_EU_TOKEN: whichever
    # tenant the operator meant, the other could read it, so neither resolves anything.
    monkeypatch.setenv("LEDGER_TENANT_ACME_EU_TOKEN", TENANT_TOKEN)
    assert resolve_secret("acme", "env:EU_TOKEN") == TENANT_TOKEN
    Tenant.objects.create(slug="acme-eu", name="Acme EU")
    with pytest.raises(SecretError, match="overlaps another tenant's"):
        resolve_secret("acme-eu", "env:TOKEN")
    with pytest.raises(SecretError, match="overlaps another tenant's"):
        resolve_secret("acme", "env:EU_TOKEN")


@pytest.mark.parametrize("reference", ["env:", "env:A-B", "env:../SECRET", "env:TOKEN_FILE",
                                       "vault:billing"])
def test_a_malformed_reference_is_refused_naming_it(acme, reference):
    with pytest.raises(SecretError, match="secret reference"):
        resolve_secret("acme", reference)


@pytest.fixture
def planted_replay(acme, record, tool_server, platform_secrets):
    record(acme, recorded_run())
    from tests.replay.scenario import allow_everything

    allow_everything(acme)
    wire_tools(acme, tool_server, lookup_customer={"secret_ref": "env:DATABASE_URL"},
               refund_payment={"secret_ref": "env:SECRET_KEY"})
    return platform_secrets


def test_a_sandbox_replay_started_by_the_api_sends_no_platform_secret(
        acme, planted_replay, key_client, tool_server):
    client = key_client(acme, ["operate", "view_ledger"])
    response = client.post("/api/v1/replays/", {"run_id": RUN_ID}, format="json")
    assert response.status_code == 201, response.content
    replay = walk(Replay.objects.get(pk=response.json()["id"]))
    steps = {s.seq: s for s in ReplayStep.objects.filter(replay=replay)}
    assert steps[1].status == "failed"
    assert "LEDGER_TENANT_ACME_DATABASE_URL" in steps[1].error
    assert "LEDGER_TENANT_ACME_SECRET_KEY" in steps[2].error
    assert leaked(tool_server, planted_replay) == []
    page = client.get(reverse("api:replay-detail", args=[replay.pk])).content.decode()
    assert not [s for s in planted_replay if s in page]


def test_ledger_replay_sends_no_platform_secret(acme, alice, planted_replay, tool_server):
    main(["--as", "alice", "replay", "--run-id", RUN_ID, "--inline", "--quiet"])
    assert ReplayStep.objects.filter(status="failed").count() == 2
    assert leaked(tool_server, planted_replay) == []


@pytest.fixture
def planted_rollback(acme, refunds, compensating, platform_secrets):
    tool = compensating(Tool.objects.get(tenant=acme, name="refund_payment"),
                        (200, {"ok": True}))
    tool.secret_ref = "env:DATABASE_URL"
    tool.save()
    return platform_secrets


def test_a_rollback_asked_through_the_api_sends_no_platform_secret(
        acme, planted_rollback, key_client, tool_server, eager,
        django_capture_on_commit_callbacks):
    client = key_client(acme, ["view_ledger", "operate"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("api:rollback-list"), {"call_id": "run-refunds-c2"},
                               format="json")
    assert response.status_code == 202, response.content
    rollback = Rollback.objects.get()
    assert rollback.status == "failed"
    assert "LEDGER_TENANT_ACME_DATABASE_URL" in rollback.last_error
    assert leaked(tool_server, planted_rollback) == []


def test_ledger_rollback_sends_no_platform_secret(acme, alice, planted_rollback, tool_server,
                                                 eager, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        main(["--as", "alice", "rollback", "--call-id", "run-refunds-c2"])
    assert Rollback.objects.get().status == "failed"
    assert leaked(tool_server, planted_rollback) == []


def test_a_secret_reference_set_on_the_admin_change_page_cannot_reach_the_platform(
        acme, alice, record, tool_server, client, platform_secrets):
    record(acme, recorded_run())
    from tests.replay.scenario import allow_everything

    allow_everything(acme)
    wire_tools(acme, tool_server)
    tool = Tool.objects.get(tenant=acme, name="lookup_customer")
    client.force_login(alice)
    url = reverse("admin:runs_tool_change", args=[tool.pk])
    form = client.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update(secret_ref="env:SECRET_KEY", volatile_fields='["fetched_at"]')
    client.post(url, data)
    main(["--as", "alice", "replay", "--run-id", RUN_ID, "--inline", "--quiet"])
    assert leaked(tool_server, platform_secrets) == []
