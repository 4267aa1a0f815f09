"""An export is only ever read at a redaction level its reader's roles allow. An unredacted
export reaches its requester (while they hold view_unredacted) and the people a second person
allowed; a lighter-than-strict export reaches only holders of its level's role; no share
crosses tenants. Checked on the download page, the API and the list."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from core.services import grant_role, revoke_role
from exports.services import ExportNotAllowed, share_export

from .test_requests_and_downloads import _body, _user


@pytest.fixture
def unredacted(acme, alice, record, make_run, export_now):
    record(acme, make_run())
    return export_now(acme, alice, redaction_level="none", justification="subpoena 2026-17")


@pytest.fixture
def standard(acme, alice, record, make_run, export_now):
    record(acme, make_run())
    return export_now(acme, alice, redaction_level="standard")


@pytest.fixture
def dave(acme) -> User:
    """A second holder of export and view_unredacted on acme."""
    return _user("dave", acme, "export", "view_unredacted", "view_confidential")


def reads(client, user: User, export) -> bool:
    client.force_login(user)
    page = client.get(reverse("export-download", args=[export.pk]))
    api = client.get(reverse("api:export-download", args=[export.pk]))
    _body(page), _body(api)
    listed = f'id="export-{export.pk}"' in client.get(reverse("export-list")).content.decode()
    assert page.status_code == api.status_code
    assert (page.status_code == 200) == listed
    return page.status_code == 200


def test_an_export_role_alone_does_not_read_an_unredacted_export(acme, client, unredacted):
    auditor = _user("auditor", acme, "export")
    assert not reads(client, auditor, unredacted)
    confidential = _user("confidential", acme, "export", "view_confidential")
    assert not reads(client, confidential, unredacted)


def test_another_holder_of_view_unredacted_reads_it_only_once_allowed(
        acme, alice, dave, client, unredacted):
    peer = _user("peer", acme, "export", "view_unredacted")
    assert not reads(client, peer, unredacted)
    share_export(unredacted, peer, by=dave)
    assert reads(client, peer, unredacted)


def test_the_requester_reads_it_while_they_hold_view_unredacted(acme, alice, client,
                                                                unredacted):
    assert reads(client, alice, unredacted)
    revoke_role(alice, "view_unredacted", acme)
    assert not reads(client, alice, unredacted)


def test_the_requester_cannot_hand_an_unredacted_export_out_alone(acme, alice, unredacted):
    peer = _user("peer", acme, "view_unredacted")
    with pytest.raises(ExportNotAllowed, match="second person"):
        share_export(unredacted, peer, by=alice)


def test_an_unredacted_export_is_shared_only_with_holders_of_view_unredacted(
        acme, dave, unredacted, client):
    outsider = _user("outsider", acme, "export")
    with pytest.raises(ExportNotAllowed, match="view_unredacted"):
        share_export(unredacted, outsider, by=dave)
    assert not reads(client, outsider, unredacted)


def test_a_share_whose_recipient_lost_the_role_reads_nothing(acme, dave, unredacted, client):
    peer = _user("peer", acme, "view_unredacted")
    share_export(unredacted, peer, by=dave)
    revoke_role(peer, "view_unredacted", acme)
    assert not reads(client, peer, unredacted)


def test_a_standard_export_reaches_only_holders_of_view_confidential(
        acme, alice, client, standard):
    auditor = _user("auditor", acme, "export")
    assert not reads(client, auditor, standard)
    external = _user("external", acme)
    with pytest.raises(ExportNotAllowed, match="view_confidential"):
        share_export(standard, external, by=alice)
    grant_role(external, "view_confidential", acme)
    share_export(standard, external, by=alice)
    assert reads(client, external, standard)


def test_no_share_crosses_tenants(acme, alice, charlie, record, make_run, export_now):
    record(acme, make_run())
    strict = export_now(acme, alice)
    with pytest.raises(ExportNotAllowed, match="another tenant"):
        share_export(strict, charlie, by=alice)
