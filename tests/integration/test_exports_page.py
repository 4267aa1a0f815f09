"""The exports page in a real browser: request an export, watch it complete, download it, and
the downloaded bundle verifies offline."""

from __future__ import annotations

import hashlib

import pytest

from exports.models import ExportDownload
from exports.verify import verify_bundle
from ledger_portal.celery import app

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def eager_tasks(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "exports": {
        "BACKEND": "exports.storage.AtomicFileSystemStorage",
        "OPTIONS": {"location": str(tmp_path / "published")}}}
    settings.LEDGER_EXPORT_TMP_DIR = tmp_path / "tmp"
    settings.LEDGER_EXPORT_PART_ROWS = 10  # several parts, joined
    app.conf.task_always_eager = True  # the embedded default with the worker in process
    yield
    app.conf.task_always_eager = False


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
    report = verify_bundle(target)
    assert report.ok, report.problems
    assert hashlib.sha256(target.read_bytes()).hexdigest() == checksum
    assert ExportDownload.objects.get().user == alice
