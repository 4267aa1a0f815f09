"""``ledger approvals``: an approver works the queue from a terminal, under the same rules as
the page and the API (the service decides; the command only asks)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User

from approvals.models import ApprovalRequest, Kind, Status
from approvals.services import request_approval
from core.cli_support import EXIT_FORBIDDEN, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from core.roles import Role
from core.services import grant_role
from ledger_portal import cli
from runs.models import Annotation

pytestmark = pytest.mark.django_db


def held(tenant, **kwargs) -> ApprovalRequest:
    fields = {"tool": "refund_payment", "action_class": "write",
              "arguments": {"amount_cents": 50000, "card": "4111 1111 1111 1111"},
              "requested_by": "agent", **kwargs}
    return request_approval(tenant, **fields)


def ledger(capsys, *argv: str, user: str = "alice") -> tuple[int, str, str]:
    code = cli.main(["--as", user, "approvals", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_shows_pending_requests_of_your_tenants_riskiest_first(
        acme, globex, alice, capsys):
    write, exfil = held(acme), held(acme, action_class="exfil", tool="send_report")
    held(globex, tool="theirs")

    code, out, _ = ledger(capsys, "list", "--json")

    assert code == EXIT_OK
    rows = json.loads(out)
    assert [row["id"] for row in rows] == [exfil.pk, write.pk]
    assert "4111 1111 1111 1111" not in out  # arguments at the approver's clearance


def test_the_table_never_cuts_an_id_on_a_narrow_terminal(alice, capsys, monkeypatch):
    from core.models import Tenant

    monkeypatch.setenv("COLUMNS", "80")
    tenant = Tenant.objects.create(slug="acme-industries-emea-production", name="Acme EMEA")
    grant_role(alice, Role.APPROVE, tenant)
    request = held(tenant)
    code, out, _ = ledger(capsys, "list")
    assert code == EXIT_OK
    assert f" {request.pk} " in out
    assert "acme-industries-emea-production" in out


def test_approve_decides_through_the_service_and_is_annotated(acme, alice, capsys):
    request = held(acme)

    code, out, _ = ledger(capsys, "approve", str(request.pk), "-j", "checked the invoice")

    assert code == EXIT_OK
    assert "approved" in out
    request.refresh_from_db()
    assert request.status == Status.APPROVED
    note = Annotation.objects.get(annotation_kind="approval")
    assert note.author == alice
    assert note.author_label.startswith("alice via local mode")


def test_reject_without_a_justification_is_a_usage_error_and_nothing_changes(
        acme, alice, capsys):
    request = held(acme)
    code, _, err = ledger(capsys, "reject", str(request.pk))
    assert code == EXIT_USAGE
    assert "justification" in err
    request.refresh_from_db()
    assert request.status == Status.PENDING


def test_nobody_approves_their_own_request_from_the_terminal(acme, alice, capsys):
    request = held(acme, requester=alice, requested_by="alice")
    code, _, err = ledger(capsys, "approve", str(request.pk), "-j", "mine")
    assert code == EXIT_FORBIDDEN
    assert "four-eyes" in err
    request.refresh_from_db()
    assert request.status == Status.PENDING


def test_another_tenants_request_is_not_found(acme, globex, alice, capsys):
    theirs = held(globex)
    assert ledger(capsys, "show", str(theirs.pk))[0] == EXIT_NOT_FOUND
    assert ledger(capsys, "approve", str(theirs.pk), "-j", "x")[0] == EXIT_NOT_FOUND
    theirs.refresh_from_db()
    assert theirs.status == Status.PENDING


def test_show_warns_when_approving_lifts_the_sandbox_and_names_voters(acme, alice, capsys):
    dave = User.objects.create_user("dave", is_staff=True)
    grant_role(dave, Role.APPROVE, acme)
    request = held(acme, kind=Kind.LEAVE_SANDBOX, tool="replay", run_id="run-7",
                   action_class="exfil")
    assert ledger(capsys, "approve", str(request.pk), "-j", "outage over", user="dave")[0] == \
        EXIT_OK

    code, out, _ = ledger(capsys, "show", str(request.pk))

    assert code == EXIT_OK
    assert "CAREFUL: Approving lifts the sandbox" in out
    assert "voted: dave" in out
    assert "you may decide it" in out
    code, out, _ = ledger(capsys, "show", str(request.pk), user="dave")
    assert "you already voted on it" in out
