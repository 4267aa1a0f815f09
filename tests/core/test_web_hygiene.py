"""What a production web app owes its users: login throttling and lockout, rate limits per API
key, long-polls that cannot starve the server, HTTPS-only headers, a CSP, no caching of ledger
pages, an API schema behind a login, and admin filters that name only your own tenants."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client, override_settings
from django.urls import reverse

from approvals.services import request_approval

ROOT = Path(__file__).resolve().parents[2]


# -- login throttling ---------------------------------------------------------------------------

def _login(client: Client, password: str, ip: str = "203.0.113.7") -> Any:
    return client.post(reverse("admin:login"), {"username": "alice", "password": password,
                                                "next": "/admin/"}, REMOTE_ADDR=ip)


def test_repeated_wrong_passwords_lock_the_account_out_even_with_the_right_one(alice):
    client = Client()
    answers = [_login(client, "wrong").status_code for _ in range(5)]
    assert answers == [200, 200, 200, 200, 429]  # the form again with an error, then locked
    locked = _login(client, "pw-for-tests-only")
    assert locked.status_code == 429
    assert "locked" in locked.content.decode().lower()
    assert "_auth_user_id" not in client.session


def test_a_lockout_of_one_address_leaves_the_user_free_elsewhere(alice):
    client = Client()
    for _ in range(5):
        _login(client, "wrong")
    assert _login(Client(), "pw-for-tests-only", ip="198.51.100.9").status_code == 302


# -- API rate limits -----------------------------------------------------------------------------

@override_settings(LEDGER_API_RATE="3/min")
def test_an_api_key_is_rate_limited_on_its_own(acme, globex, key_client):
    cache.clear()
    busy, other = key_client(acme), key_client(globex)
    answers = [busy.get("/api/v1/runs/").status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    limited = busy.get("/api/v1/runs/")
    assert limited["Retry-After"]
    assert "throttled" in limited.json()["detail"].lower() or "request was" in \
        limited.json()["detail"].lower()
    assert other.get("/api/v1/runs/").status_code == 200


@override_settings(LEDGER_API_RATE="4/min")
def test_a_keys_limit_slides_over_the_window_boundary(acme, key_client, monkeypatch):
    """A fixed window would let 4 requests at 0:59 and 4 more at 1:00; the previous window's
    count, weighted by how much of it is still within the last minute, keeps it to about 4 a
    minute. Refused requests do not count."""
    from core.api.throttling import ApiKeyRateThrottle

    cache.clear()
    clock = [60_000 * 60 + 59.0]  # 59 s into a window
    monkeypatch.setattr(ApiKeyRateThrottle, "timer", lambda self: clock[0])
    client = key_client(acme)
    assert [client.get("/api/v1/runs/").status_code for _ in range(6)] == [200] * 4 + [429] * 2
    clock[0] += 2  # 1 s into the next window: the previous one still weighs 59/60
    refused = client.get("/api/v1/runs/")
    assert refused.status_code == 429
    # room for one more once 4 x (1 - t/60) <= 3: at 15 s into the window, 14 s from now
    assert float(refused["Retry-After"]) == 14
    clock[0] += 15  # 16 s into it: 4 x 0.73 = 2.9 -> one more fits
    assert [client.get("/api/v1/runs/").status_code for _ in range(2)] == [200, 429]
    clock[0] += 60  # the next window: 1 x 0.73 counted from the last one
    assert [client.get("/api/v1/runs/").status_code for _ in range(4)] == [200] * 3 + [429]

# -- long-polls ----------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
@override_settings(LEDGER_APPROVAL_WAITERS_PER_KEY=1, LEDGER_APPROVAL_MAX_WAIT=30)
def test_one_key_cannot_hold_more_long_polls_than_its_share(live_server, acme, api_key):
    import time

    import httpx2 as httpx

    from approvals.api import views as approval_views

    approval = request_approval(acme, tool="refund", action_class="write", arguments={})
    raw = api_key(acme, ["ingest"])
    headers = {"Authorization": f"Bearer {raw}"}
    url = f"{live_server.url}/api/v1/approvals/{approval.pk}/"
    held: dict[str, Any] = {}
    first = threading.Thread(target=lambda: held.update(answer=httpx.get(
        url, params={"wait": 20}, headers=headers, timeout=30)))
    first.start()
    for _ in range(200):  # until the first poll holds its slot (the server runs in-process)
        if sum(approval_views._waiting.values()):
            break
        time.sleep(0.05)
    second = httpx.get(url, params={"wait": 20}, headers=headers, timeout=30)
    assert second.status_code == 200
    assert second.json()["status"] == "pending"
    assert second.headers["Retry-After"]
    from approvals.models import ApprovalRequest

    ApprovalRequest.objects.filter(pk=approval.pk).update(status="rejected")
    first.join(30)
    assert held["answer"].json()["status"] == "rejected"
    assert "Retry-After" not in held["answer"].headers


# -- headers --------------------------------------------------------------------------------------

def test_ledger_pages_and_api_answers_are_never_cached(alice, user_client):
    client = user_client(alice)
    for url in ("/admin/", "/approvals/", "/api/v1/runs/"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert "no-store" in response["Cache-Control"], url


def test_every_page_carries_a_content_security_policy(alice, user_client):
    response = user_client(alice).get("/admin/")
    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "script-src 'self'" in policy
    assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";", 1)[0]


def test_over_https_plain_http_is_redirected_and_hsts_sent(alice):
    with override_settings(SECURE_SSL_REDIRECT=True, SECURE_HSTS_SECONDS=31_536_000):
        client = Client()
        assert client.get("/admin/login/").status_code == 301
        secure = client.get("/admin/login/", secure=True)
        assert secure.status_code == 200
        assert secure["Strict-Transport-Security"].startswith("max-age=31536000")


def test_with_debug_off_https_is_the_default(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "LEDGER_HTTPS", "DEBUG")}
    env["LEDGER_DATA_DIR"] = str(tmp_path)
    code = ("import django, os; os.environ['DJANGO_SETTINGS_MODULE']='ledger_portal.settings';"
            "django.setup(); from django.conf import settings as s;"
            "print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS > 0, s.SESSION_COOKIE_SECURE)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                          capture_output=True, check=False)
    assert done.stdout.split() == ["True", "True", "True"], done.stderr


def test_check_deploy_is_clean_with_the_documented_production_settings(tmp_path):
    # DJANGO_ALLOW_ASYNC_UNSAFE: set by the browser tests' Playwright in this process only
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "LEDGER_HTTPS", "DEBUG",
                        "DJANGO_ALLOW_ASYNC_UNSAFE")}
    env.update({"LEDGER_DATA_DIR": str(tmp_path), "ALLOWED_HOSTS": "ledger.example.org",
                "SECRET_KEY": "k" * 20 + "-Qz8#vL0p!xR2@mN5^tB7&yW1*cE4(uH6)jK9_fG3+dS"})
    done = subprocess.run([sys.executable, "manage.py", "check", "--deploy",
                           "--fail-level", "WARNING"], cwd=ROOT, env=env, text=True,
                          capture_output=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


# -- API schema -----------------------------------------------------------------------------------

def test_the_api_schema_and_docs_need_a_login(alice, user_client):
    anonymous = Client()
    assert anonymous.get("/api/schema/").status_code in (401, 403)
    docs = anonymous.get("/api/docs/")
    assert docs.status_code == 302
    assert "/admin/login/" in docs["Location"]
    assert user_client(alice).get("/api/schema/").status_code == 200


# -- admin filters ---------------------------------------------------------------------------------

def test_admin_tenant_filters_list_only_your_tenants(alice, charlie, globex, client):
    client.force_login(alice)
    for url in ("/admin/runs/run/", "/admin/runs/toolcall/", "/admin/runs/tool/",
                "/admin/policies/policy/", "/admin/approvals/approvalrequest/"):
        page = client.get(url)
        assert page.status_code == 200, url
        body = page.content.decode()
        assert "globex" not in body, url


def test_a_superuser_still_filters_by_every_tenant(acme, globex, client):
    root = User.objects.create_superuser("root", password="pw-for-tests-only")
    client.force_login(root)
    body = client.get("/admin/runs/tool/").content.decode()
    assert f"tenant__id__exact={globex.pk}" in body
    assert f"tenant__id__exact={acme.pk}" in body
