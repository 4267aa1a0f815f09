"""Nobody sees another tenant's data: every API route and every admin view, generated from the
URL conf and the admin registry, so a new route or model is covered the day it is added.

charlie holds every role on globex; everything here belongs to acme.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.db import models
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from approvals.models import ApprovalRequest, ApprovalRoute, NotificationDelivery
from approvals.services import request_approval
from core.models import ApiKey, Tenant
from core.roles import Role
from operations.models import Replay
from policies.models import Decision, Policy, PolicyVersion
from policies.services import ProposedCall, create_draft, decide_tool_call
from runs.models import (
    Agent,
    Annotation,
    LegalHold,
    ModelCall,
    RedactionRule,
    RemovalRecord,
    Run,
    Step,
    Tool,
    ToolCall,
    ToolChange,
)

# Routes that only write; their tenant boundary is tested where their behaviour is.
WRITE_ONLY_ROUTES = {
    "api:backtest-start": "tests/policies/test_governance_api.py::"
                          "test_another_tenants_versions_and_backtests_are_not_found",
    **{f"api:exception-{step}": "tests/policies/test_governance_api.py::"
                                "test_no_exception_on_another_tenants_policy_and_none_by_an_api_key"
       for step in ("grant", "revoke")},
    "api:approval-decision": "tests/test_tenant_isolation.py::"
                             "test_an_outsider_cannot_decide_another_tenants_request",
    "api:approval-withdraw": "tests/policies/test_approval_binding.py::"
                             "test_only_the_asking_key_may_withdraw",
    "api:batch-ingest": "tests/runs/test_ingest.py::"
                        "test_a_person_records_into_a_named_tenant_they_may_ingest_into",
    "api:decision-create": "tests/policies/test_decision_api.py::"
                           "test_decisions_are_taken_under_the_keys_own_tenant",
    "otlp-traces": "tests/otlp/test_ingest_spans.py::test_a_globex_key_writes_only_into_globex",
    **{f"api:deferred-{action}": "tests/runs/test_reconcile.py::"
                                 "test_another_tenants_operator_sees_and_resolves_none_of_them"
       for action in ("dismiss", "apply")},
    "otlp-logs": "tests/otlp/test_genai_log_events.py::test_a_globex_key_never_joins_acmes_spans",
    "api:run-annotations": "tests/runs/test_manual_annotations.py::"
                           "test_nobody_annotates_another_tenants_run",
    **{f"api:incident-{action}": "tests/incidents/test_incident_api.py::"
                                 "test_nobody_acts_on_another_tenants_incident"
       for action in ("link", "note", "freeze", "mitigate", "close")},
}
# Machine routes outside /api/v1/ at paths fixed by their protocol (OTLP/HTTP).
PROTOCOL_ROUTES = ("v1/traces", "v1/logs")


def api_routes() -> list[tuple[str, URLPattern]]:
    found: list[tuple[str, URLPattern]] = []

    def walk(patterns: list[Any], namespace: str, prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                ns = f"{namespace}:{p.namespace}" if namespace and p.namespace else (
                    p.namespace or namespace)
                walk(p.url_patterns, ns, prefix + str(p.pattern))
            elif (prefix + str(p.pattern)).startswith(("api/v1/", *PROTOCOL_ROUTES)):
                found.append((f"{namespace}:{p.name}" if namespace else p.name, p))
    walk(get_resolver().url_patterns, "", "")
    return found


@pytest.fixture
def acme_data(acme, record, make_run, api_key) -> dict[str, Any]:
    run = make_run()
    run["annotations"] = [{"annotation_id": "note-1", "body": "checked by on-call"}]
    record(acme, run)
    api_key(acme)
    rule = RedactionRule.objects.create(tenant=acme, pattern="*password*", label="secret")
    approval = request_approval(acme, tool="send_email", action_class="exfil",
                                arguments={"to": "x"}, run_id=run["run_id"])
    policy = Policy.objects.create(tenant=acme, name="tools")
    version = create_draft(policy, by=None, change_note="first")
    decision = decide_tool_call(acme, ProposedCall(tool="get_customer", action_class="read",
                                                   arguments={}))
    from django.contrib.auth.models import User
    from django.utils import timezone

    from core.services import grant_role
    from policies.exceptions import request_exception
    from policies.models import GovernedException
    from policies.services import publish_policy_version
    from runs.governance_log import setting_up

    publisher = User.objects.create_user("publisher-of-acme")
    with setting_up():
        grant_role(publisher, "manage_policies", acme)
    published = publish_policy_version(version, by=publisher)
    exception = request_exception(acme, by=publisher, tool="delete_*", policy_version=published,
                                  justification="backlog", starts_at=timezone.now(),
                                  ends_at=timezone.now() + timedelta(hours=1))
    from policies.models import BackTest

    backtest = BackTest.objects.create(tenant=acme, version=published,
                                       window_from=timezone.now(), window_to=timezone.now())
    from policies.models import BackTestChange

    BackTestChange.objects.create(tenant=acme, backtest=backtest, call_id=run["tool_calls"][0][
        "call_id"], run_id=run["run_id"], tool="delete_record", before="allow", after="deny")
    from exports.models import AuditExport

    export = AuditExport.objects.create(tenant=acme, window_from=timezone.now(),
                                        window_to=timezone.now() + timedelta(days=1),
                                        status="done", file="acme/never-served.tar")
    stored = Run.objects.get(run_id=run["run_id"])
    from runs.retention import apply_retention, place_legal_hold

    hold = place_legal_hold(acme, by=publisher, reason="matter 1", run_id=run["run_id"])
    gone = make_run()
    gone["status"], gone["ended_at"] = "succeeded", timezone.now().isoformat()
    record(acme, gone)
    acme.retention_days = 0
    apply_retention(acme)
    replay = Replay.objects.create(tenant=acme, run=stored, requested_by_label="alice")
    from incidents.models import Incident
    from operations.models import Rollback

    incident = Incident.objects.create(tenant=acme, title="acme's incident")
    incident.runs.add(stored)
    first_call = ToolCall.objects.filter(run=stored)[0]
    rollback = Rollback.objects.create(tenant=acme, tool_call=first_call, run=stored,
                                       idempotency_key="k", incident=incident)
    from operations.models import ReplayStep

    divergent = ReplayStep.objects.create(
        tenant=acme, replay=replay, seq=1, call_id=first_call.call_id, tool=first_call.tool,
        mode_used="dry_run", status="succeeded", flagged=True, follow_up="open",
        divergence=[{"path": "$.state", "change": "changed", "recorded": "a", "replayed": "b"}])
    from runs.commitments import commitment_key
    from runs.deferred import keep_deferred
    from runs.deferred_batch import DeferredIn
    from runs.models import CommitmentKey, DeferredItem, IntegrityAlarm

    keep_deferred(acme, [DeferredIn("batch", "unknown_field", "acme's newer agent",
                                    {"record": {"call_id": run["tool_calls"][0]["call_id"]}},
                                    run["run_id"], "acme-deferred-1")])
    deferred = DeferredItem.objects.get(tenant=acme)
    alarm = IntegrityAlarm.objects.create(
        tenant=acme, run_id=run["run_id"], seq=2, found_head="f" * 64, signed_seq=2,
        signed_head="e" * 64, digest_number=1, detail="rewritten with recomputed hashes")
    return {
        "run_id": run["run_id"], "agent_id": run["agent_id"], "slug": acme.slug,
        "call_id": run["tool_calls"][0]["call_id"],
        "pk": approval.pk,
        "replay_id": replay.pk,
        "seq": divergent.seq,
        "incident_id": incident.pk,
        "rollback_id": rollback.pk,
        "export_id": export.pk,
        "version_id": published.pk,
        "backtest_id": backtest.pk,
        "exception_id": exception.pk,
        "deferred_id": deferred.pk,
        "objects": {
            DeferredItem: deferred,
            Tenant: acme, ApiKey: ApiKey.objects.get(tenant=acme), Run: stored,
            Agent: stored.agent, Tool: ToolCall.objects.filter(run=stored)[0].tool,
            Step: Step.objects.filter(run=stored).first(),
            ModelCall: ModelCall.objects.filter(run=stored).first(),
            ToolCall: ToolCall.objects.filter(run=stored).first(),
            Annotation: Annotation.objects.filter(run=stored).first(),
            RedactionRule: rule,
            ApprovalRequest: approval,
            Policy: policy,
            PolicyVersion: version,
            Decision: decision,
            GovernedException: exception,
            BackTest: backtest,
            LegalHold: hold,
            RemovalRecord: RemovalRecord.objects.get(tenant=acme),
            Replay: replay,
            Incident: incident,
            Rollback: rollback,
            AuditExport: export,
            IntegrityAlarm: alarm,
            CommitmentKey: commitment_key(acme),
            ApprovalRoute: ApprovalRoute.objects.create(
                tenant=acme, name="acme payments on-call", channel="email",
                target="oncall@acme.example"),
            NotificationDelivery: NotificationDelivery.objects.create(
                tenant=acme, request=approval, channel="email", event="created",
                delivered=True, detail="1 recipient(s)"),
            ToolChange: ToolChange.objects.create(
                tenant=acme, tool=ToolCall.objects.filter(run=stored)[0].tool,
                proposed={"endpoint": "http://127.0.0.1:9/x"}, previous={"endpoint": ""}),
        },
    }


@pytest.fixture(params=["charlie-session", "charlie-token", "globex-key"])
def outsider(request, charlie, globex, user_client, key_client):
    if request.param == "charlie-session":
        return user_client(charlie)
    if request.param == "charlie-token":  # a person's token on the API: charlie, nothing more
        from rest_framework.test import APIClient

        from core.access_tokens import issue_personal_token

        _, raw = issue_personal_token(charlie, "laptop", [r.value for r in Role], by=charlie)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        return client
    return key_client(globex, ["view_ledger", "ingest", "manage_policies", "export",
                               "approve", "operate"])


def test_an_outsider_cannot_decide_another_tenants_request(acme_data, outsider):
    answer = outsider.post(reverse("api:approval-decision", kwargs={"pk": acme_data["pk"]}),
                           {"decision": "approve", "justification": "not mine"},
                           format="json")
    assert answer.status_code == 404
    assert ApprovalRequest.objects.get(pk=acme_data["pk"]).status == "pending"


@pytest.mark.parametrize(("name", "pattern"), api_routes(), ids=lambda v: str(v)
                         if isinstance(v, str) else "")
def test_api_route_never_shows_another_tenants_rows(name, pattern, acme_data, outsider):
    if name in WRITE_ONLY_ROUTES:
        return
    kwargs = {k: acme_data[k] for k in pattern.pattern.converters}
    unknown = set(pattern.pattern.converters) - set(acme_data)
    assert not unknown, f"teach this test the URL kwarg(s) {unknown} of {name}"
    response = outsider.get(reverse(name, kwargs=kwargs))
    if kwargs:
        assert response.status_code == 404, (name, response.status_code)
    else:
        assert response.status_code == 200, (name, response.status_code)
        body = response.content.decode()
        assert '"acme"' not in body
        for key in ("run_id", "call_id", "agent_id"):
            assert acme_data[key] not in body, (name, key)


def test_every_api_route_is_readable_or_declared_write_only():
    for name, pattern in api_routes():
        callback = pattern.callback
        methods = getattr(callback, "view_class", None)
        assert name in WRITE_ONLY_ROUTES or hasattr(methods, "get"), name


def _tenant_owned(model: type[models.Model]) -> bool:
    return model is Tenant or any(f.name == "tenant" for f in model._meta.fields)


def admin_models() -> list[type[models.Model]]:
    return [m for m in admin.site._registry if _tenant_owned(m)]


def _personal(model: type[models.Model]) -> bool:
    """Each person's own rows (personal access tokens): listed to their owner alone."""
    return any(f.name == "user" for f in model._meta.fields)


