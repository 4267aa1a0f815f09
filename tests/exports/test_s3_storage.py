"""Export bundles in an S3-compatible store (``LEDGER_EXPORT_STORAGE=s3``), tested against a
real S3 server on loopback (moto's server mode): the bundle is written there and only there,
downloaded through the portal with its permission checks (another tenant's user gets a 404 and
never a URL), verified offline with ``ledger verify-export``, and deleted when it expires."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from django.urls import reverse

from core import signing
from exports.models import ExportDownload, ExportPart
from exports.services import (
    expire_exports,
    join,
    plan,
    produce_now,
    produce_part,
    request_export,
)
from ledger_portal.cli import main
from tests.exports.conftest import WINDOW

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"access_key": "loopback-test-key", "secret_key": "loopback-test-secret"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: Any) -> Iterator[str]:
    """moto's S3 server in a process of its own, as a real store is: what it holds in memory is
    not counted as the portal's."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                               "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's server did not start: see {log.name}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture
def s3_exports(settings: Any, tmp_path: Path, s3_server: str) -> Any:
    """The exports storage on a fresh bucket of the loopback S3 server; the bucket's client."""
    bucket = f"exports-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                          aws_access_key_id=KEYS["access_key"],
                          aws_secret_access_key=KEYS["secret_key"])
    client.create_bucket(Bucket=bucket)
    settings.STORAGES = {**settings.STORAGES, "exports": {
        "BACKEND": "exports.s3.StreamingS3Storage", "OPTIONS": {
            "bucket_name": bucket, "endpoint_url": s3_server, "region_name": "us-east-1",
            "location": "exports", "default_acl": "private", "file_overwrite": False,
            **KEYS}}}
    settings.LEDGER_EXPORT_TMP_DIR = tmp_path / "tmp"
    client.bucket = bucket
    return client


