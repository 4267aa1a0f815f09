"""The exports page in a real browser: request an export, watch it complete, download it, and
the downloaded bundle verifies offline; and the download permission matrix: without the export
role on the tenant (same tenant or another) nothing is listed and the download URL is a 404; a
user the export was shared with downloads it."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from core import signing
from exports.models import ExportDownload
from exports.verify import verify_bundle
from tests.celery_conf import celery_conf

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def eager_tasks(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "exports": {
        "BACKEND": "exports.storage.AtomicFileSystemStorage",
        "OPTIONS": {"location": str(tmp_path / "published")}}}
    settings.LEDGER_EXPORT_TMP_DIR = tmp_path / "tmp"
    settings.LEDGER_EXPORT_PART_ROWS = 10  # several parts, joined
    with celery_conf(task_always_eager=True):  # the embedded default, worker in process
        yield


def test_request_watch_and_download_an_export(live_server, page, login, alice, acme, record,
                                              make_run, eager_tasks, tmp_path):
    record(acme, make_run(), make_run())
    login("alice")
    page.goto(f"{live_server.url}/exports/")
    assert "No exports yet." in page.content()
    page.select_option("#id_tenant", "acme")
    page.fill("#id_window_from", "2000-01-01T00:00")
    page.fill("#id_window_to", "2099-12-31T00:00")
    page.click("#request-export")
    page.wait_for_load_state()
    assert "requested" in page.locator(".messagelist").inner_text()
    row = page.locator("tr.export").first
    row.locator(".status-done").wait_for()
    text = row.inner_text()
    assert "strict" in text
    bar = row.locator(".progress span").get_attribute("style") or ""
    assert "width: 100%" in bar
    checksum = row.locator(".checksum").inner_text().strip()
    assert len(checksum) == 64
    with page.expect_download() as waiting:
        row.locator("a.download").click()
    download = waiting.value
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    report = verify_bundle(target, signing.public_key_b64())
    assert report.ok, report.problems
    assert hashlib.sha256(target.read_bytes()).hexdigest() == checksum
    assert ExportDownload.objects.get().user == alice


# -- the denied side of the download permission matrix ----------------------------------------

@pytest.fixture
def alices_export(acme, alice, record, make_run, eager_tasks):
    """A finished export of acme, requested by alice (export role on acme)."""
    from exports.services import produce_now, request_export

    record(acme, make_run())
    export = produce_now(request_export(acme, datetime(2000, 1, 1, tzinfo=UTC),
                                        datetime(2100, 1, 1, tzinfo=UTC), by=alice, enqueue=False))
    assert export.status == "done", export.error
    return export


@pytest.fixture
def session_as(browser, live_server):
    """A browser session of its own per user (separate cookies), signed in."""
    contexts = []

    def open_as(username: str):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        contexts.append(context)
        tab = context.new_page()
        tab.set_default_timeout(10_000)
        tab.goto(f"{live_server.url}/admin/login/")
        tab.fill("#id_username", username)
        tab.fill("#id_password", "pw-for-tests-only")
        tab.click("input[type=submit]")
        tab.wait_for_url(f"{live_server.url}/admin/")
        return tab
    yield open_as
    for context in contexts:
        context.close()


def _outsider(username: str):
    from django.contrib.auth.models import User

    return User.objects.create_user(username, password="pw-for-tests-only", is_staff=True)


def test_without_the_export_role_an_export_is_neither_listed_nor_downloadable(
        live_server, session_as, alices_export, bob, charlie):
    """bob (acme, ingest only: same tenant, no export role) and charlie (export role, on
    globex) see no export and get a 404 on the download URL; nothing is recorded."""
    url = f"{live_server.url}/exports/{alices_export.pk}/download/"
    for username in ("bob", "charlie"):
        tab = session_as(username)
        tab.goto(f"{live_server.url}/exports/")
        assert "No exports yet." in tab.content()
        assert tab.locator("tr.export").count() == 0
        assert tab.locator("a.download").count() == 0
        response = tab.goto(url)
        assert response is not None
        assert response.status == 404
    bob_tab = session_as("bob")
    bob_tab.goto(f"{live_server.url}/exports/")
    assert bob_tab.locator("#request-export").count() == 0  # no tenant to request for
    assert not ExportDownload.objects.exists()


def test_a_user_the_export_was_shared_with_can_download_it(
        live_server, session_as, alices_export, alice, tmp_path):
    """dave holds no role anywhere: before alice shares the export he is refused like anyone
    else; once she shares it (on the page), it is listed for him and he downloads it, and the
    download is recorded as his. The share is for that export only."""
    from exports.services import produce_now, request_export

    dave = _outsider("dave")
    other = produce_now(request_export(alices_export.tenant, datetime(2000, 1, 1, tzinfo=UTC),
                                       datetime(2100, 1, 1, tzinfo=UTC), by=alice, enqueue=False))
    url = f"{live_server.url}/exports/{alices_export.pk}/download/"
    dave_tab = session_as("dave")
    response = dave_tab.goto(url)
    assert response is not None
    assert response.status == 404

    alice_tab = session_as("alice")
    alice_tab.goto(f"{live_server.url}/exports/")
    row = alice_tab.locator(f"#export-{alices_export.pk}")
    row.locator("input[name=username]").fill("dave")
    row.locator("button[type=submit]").click()
    alice_tab.wait_for_load_state()
    assert "shared with dave" in alice_tab.locator(".messagelist").inner_text()

    dave_tab.goto(f"{live_server.url}/exports/")
    assert dave_tab.locator("tr.export").count() == 1
    row = dave_tab.locator(f"#export-{alices_export.pk}")
    with dave_tab.expect_download() as waiting:
        row.locator("a.download").click()
    target = tmp_path / waiting.value.suggested_filename
    waiting.value.save_as(target)
    assert verify_bundle(target, signing.public_key_b64()).ok
    assert hashlib.sha256(target.read_bytes()).hexdigest() == alices_export.sha256
    download = ExportDownload.objects.get()
    assert (download.user, download.export_id) == (dave, alices_export.pk)

    response = dave_tab.goto(f"{live_server.url}/exports/{other.pk}/download/")
    assert response is not None
    assert response.status == 404  # not shared with him
    assert ExportDownload.objects.count() == 1