@pytest.mark.parametrize("model", [m for m in admin.site._registry
                                   if not _tenant_owned(m) and not _personal(m)],
                         ids=lambda m: m._meta.label)
def test_admin_models_outside_tenancy_are_for_superusers_only(model, charlie, client):
    client.force_login(charlie)
    info = (model._meta.app_label, model._meta.model_name)
    assert client.get(reverse("admin:{}_{}_changelist".format(*info))).status_code == 403


@pytest.mark.parametrize("model", [m for m in admin.site._registry if _personal(m)],
                         ids=lambda m: m._meta.label)
def test_admin_never_shows_another_persons_own_rows(model, alice, charlie, client):
    from core.access_tokens import issue_personal_token

    token, _ = issue_personal_token(alice, "alice-laptop", ["view_ledger"])
    client.force_login(charlie)
    info = (model._meta.app_label, model._meta.model_name)
    changelist = client.get(reverse("admin:{}_{}_changelist".format(*info)))
    assert changelist.status_code == 200
    assert token.pk not in {o.pk for o in changelist.context["cl"].result_list}
    change = client.get(reverse("admin:{}_{}_change".format(*info), args=[token.pk]))
    assert change.status_code in (302, 403, 404)
    assert "alice-laptop" not in change.content.decode()


@pytest.mark.parametrize("model", admin_models(), ids=lambda m: m._meta.label)
def test_admin_never_shows_another_tenants_rows(model, acme_data, charlie, client):
    obj = acme_data["objects"].get(model)
    assert obj is not None, f"teach this test an acme object of {model._meta.label}"
    client.force_login(charlie)
    info = (model._meta.app_label, model._meta.model_name)
    changelist = client.get(reverse("admin:{}_{}_changelist".format(*info)))
    assert changelist.status_code == 200
    shown = {o.pk for o in changelist.context["cl"].result_list}
    assert obj.pk not in shown
    change = client.get(reverse("admin:{}_{}_change".format(*info), args=[obj.pk]))
    assert change.status_code == 404
    if hasattr(admin.site._registry[model], "history_view"):
        history = client.get(reverse("admin:{}_{}_history".format(*info), args=[obj.pk]))
        assert history.status_code == 404


