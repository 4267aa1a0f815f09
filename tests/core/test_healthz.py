"""``/healthz`` says whether this web process can serve, to anyone, and nothing more."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_it_answers_without_a_login_while_the_database_answers(client):
    answer = client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "database": "ok", "cache": "ok"}
    assert "no-store" in answer["Cache-Control"]


def test_it_names_no_version_host_or_setting(client, settings):
    body = client.get("/healthz").content.decode()
    for secret in (settings.SECRET_KEY, str(settings.DATA_DIR), "django", "postgres",
                   "sqlite"):
        assert secret.lower() not in body.lower()


def test_it_only_reads(client):
    assert client.post("/healthz").status_code == 405
