"""Demo data: two tenants, a user per role (two approvers and two governors, so four-eyes
works without the superuser), an agent API key, a few hundred runs, and work waiting for each
role: pending approval requests (one exfil request that needs both approvers), an open incident
linked to a failed run, and an approval route. Governance: a published policy and a draft, a
governed exception, every tool's HTTP connector at the demo's tool server (DEMO_TOOLS_ADDR). The
incident's story (ledger_portal.demo_story): the run behind it, a replay that diverges, a
partial rollback, a tool frozen for it, and a finished export.

Runs come from the benchmark generator and go through the ingestion service, exactly as an
agent's batches would; the rest goes through the services too. Seeding twice leaves the data as
it is and resets the demo passwords. It lives in the project shell because it seeds every app.
"""

from __future__ import annotations

import secrets
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand
from django.utils import timezone

from core.access_tokens import issue_personal_token
from core.egress import EgressRefused, check_url
from core.models import ApiKey, Tenant
from core.roles import Role
from core.services import grant_role, issue_api_key
from runs.ingest_schema import parse_batch
from runs.integrity import seal_tenant_digest
from runs.models import RedactionRule, Run
from runs.sample_runs import RunGenerator, batches
from runs.services import ingest_batch

from ... import demo_governance, demo_story, demo_tools