def test_the_admin_shows_a_member_their_own_rows(acme_data, alice, client):
    client.force_login(alice)
    response = client.get(reverse("admin:runs_toolcall_changelist"))
    assert acme_data["objects"][ToolCall].pk in {o.pk for o in response.context["cl"].result_list}
    change = client.get(reverse("admin:runs_toolcall_change",
                                args=[acme_data["objects"][ToolCall].pk]))
    assert change.status_code == 200


@pytest.mark.parametrize("route", ["export-list", "export-download", "export-share"])
def test_export_pages_never_show_another_tenants_exports(route, acme_data, charlie, client):
    client.force_login(charlie)
    export_id = acme_data["export_id"]
    if route == "export-list":
        page = client.get(reverse(route)).content.decode()
        assert f'id="export-{export_id}"' not in page
        assert "acme" not in page
    elif route == "export-download":
        assert client.get(reverse(route, args=[export_id])).status_code == 404
    else:
        response = client.post(reverse(route, args=[export_id]), {"username": "charlie"})
        assert response.status_code == 404


@pytest.mark.parametrize("fragment", ["", "&fragment=1"])
def test_a_runs_step_calls_are_not_found_by_another_tenant(acme_data, charlie, client,
                                                            fragment):
    """The page (and the fragment its script loads) of a step's calls a long run's timeline
    leaves out; a page route, so not in the API matrix above."""
    client.force_login(charlie)
    step = Step.objects.filter(run=acme_data["objects"][Run]).first()
    assert step is not None
    for tenant in ("acme", "globex"):
        url = reverse("run-step-calls", args=[tenant, acme_data["run_id"]])
        answer = client.get(f"{url}?step={step.step_id}{fragment}")
        assert answer.status_code == 404
        assert acme_data["call_id"] not in answer.content.decode()
