"""Who may request which export, who may download it (and that each download is recorded and
annotated), the API's progress view, and expiry."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import Max
from django.urls import reverse
from django.utils import timezone

from core.services import grant_role
from exports.models import AuditExport, ExportDownload
from exports.services import ExportNotAllowed, expire_exports, request_export, share_export
from exports.storage import export_storage
from runs.models import Annotation, Run

from .conftest import WINDOW


@pytest.fixture
def done_export(acme, alice, record, make_run, export_now):
    record(acme, make_run(), make_run())
    return export_now(acme, alice)


def _body(response):
    """Read a response through the test client, which closes a streamed file once it is read.

    Calling ``response.close()`` directly would fire ``request_finished`` with Django's
    connection cleanup attached and close the test's database connection mid-transaction.
    """
    return b"".join(response.streaming_content) if response.streaming else response.content


def _user(name, tenant, *roles):
    user = User.objects.create_user(name, password="pw-for-tests-only", is_staff=True)
    for role in roles:
        grant_role(user, role, tenant)
    return user


def test_requesting_needs_the_export_role(acme, bob, export_dirs):
    with pytest.raises(ExportNotAllowed, match="needs the export role"):
        request_export(acme, *WINDOW, by=bob, enqueue=False)


def test_lighter_redaction_needs_its_own_role_and_none_a_justification(acme, export_dirs):
    auditor = _user("auditor", acme, "export")
    with pytest.raises(ExportNotAllowed, match="needs the view_confidential role"):
        request_export(acme, *WINDOW, by=auditor, redaction_level="standard", enqueue=False)
    grant_role(auditor, "view_confidential", acme)
    request_export(acme, *WINDOW, by=auditor, redaction_level="standard", enqueue=False)
    with pytest.raises(ExportNotAllowed, match="needs the view_unredacted role"):
        request_export(acme, *WINDOW, by=auditor, redaction_level="none", justification="x",
                       enqueue=False)
    grant_role(auditor, "view_unredacted", acme)
    with pytest.raises(ValidationError, match="needs a justification"):
        request_export(acme, *WINDOW, by=auditor, redaction_level="none", enqueue=False)


def test_an_unredacted_export_records_its_justification_in_the_ledger(acme, alice, export_dirs):
    export = request_export(acme, *WINDOW, by=alice, redaction_level="none",
                            justification="subpoena 2026-17", enqueue=False)
    note = Annotation.objects.get(tenant=acme, data__event="export_requested")
    assert "subpoena 2026-17" in note.body
    assert note.data["export_id"] == export.pk
    assert note.author == alice


@pytest.mark.parametrize(("who", "expected"), [
    ("alice", 200),       # export role on acme
    ("auditor", 200),     # export role only
    ("bob", 404),         # acme, ingest only
    ("viewer", 404),      # acme, view_ledger without export
    ("charlie", 404),     # another tenant, every role there
    ("external", 200),    # no role anywhere, the export shared with them
    ("stranger", 404),    # no role, nothing shared
])
def test_download_permission_matrix(who, expected, done_export, acme, alice, bob, charlie,
                                    client):
    users = {"alice": alice, "bob": bob, "charlie": charlie,
             "auditor": _user("auditor", acme, "export"),
             "viewer": _user("viewer", acme, "view_ledger"),
             "external": _user("external", acme), "stranger": _user("stranger", acme)}
    share_export(done_export, users["external"], by=alice)
    client.force_login(users[who])
    page = client.get(reverse("export-download", args=[done_export.pk]),
                      HTTP_USER_AGENT="audit-tool/1.0", REMOTE_ADDR="10.1.2.3")
    api = client.get(reverse("api:export-download", args=[done_export.pk]))
    api_body = _body(api)
    assert page.status_code == expected
    assert api.status_code == expected
    listed = client.get(reverse("export-list")).content.decode()
    assert (f'id="export-{done_export.pk}"' in listed) == (expected == 200)
    if expected == 200:
        body = _body(page)
        with export_storage().open(done_export.file, "rb") as stored:
            assert body == api_body == stored.read()
        download = ExportDownload.objects.filter(export=done_export).order_by("at").first()
        assert download is not None
        assert (download.user, download.ip, download.user_agent) == (
            users[who], "10.1.2.3", "audit-tool/1.0")
        assert Annotation.objects.filter(data__event="export_downloaded",
                                         data__export_id=done_export.pk).count() == 2
    else:
        assert not ExportDownload.objects.exists()


def test_sharing_needs_the_export_role(done_export, acme, bob):
    with pytest.raises(ExportNotAllowed):
        share_export(done_export, bob, by=bob)


def test_an_exports_watermarks_are_its_own_tenants(acme, globex, alice, record, make_run,
                                                  export_dirs):
    """The highest key of each table as the export is requested is the tenant's own: the export
    row (its admin page shows every field) says nothing of what other tenants recorded."""
    from exports.sections import SECTIONS

    record(acme, make_run())
    record(globex, make_run("globex"), make_run("globex"))  # recorded after acme's
    export = request_export(acme, *WINDOW, by=alice, enqueue=False)
    assert export.watermarks == {
        s.name: s.model._default_manager.filter(tenant=acme).aggregate(top=Max("pk"))["top"] or 0
        for s in SECTIONS}
    assert export.watermarks["run"] < Run.objects.aggregate(top=Max("pk"))["top"]


def test_the_api_requests_an_export_and_shows_its_progress(acme, alice, key_client, record,
                                                          make_run, export_dirs,
                                                          django_capture_on_commit_callbacks):
    from exports.services import produce_now

    record(acme, make_run())
    client = key_client(acme, ["export"])
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(reverse("api:export-list"), {
            "window_from": "2000-01-01T00:00:00Z", "window_to": "2100-01-01T00:00:00Z"},
            format="json")
    assert response.status_code == 201, response.content
    assert len(queued) == 1  # the plan task, sent once the request commits
    export_id = response.json()["id"]
    queued_view = client.get(reverse("api:export-detail", args=[export_id])).json()
    assert (queued_view["status"], queued_view["percent"], queued_view["download"]) == (
        "queued", 0, None)
    produce_now(AuditExport.objects.get(pk=export_id))
    done = client.get(reverse("api:export-detail", args=[export_id])).json()
    assert done["status"] == "done"
    assert done["percent"] == 100
    assert done["rows_done"] == done["rows_total"] == sum(done["counts"].values()) > 0
    assert done["manifest"]["files"]["records.jsonl"]["sha256"]
    bundle = client.get(done["download"])
    assert _body(bundle)
    assert bundle.status_code == 200
    assert bundle["Content-Type"] == "application/x-tar"
    listing = client.get(reverse("api:export-list")).json()
    assert [e["id"] for e in listing["results"]] == [export_id]


def test_a_key_without_the_export_scope_cannot_request(acme, key_client, export_dirs):
    response = key_client(acme, ["view_ledger"]).post(reverse("api:export-list"), {
        "window_from": "2000-01-01T00:00:00Z", "window_to": "2100-01-01T00:00:00Z"},
        format="json")
    assert response.status_code == 403


def test_expired_exports_lose_their_file_and_say_so(done_export, client, alice):
    name = done_export.file
    assert export_storage().exists(name)
    assert done_export.expires_at > timezone.now() + timedelta(days=6)
    assert expire_exports(now=timezone.now()) == 0
    assert expire_exports(now=done_export.expires_at + timedelta(seconds=1)) == 1
    done_export.refresh_from_db()
    assert done_export.status == "expired"
    assert not export_storage().exists(name)
    client.force_login(alice)
    response = client.get(reverse("export-download", args=[done_export.pk]))
    assert response.status_code == 302  # back to the list, with the reason
    assert not ExportDownload.objects.exists()


def test_an_export_under_review_does_not_expire_until_the_review_ends(done_export, alice):
    from exports.review import set_under_review

    set_under_review(done_export, by=alice, under_review=True)
    later = done_export.expires_at + timedelta(seconds=1)
    assert expire_exports(now=later) == 0
    assert export_storage().exists(done_export.file)
    set_under_review(done_export, by=alice, under_review=False)
    assert expire_exports(now=later) == 1


def test_parts_a_dead_joiner_left_behind_are_swept_by_the_expiry_task(done_export):
    from django.core.files.base import ContentFile

    from exports.models import ExportPart

    storage = export_storage()
    assert not ExportPart.objects.filter(export=done_export).exclude(file="").exists()
    # as if the worker died between publishing the bundle and discarding the parts
    part = ExportPart.objects.filter(export=done_export).earliest("index")
    left = storage.save(f"parts/{done_export.pk}/{part.index}-1.part", ContentFile(b"{}\n"))
    ExportPart.objects.filter(pk=part.pk).update(file=left)

    assert expire_exports(now=timezone.now()) == 0
    assert not storage.exists(left)
    assert not ExportPart.objects.filter(export=done_export).exclude(file="").exists()
    assert storage.exists(done_export.file)  # the bundle itself is untouched