TENANTS = {"acme": "Acme Corp", "globex": "Globex Industries"}
# username -> roles on acme (everyone also views the ledger)
DEMO_USERS = {
    "viewer": [Role.VIEW_LEDGER],
    "approver": [Role.VIEW_LEDGER, Role.APPROVE],
    "approver2": [Role.VIEW_LEDGER, Role.APPROVE],
    "governor": [Role.VIEW_LEDGER, Role.MANAGE_POLICIES],
    "governor2": [Role.VIEW_LEDGER, Role.MANAGE_POLICIES],
    "operator": [Role.VIEW_LEDGER, Role.OPERATE, Role.VIEW_CONFIDENTIAL],
    "auditor": [Role.VIEW_LEDGER, Role.EXPORT],
    "investigator": [Role.VIEW_LEDGER, Role.VIEW_UNREDACTED],
    "ingester": [Role.INGEST],
}


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--runs", type=int, default=150, help="runs per tenant")
        parser.add_argument("--no-jobs", action="store_true",
                            help="run no replay, rollback or export (the rest is seeded)")
        parser.add_argument("--no-story", action="store_true",
                            help="no policies, exception, tool connectors or incident story: "
                            "the ledger, people and waiting approvals only")

    def handle(self, *args: Any, runs: int, no_jobs: bool = False, no_story: bool = False,
               **options: Any) -> None:
        tenants = {slug: Tenant.objects.get_or_create(slug=slug, defaults={"name": name})[0]
                   for slug, name in TENANTS.items()}
        for tenant in tenants.values():
            self._seed_runs(tenant, runs)
            RedactionRule.objects.get_or_create(tenant=tenant, pattern="*password*",
                                                defaults={"label": "secret"})
        credentials = [("admin", "superuser, every tenant", self._user("admin", superuser=True))]
        for username, roles in DEMO_USERS.items():
            password = self._user(username)
            user = User.objects.get(username=username)
            for role in roles:
                grant_role(user, role, tenants["acme"])
            credentials.append((username, ", ".join(roles) + " on acme", password))
        password = self._user("globex-viewer")
        grant_role(User.objects.get(username="globex-viewer"), Role.VIEW_LEDGER,
                   tenants["globex"])
        credentials.append(("globex-viewer", "view_ledger on globex", password))
        key = self._api_key(tenants["acme"])
        self._seed_waiting_work(tenants["acme"])
        if not no_story:
            self._seed_governance_and_story(tenants["acme"], run_jobs=not no_jobs)
        for tenant in tenants.values():
            seal_tenant_digest(tenant)

        out = self.stdout
        out.write(self.style.SUCCESS("\nDemo ready. Sign in at http://127.0.0.1:8000/ with:"))
        for username, what, password in credentials:
            out.write(f"  {username:<14} {password:<24} {what}")
        if key:
            out.write(f"\nAgent API key for acme (ingest, view_ledger): {key}")
            out.write("  curl -H 'Authorization: Bearer <key>' http://127.0.0.1:8000/api/v1/runs/")
        operator = User.objects.get(username="operator")
        _, token = issue_personal_token(operator, "demo", DEMO_USERS["operator"])
        out.write(f"\nThe ledger command as operator: export LEDGER_TOKEN={token}")
        out.write("  .venv/bin/ledger runs --tenant acme   (make more under Personal access "
                  "tokens)")

    def _seed_runs(self, tenant: Tenant, count: int) -> None:
        if Run.objects.filter(tenant=tenant).exists():
            self.stdout.write(f"{tenant.slug}: already has runs, left as it is")
            return
        gen = RunGenerator(tenant.slug, seed=11,
                           start=timezone.now() - timedelta(seconds=count * 125))
        created = 0
        for batch in batches(gen.run() for _ in range(count)):
            result = ingest_batch(tenant, parse_batch({"runs": batch}), recorded_by="demo")
            created += result.created["tool_calls"]
        self.stdout.write(f"{tenant.slug}: {count} runs, {created} tool calls")

    def _seed_waiting_work(self, tenant: Tenant) -> None:
        """Something for each role to find on its home page, once."""
        from approvals.models import ApprovalRequest, ApprovalRoute, Channel
        from approvals.services import request_approval
        from incidents.choices import Severity
        from incidents.services import link_to_incident, open_incident

        if ApprovalRequest.objects.filter(tenant=tenant).exists():
            return
        ApprovalRoute.objects.create(tenant=tenant, name="acme approvers by e-mail",
                                     channel=Channel.EMAIL)
        runs = list(Run.objects.filter(tenant=tenant).exclude(agent__agent_id="ledger-portal")
                    .order_by("-started_at")[:3])
        asks = [("refund_payment", "write", {"order": "A-1042", "amount_cents": 12900}),
                ("delete_customer_records", "delete", {"customer": "cus_381"}),
                ("send_report", "exfil", {"to": "partner@example.com", "rows": 4200})]
        for (tool, action_class, arguments), run in zip(asks, runs, strict=False):
            request_approval(tenant, tool=tool, action_class=action_class, arguments=arguments,
                             run_id=run.run_id, agent_id=run.agent.agent_id,
                             requested_by=run.agent.agent_id)
        failed = Run.objects.filter(tenant=tenant, status="failed").first()
        operator = User.objects.get(username="operator")
        incident = open_incident(tenant, demo_story.INCIDENT_TITLE,
                                 by=operator, severity=Severity.HIGH, ticket_ids=["PD-1042"])
        if failed is not None:
            link_to_incident(incident, by=operator, run_ids=[failed.run_id])
        self.stdout.write(f"{tenant.slug}: {len(asks)} approval requests pending, "
                          f"{incident.reference} open")

    def _seed_governance_and_story(self, tenant: Tenant, *, run_jobs: bool) -> None:
        people = {u.username: u for u in User.objects.filter(
            username__in=["governor", "governor2", "operator", "auditor"])}
        version = demo_governance.seed_policies(tenant, author=people["governor"],
                                                publisher=people["governor2"])
        demo_governance.seed_exception(tenant, version, requester=people["governor2"],
                                       grantor=people["governor"])
        run = demo_story.record_story_run(tenant)
        host, port = demo_tools.address()
        url = demo_tools.base_url(host, port)
        changed = demo_governance.connect_tools(tenant, url, proposer=people["governor"],
                                                confirmer=people["governor2"])
        self.stdout.write(f"{tenant.slug}: {changed} tool connector(s) set to {url}; "
                          f"{run.run_id} recorded")
        with ExitStack() as serving:
            if run_jobs:
                run_jobs = self._tools_reachable(url) and self._serve_tools(serving, host, port)
            for line in demo_story.seed_story(tenant, operator=people["operator"],
                                              auditor=people["auditor"], run_jobs=run_jobs):
                self.stdout.write(line)

    def _serve_tools(self, serving: ExitStack, host: str, port: int) -> bool:
        """The demo's tools answer while the story is seeded (the running server, or one
        started in a thread now)."""
        try:
            serving.enter_context(demo_tools.available(host, port))
        except OSError as exc:
            self.stderr.write(f"the demo's tools cannot listen on {host}:{port} ({exc}): no "
                              "replay, rollback or export seeded")
            return False
        return True

    def _tools_reachable(self, url: str) -> bool:
        try:
            check_url(url)
        except EgressRefused as exc:
            self.stderr.write(f"{exc}: no replay, rollback or export seeded (set "
                              "LEDGER_EGRESS_ALLOW=127.0.0.1, as make demo does)")
            return False
        return True

    @staticmethod
    def _user(username: str, superuser: bool = False) -> str:
        password = secrets.token_urlsafe(9)
        user, _ = User.objects.get_or_create(username=username)
        user.is_staff = True
        user.is_superuser = superuser
        user.set_password(password)
        user.save()
        return password

    @staticmethod
    def _api_key(tenant: Tenant) -> str | None:
        ApiKey.objects.filter(tenant=tenant, name="demo-agent", revoked_at__isnull=True).update(
            revoked_at=timezone.now())
        _, raw = issue_api_key(tenant, "demo-agent", [Role.INGEST, Role.VIEW_LEDGER])
        return raw
