"""docs/deployment.md, followed on loopback: the portal started with ``deploy/env.example`` as
the page says to fill it in, the systemd unit's own environment, and ``deploy/entrypoint.sh
web``, on PostgreSQL and Redis, behind single sign-on at a real OpenID provider. The test plays
the TLS proxy (it sends ``X-Forwarded-Proto`` and ``X-Forwarded-For`` as the page's nginx
does) and checks what the page's last step checks: health, a person signed in through the
provider with the roles of their groups, ``/metrics`` behind its token, JSON log lines with a
request id and no secret.

Only what the page marks CHANGE (host names, the provider, secrets' files, the database) and
the unit's absolute paths are replaced; the test database is reached as its owner, not an app
role (roles have their own test in tests/faults/test_supervision.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from django.conf import settings

from core.models import LoginEvent, LoginMethod
from tests.celery_conf import worker_env
from tests.oidc_provider import CLIENT_SECRET, OidcProvider, running_provider

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]
#: What the page tells a deployer to change, besides the secrets' contents.
CHANGED = {"ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "LEDGER_PUBLIC_URL", "LEDGER_BIND",
           "DATABASE_URL", "REDIS_URL", "SECRET_KEY_FILE", "OIDC_ISSUER",
           "OIDC_CLIENT_SECRET_FILE", "LEDGER_METRICS_TOKEN_FILE"}
CLIENT_ADDRESS = "198.51.100.23"


def settings_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines, as systemd's EnvironmentFile reads them (no quoting used)."""
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            found[name.strip()] = value
    return found


def unit_environment(unit: Path) -> dict[str, str]:
    found = {}
    for line in unit.read_text().splitlines():
        if line.startswith("Environment="):
            for pair in line.removeprefix("Environment=").split():
                name, _, value = pair.partition("=")
                found[name] = value
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class BehindTheProxy(requests.Session):
    """A browser behind the page's nginx: the portal hears HTTPS and the client's address,
    and its secure cookies travel (the proxy is the TLS end; here the loopback is)."""

    def __init__(self, portal: str) -> None:
        super().__init__()
        self.portal = portal

    def request(self, method: str | bytes, url: str | bytes, *args: Any,
                **kwargs: Any) -> requests.Response:
        url = str(url).replace(self.portal.replace("http:", "https:"), self.portal)
        if url.startswith(self.portal):
            kwargs["headers"] = {**kwargs.get("headers", {}), "X-Forwarded-Proto": "https",
                                 "X-Forwarded-For": CLIENT_ADDRESS}
            # requests keeps a secure cookie but never sends it over plain HTTP: by hand
            kwargs["cookies"] = {c.name: c.value for c in self.cookies if c.secure}
        return super().request(str(method), url, *args, **kwargs)


def sign_in_with_sso(browser: BehindTheProxy, provider: OidcProvider, user: str
                     ) -> requests.Response:
    response = browser.get(f"{browser.portal}/oidc/authenticate/", allow_redirects=False)
    for _ in range(12):
        if response.status_code == 200 and 'name="login"' in response.text:
            uid = urlsplit(response.url).path.split("/")[2]
            response = browser.post(urljoin(response.url, f"/interaction/{uid}/login"),
                                    data={"login": user}, allow_redirects=False)
            continue
        if response.status_code not in (301, 302, 303):
            return response
        response = browser.get(urljoin(response.url, response.headers["Location"]),
                               allow_redirects=False)
    raise AssertionError(f"the sign-in never ended: {response.status_code} {response.url}")


