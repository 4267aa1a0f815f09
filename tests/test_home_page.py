"""The home page at ``/`` shows each person what waits for them, in the tenants and roles they
hold, with links to where the work is done; the navigation on every page offers only the
pages their roles let them use."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from approvals.services import request_approval
from core.roles import Role
from core.services import grant_role
from incidents.services import open_incident
from runs.models import IntegrityAlarm, Run

pytestmark = pytest.mark.django_db


def person(username: str, tenant: Any, *roles: str) -> User:
    user = User.objects.create_user(username, is_staff=True)
    for role in roles:
        grant_role(user, role, tenant)
    return user


def page(client: Any, user: User) -> str:
    client.force_login(user)
    answer = client.get("/")
    assert answer.status_code == 200
    return str(answer.content.decode())


def failed(run_id: str, started: Any) -> dict[str, Any]:
    return {"run_id": run_id, "agent_id": "billing-agent", "goal": "refund order 7",
            "status": "failed", "started_at": started.isoformat(),
            "ended_at": (started + timedelta(seconds=3)).isoformat()}


def panel(html: str, key: str) -> str:
    start = html.find(f'id="panel-{key}"')
    assert start != -1, f"no {key} panel"
    return html[start:html.find("</section>", start)]


def test_someone_signed_out_is_sent_to_sign_in(client):
    answer = client.get("/")
    assert answer.status_code == 302
    assert answer["Location"].startswith("/admin/login/")


def test_an_approver_sees_the_requests_they_may_decide_and_not_their_own(acme, client):
    approver = person("approver", acme, Role.APPROVE)
    theirs = request_approval(acme, tool="refund_payment", action_class="write",
                              arguments={}, requested_by="agent")
    own = request_approval(acme, tool="send_report", action_class="exfil", arguments={},
                           requested_by="approver", requester=approver)

    shown = panel(page(client, approver), "approvals")

    assert f"/approvals/#request-{theirs.pk}" in shown
    assert f"#request-{own.pk}" not in shown


def test_another_tenants_work_never_shows(acme, globex, client, record):
    reader = person("reader", acme, Role.VIEW_LEDGER, Role.APPROVE)
    request_approval(globex, tool="globex_tool", action_class="write", arguments={},
                     requested_by="agent")
    run = failed("globex-run-1", timezone.now())
    record(globex, run)

    html = page(client, reader)

    assert "globex_tool" not in html
    assert run["run_id"] not in html


def test_failed_runs_of_the_last_day_are_listed_with_their_timeline(acme, client, record):
    reader = person("reader", acme, Role.VIEW_LEDGER)
    recent = failed("run-recent", timezone.now())
    old = failed("run-old", timezone.now() - timedelta(days=2))
    record(acme, recent, old)
    assert Run.objects.filter(status="failed").count() == 2

    shown = panel(page(client, reader), "failed-runs")

    assert f'/runs/acme/{recent["run_id"]}/' in shown
    assert old["run_id"] not in shown


def test_open_incidents_link_to_their_page(acme, alice, client):
    incident = open_incident(acme, "Refunds sent twice", by=alice)
    shown = panel(page(client, alice), "incidents")
    assert f"/incidents/acme/{incident.pk}/" in shown
    assert "Refunds sent twice" in shown


def test_an_integrity_alarm_comes_first_and_loudly(acme, alice, client):
    IntegrityAlarm.objects.create(tenant=acme, run_id="run-x", seq=3, found_head="f" * 64,
                                  signed_seq=2, signed_head="e" * 64, digest_number=1,
                                  detail="rewritten with recomputed hashes")
    html = page(client, alice)
    first = html.find('<section class="panel')
    assert html[first:].startswith('<section class="panel alarm busy"')
    assert "run run-x" in panel(html, "alarms")


def test_each_panel_and_link_is_shown_only_to_those_whose_roles_use_it(acme, client):
    exporter = person("exporter", acme, Role.EXPORT)
    html = page(client, exporter)
    assert 'id="panel-exports"' in html
    assert 'id="panel-approvals"' not in html
    assert 'id="panel-incidents"' not in html
    nav = html[html.find('class="ledger-nav"'):html.find("</nav>")]
    assert ">Exports<" in nav
    assert ">Approvals<" not in nav
    assert ">Incidents<" not in nav


def test_someone_with_no_role_is_told_what_to_ask_for(acme, client):
    html = page(client, User.objects.create_user("newcomer", is_staff=True))
    assert "You hold no role in any tenant yet" in html


def test_the_admins_view_site_leads_home_not_round_in_a_loop(alice, client):
    client.force_login(alice)
    admin_index = client.get("/admin/").content.decode()
    assert 'href="/"' in admin_index
    assert client.get("/").status_code == 200


def test_a_governor_sees_drafts_and_exceptions_someone_else_wrote(acme, globex, client):
    from policies.exceptions import request_exception
    from policies.models import Policy
    from policies.services import create_draft, publish_policy_version

    writer = person("writer", acme, Role.MANAGE_POLICIES)
    reviewer = person("reviewer", acme, Role.MANAGE_POLICIES)
    person("theirs", globex, Role.MANAGE_POLICIES)
    policy = Policy.objects.create(tenant=acme, name="refund caps")
    published = publish_policy_version(create_draft(policy, by=writer, change_note="v1"),
                                       by=reviewer)
    create_draft(policy, by=writer, change_note="tighter refund caps")
    now = timezone.now()
    request_exception(acme, by=writer, tool="delete_record", policy_version=published,
                      justification="backlog", starts_at=now, ends_at=now + timedelta(hours=1))
    other = create_draft(Policy.objects.create(tenant=globex, name="globex"),
                         by=User.objects.get(username="theirs"), change_note="globex draft")

    for_reviewer = panel(page(client, reviewer), "governance")
    assert "tighter refund caps" in for_reviewer
    assert "grant? exception" in for_reviewer
    assert other.change_note not in for_reviewer
    for_writer = panel(page(client, writer), "governance")
    assert "No draft or exception waits for your review." in for_writer
    assert 'href="/admin/policies/policyversion/"' in page(client, writer)  # the nav


def test_pending_deferred_items_are_counted_per_tenant_and_only_the_readers(acme, globex,
                                                                          client):
    from runs.deferred import keep_deferred
    from runs.deferred_batch import DeferredIn

    def kept(tenant: Any, n: int) -> None:
        keep_deferred(tenant, [DeferredIn("batch", "unknown_field", "a newer agent's field",
                                          {"record": {}}, "", f"{tenant.slug}-{i}")
                               for i in range(n)])

    kept(acme, 3)
    kept(globex, 2)
    reader = person("reader", acme, Role.VIEW_LEDGER)

    shown = panel(page(client, reader), "deferred")

    assert "Deferred pending ledger schema reconciliation" in shown
    assert "acme: 3 pending items" in shown
    assert f"tenant__id__exact={acme.pk}" in shown
    assert "globex" not in shown