def _keys(client: Any) -> list[str]:
    listed = client.list_objects_v2(Bucket=client.bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


@pytest.fixture
def s3_export(acme, alice, record, make_run, s3_exports) -> Any:
    record(acme, make_run(), make_run())
    return produce_now(request_export(acme, *WINDOW, by=alice, enqueue=False))


def test_the_bundle_is_written_to_the_bucket_and_nowhere_else(s3_export, s3_exports, tmp_path):
    assert s3_export.status == "done"
    assert _keys(s3_exports) == [f"exports/{s3_export.file}"]  # the parts are gone, not left
    assert not list((tmp_path / "tmp").rglob("*.tar"))


def test_each_part_is_written_to_the_bucket_and_checked_there_before_the_join(
        acme, alice, record, make_run, s3_exports, settings):
    settings.LEDGER_EXPORT_PART_ROWS = 1  # every row a part of its own
    record(acme, make_run(), make_run())
    export = request_export(acme, *WINDOW, by=alice, enqueue=False)
    for part_id in plan(export.pk):
        produce_part(part_id)
    parts = sorted(f"exports/{name}" for name in ExportPart.objects.filter(
        export=export).values_list("file", flat=True))
    assert len(parts) > 2
    assert _keys(s3_exports) == parts
    # a part changed in the bucket after its worker wrote it is not joined into a bundle
    s3_exports.put_object(Bucket=s3_exports.bucket, Key=parts[0], Body=b"{}\n")
    with pytest.raises(Exception, match="altered in storage"):
        join(export.pk)
    export.refresh_from_db()
    assert export.status == "failed"


def test_a_part_a_dead_attempt_left_unrecorded_in_the_bucket_is_removed(
        acme, alice, record, make_run, s3_exports):
    record(acme, make_run())
    export = request_export(acme, *WINDOW, by=alice, enqueue=False)
    part_ids = plan(export.pk)
    # as if an earlier attempt uploaded its part and its worker died before recording it
    s3_exports.put_object(Bucket=s3_exports.bucket, Key=f"exports/parts/{export.pk}/0-1.part",
                          Body=b"{}\n")
    for part_id in part_ids:
        produce_part(part_id)
    published = join(export.pk)
    assert published is not None
    assert published.status == "done"
    assert _keys(s3_exports) == [f"exports/{published.file}"]


def test_it_is_downloaded_through_the_portal_and_verifies_offline(
        s3_export, globex, charlie, alice, client, tmp_path, capsys):
    client.force_login(charlie)  # every role, on globex
    refused = client.get(reverse("export-download", args=[s3_export.pk]))
    assert refused.status_code == 404
    assert s3_exports_url_free(refused)
    assert not ExportDownload.objects.exists()

    client.force_login(alice)
    answer = client.get(reverse("export-download", args=[s3_export.pk]))
    assert answer.status_code == 200
    bundle = tmp_path / "downloaded.tar"
    bundle.write_bytes(b"".join(answer.streaming_content))
    assert ExportDownload.objects.filter(export=s3_export).count() == 1
    code = main(["verify-export", str(bundle), "--public-key", signing.public_key_b64()])
    assert code == 0, capsys.readouterr()


def test_a_download_passes_through_the_portal_a_chunk_at_a_time(
        s3_export, s3_exports, alice, client):
    size = 32 * 1024 * 1024  # as if the bundle were this big: the portal serves bytes
    s3_exports.put_object(Bucket=s3_exports.bucket, Key=f"exports/{s3_export.file}",
                          Body=bytes(size))
    s3_export.size = size
    s3_export.save(update_fields=["size"])
    client.force_login(alice)
    tracemalloc.start()
    try:
        answer = client.get(reverse("export-download", args=[s3_export.pk]))
        served = sum(len(chunk) for chunk in answer.streaming_content)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert served == size
    assert answer["Content-Length"] == str(size)
    assert peak < size // 4, f"the download held {peak} bytes at once"


def s3_exports_url_free(response: Any) -> bool:
    """Nothing of the store leaks to someone refused: no bucket URL, no signature."""
    body = response.content.decode(errors="replace")
    return "X-Amz-Signature" not in body and "127.0.0.1:" not in response.get("Location", "")


def test_an_expired_export_is_deleted_from_the_bucket(s3_export, s3_exports):
    assert _keys(s3_exports)
    assert expire_exports(now=s3_export.expires_at + timedelta(seconds=1)) == 1
    assert _keys(s3_exports) == []


def test_the_s3_setting_needs_a_bucket(tmp_path):
    env = {**os.environ, "LEDGER_EXPORT_STORAGE": "s3", "LEDGER_DATA_DIR": str(tmp_path)}
    env.pop("LEDGER_S3_BUCKET", None)
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "LEDGER_EXPORT_STORAGE=s3 needs LEDGER_S3_BUCKET" in done.stderr


def test_the_environment_configures_the_bucket_with_keys_from_files(s3_server, tmp_path):
    """What an operator sets (docs/operations.md): the store's address, bucket and keys, the
    secret read from a file."""
    bucket = f"env-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                          aws_access_key_id=KEYS["access_key"],
                          aws_secret_access_key=KEYS["secret_key"])
    client.create_bucket(Bucket=bucket)
    secret_file = tmp_path / "s3-secret"
    secret_file.write_text(KEYS["secret_key"])
    env = {**os.environ, "LEDGER_EXPORT_STORAGE": "s3", "LEDGER_DATA_DIR": str(tmp_path),
           "LEDGER_S3_BUCKET": bucket, "LEDGER_S3_ENDPOINT_URL": s3_server,
           "LEDGER_S3_REGION": "us-east-1", "LEDGER_S3_ACCESS_KEY_ID": KEYS["access_key"],
           "LEDGER_S3_SECRET_ACCESS_KEY_FILE": str(secret_file)}
    script = ("from django.core.files.base import ContentFile\n"
              "from exports.storage import export_storage\n"
              "print(type(export_storage()).__name__)\n"
              "print(export_storage().save('probe.txt', ContentFile(b'x')))")
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-2:] == ["StreamingS3Storage", "probe.txt"]
    listed = client.list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Key"] for item in listed] == ["exports/probe.txt"]