@pytest.fixture
def secrets_folder(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "etc"
    folder.mkdir()
    files = {"SECRET_KEY_FILE": ("secret_key", "walkthrough-" + "s3cr3t-K3y-" * 6),
             "OIDC_CLIENT_SECRET_FILE": ("oidc_client_secret", CLIENT_SECRET),
             "LEDGER_METRICS_TOKEN_FILE": ("metrics_token", "walkthrough-metrics-t0ken-9f8e")}
    made = {}
    for name, (file_name, value) in files.items():
        made[name] = folder / file_name
        made[name].write_text(value + "\n")
        made[name].chmod(0o640)
    return made


def test_a_first_deployment_as_docs_deployment_describes(tmp_path, secrets_folder, acme):
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    documented = settings_file(ROOT / "deploy" / "env.example")
    assert set(documented) >= CHANGED, "the page's settings file lost a setting it tells to set"
    port = _free_port()
    portal = f"http://127.0.0.1:{port}"
    with running_provider([f"https://127.0.0.1:{port}/oidc/callback/"],
                          [f"https://127.0.0.1:{port}/admin/login/"]) as provider:
        unit = unit_environment(ROOT / "deploy" / "systemd" / "ledger-portal-web.service")
        assert unit["LEDGER_LOG_FORMAT"] == "json"
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8",
               "LEDGER_BIN": str(Path(sys.executable).parent),
               **documented, **unit,
               "LEDGER_DATA_DIR": str(tmp_path / "data"),
               "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
               "ALLOWED_HOSTS": "127.0.0.1", "CSRF_TRUSTED_ORIGINS": f"https://127.0.0.1:{port}",
               "LEDGER_PUBLIC_URL": f"https://127.0.0.1:{port}",
               "LEDGER_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2",
               "DATABASE_URL": worker_env()["DATABASE_URL"], "REDIS_URL": settings.REDIS_URL,
               "OIDC_ISSUER": provider.issuer,
               **{name: str(path) for name, path in secrets_folder.items()}}
        checked = subprocess.run([sys.executable, "manage.py", "check", "--deploy",
                                  "--fail-level", "WARNING"], cwd=ROOT, env=env, text=True,
                                 capture_output=True, timeout=120, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr

        log_path = tmp_path / "web.log"
        with log_path.open("w") as log:
            web = subprocess.Popen([str(ROOT / "deploy" / "entrypoint.sh"), "web"], cwd=ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            browser = BehindTheProxy(portal)
            deadline = time.monotonic() + 90
            while True:
                try:
                    health = browser.get(f"{portal}/healthz", timeout=5)
                    break
                except requests.ConnectionError:
                    assert web.poll() is None, log_path.read_text()[-3000:]
                    assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                    time.sleep(0.3)
            assert health.status_code == 200, health.text

            home = sign_in_with_sso(browser, provider, "alice")
            assert home.status_code == 200, home.text[:2000]
            assert urlsplit(home.url).path == "/", list(
                LoginEvent.objects.values_list("reason", flat=True))
            assert 'id="panel-approvals"' in home.text  # acme-approvers: approve on acme

            token = secrets_folder["LEDGER_METRICS_TOKEN_FILE"].read_text().strip()
            scraper = BehindTheProxy(portal)  # Prometheus, through the proxy like anyone
            assert scraper.get(f"{portal}/metrics", timeout=10).status_code == 401
            scraped = scraper.get(f"{portal}/metrics", timeout=10,
                                  headers={"Authorization": f"Bearer {token}"})
            assert scraped.status_code == 200
            assert re.search(r'ledger_http_requests_total\{method="GET",route="home",'
                             r'status="200"\} [1-9]', scraped.text), scraped.text[:3000]
        finally:
            os.killpg(web.pid, signal.SIGTERM)
            web.wait(timeout=60)

    signed_in = LoginEvent.objects.get(username="alice", outcome="success")
    assert (signed_in.method, signed_in.ip) == (LoginMethod.OIDC, CLIENT_ADDRESS)
    written = log_path.read_text()
    lines = [json.loads(line) for line in written.splitlines() if line.startswith("{")]
    home_line = next(line for line in lines if line.get("route") == "home")
    assert home_line["status"] == 200
    assert home_line["request_id"]
    assert home_line["user_id"] == signed_in.account_id
    for name, path in secrets_folder.items():
        assert path.read_text().strip() not in written, f"{name}'s secret is in the log"
