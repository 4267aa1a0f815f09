"""Every login, failed login and logout is recorded (who, when, from where, how) and listed,
read-only, to those who watch logins; password sign-in can be switched off for good."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from core.models import LoginEvent
from core.sso_settings import authentication_backends

ROOT = Path(__file__).resolve().parents[2]


def _login(client: Client, password: str, username: str = "alice",
           ip: str = "203.0.113.7") -> Any:
    return client.post(reverse("admin:login"), {"username": username, "password": password,
                                                "next": "/admin/"}, REMOTE_ADDR=ip)


def events() -> list[tuple[str, str, str, str | None, str]]:
    return list(LoginEvent.objects.order_by("pk").values_list(
        "username", "method", "outcome", "ip", "reason"))


def test_a_failed_login_a_login_and_a_logout_are_each_recorded(alice):
    client = Client()
    assert _login(client, "wrong").status_code == 200
    assert _login(client, "pw-for-tests-only").status_code == 302
    client.post(reverse("admin:logout"), REMOTE_ADDR="203.0.113.7")
    assert events() == [
        ("alice", "password", "failure", "203.0.113.7", "wrong name or password"),
        ("alice", "password", "success", "203.0.113.7", ""),
        ("alice", "password", "logout", "203.0.113.7", "")]
    assert LoginEvent.objects.filter(outcome="success").get().account == alice


def test_the_lockout_still_counts_failures_and_the_record_says_locked(alice):
    client = Client()
    for _ in range(5):
        _login(client, "wrong")
    assert _login(client, "pw-for-tests-only").status_code == 429
    assert AccessAttempt.objects.get(username="alice").failures_since_start >= 5
    assert events()[-1][4] == "locked out (too many failures)"


def test_the_login_record_is_for_superusers_and_login_watchers_only(alice, db):
    LoginEvent.objects.create(username="alice", method="password", outcome="success")
    changelist = reverse("admin:ledger_portal_loginevent_changelist")
    client = Client()
    client.force_login(alice)  # every role on a tenant: logins are no tenant's
    assert client.get(changelist).status_code == 403
    watcher = User.objects.create_user("sec", is_staff=True)
    watcher.user_permissions.add(Permission.objects.get(codename="view_loginevent"))
    client.force_login(watcher)
    page = client.get(changelist)
    assert page.status_code == 200
    assert "alice" in page.content.decode()
    root = User.objects.create_superuser("root")
    client.force_login(root)
    assert client.get(reverse("admin:ledger_portal_loginevent_add")).status_code == 403
    event = LoginEvent.objects.earliest("pk")
    assert client.post(reverse("admin:ledger_portal_loginevent_delete", args=[event.pk]),
                       {"post": "yes"}).status_code == 403


def test_with_password_login_off_the_admin_form_refuses_the_right_password(
        alice, settings, oidc_provider):
    settings.AUTHENTICATION_BACKENDS = authentication_backends(
        list(settings.AUTHENTICATION_BACKENDS), sso=True, password=False)
    settings.LEDGER_PASSWORD_LOGIN = False
    client = Client()
    page = client.get(reverse("admin:login")).content.decode()
    assert 'id="id_password"' not in page
    assert "Sign in with SSO" in page
    assert _login(client, "pw-for-tests-only").status_code == 200
    assert "_auth_user_id" not in client.session
    assert events()[-1][2:] == ("failure", "203.0.113.7", "password sign-in is switched off")


def _settings_with(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE")}
    clean.update({"LEDGER_DATA_DIR": str(tmp_path), "DEBUG": "1", **env})
    code = ("import django, os; os.environ['DJANGO_SETTINGS_MODULE']='ledger_portal.settings';"
            "django.setup(); from django.conf import settings as s;"
            "print(','.join(s.AUTHENTICATION_BACKENDS), s.SESSION_COOKIE_AGE)")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, text=True,
                          capture_output=True, check=False)


def test_the_environment_switches_password_login_off_only_with_single_sign_on(tmp_path):
    secret = tmp_path / "client-secret"
    secret.write_text("s3cret\n")
    done = _settings_with(tmp_path, OIDC_ISSUER="https://idp.example.org/",
                          OIDC_CLIENT_ID="ledger", OIDC_CLIENT_SECRET_FILE=str(secret),
                          LEDGER_PASSWORD_LOGIN="0", SESSION_COOKIE_AGE="3600")
    backends, age = done.stdout.split()
    assert "django.contrib.auth.backends.ModelBackend" not in backends.split(","), done.stderr
    assert backends.split(",")[:2] == ["axes.backends.AxesStandaloneBackend",
                                       "core.sso.SsoBackend"]
    assert age == "3600"
    refused = _settings_with(tmp_path, LEDGER_PASSWORD_LOGIN="0")
    assert "LEDGER_PASSWORD_LOGIN=0 needs OIDC_ISSUER" in refused.stderr


@pytest.mark.parametrize("role_map", ['{"g": {"acme": ["root"]}}', '["not", "a", "map"]'])
def test_a_bad_role_map_stops_the_start(tmp_path, role_map):
    done = _settings_with(tmp_path, LEDGER_OIDC_ROLE_MAP=role_map)
    assert done.returncode != 0
    assert "LEDGER_OIDC_ROLE_MAP" in done.stderr


def test_without_an_issuer_there_is_no_single_sign_on(client, db):
    assert client.get("/oidc/authenticate/").status_code == 404
    assert "Sign in with SSO" not in client.get(reverse("admin:login")).content.decode()


@pytest.mark.django_db
def test_login_events_are_kept_for_the_retention_period_then_removed(settings):
    """They hold people's addresses: kept as long as security staff need them, not forever."""
    from datetime import timedelta

    from django.utils import timezone

    from core.tasks import prune_login_events

    settings.LEDGER_LOGIN_EVENT_RETENTION_DAYS = 30
    now = timezone.now()
    for age in (0, 29, 31, 400):
        LoginEvent.objects.create(at=now - timedelta(days=age), username=f"aged-{age}",
                                  ip="203.0.113.9", method="password", outcome="success")
    assert prune_login_events.apply().get() == 2
    assert sorted(LoginEvent.objects.values_list("username", flat=True)) == ["aged-0",
                                                                            "aged-29"]
    assert prune_login_events.apply().get() == 0  # nothing twice


@pytest.mark.parametrize(("proxies", "forwarded", "recorded"), [
    (0, "6.6.6.6", "127.0.0.1"),  # no proxy in front: the header is anyone's to write
    (1, "198.51.100.23", "198.51.100.23"),  # nginx: X-Forwarded-For $remote_addr
    # $proxy_add_x_forwarded_for: what the client wrote, then what the proxy saw
    (1, "6.6.6.6, 198.51.100.23", "198.51.100.23"),
    (2, "6.6.6.6, 198.51.100.23, 10.0.0.5", "198.51.100.23"),
])
def test_behind_proxies_the_client_address_is_the_one_the_outermost_proxy_saw(
        alice, settings, proxies, forwarded, recorded):
    """LEDGER_PROXY_COUNT proxies in front: each appends the address it saw, so the client is
    that many from the right; anything left of it was written by the client."""
    settings.LEDGER_PROXY_COUNT = proxies
    client = Client()
    client.post(reverse("admin:login"), {"username": "alice", "password": "wrong"},
                REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
    assert events()[-1][3] == recorded
    assert AccessAttempt.objects.get(username="alice").ip_address == recorded  # the lockout's
