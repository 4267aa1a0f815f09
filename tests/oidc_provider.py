"""A real OpenID provider on loopback for the single sign-on tests: ``tests/oidc/provider.js``
(the certified ``oidc-provider`` package) on the machine's Node.js.

Its packages are installed once with ``npm ci`` into a folder keyed by the lockfile's hash
(``LEDGER_OIDC_NPM_CACHE``, default under the system's temp folder). Without node or npm the
tests are skipped, or fail where ``REQUIRE_SERVICES=1`` (CI).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from core.sso_settings import authentication_backends, oidc_settings

SOURCE = Path(__file__).resolve().parent / "oidc"
CLIENT_ID = "ledger-portal"
CLIENT_SECRET = "test-only-client-secret"
#: The IdP groups of the provider's users, as the portal maps them in these tests.
ROLE_MAP = {"acme-governors": {"acme": ["manage_policies", "view_ledger"]},
            "acme-approvers": {"acme": ["approve"]}}


def _missing(what: str) -> None:
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} and REQUIRE_SERVICES=1")
    pytest.skip(what)


def _installed_packages() -> Path:
    lockfile = (SOURCE / "package-lock.json").read_bytes()
    root = Path(os.environ.get("LEDGER_OIDC_NPM_CACHE") or tempfile.gettempdir())
    folder = root / f"ledger-oidc-provider-{hashlib.sha256(lockfile).hexdigest()[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / ".installed"
    # the SQLite and PostgreSQL suites run at once: one of them installs, the other waits
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            for name in ("package.json", "package-lock.json"):
                shutil.copy(SOURCE / name, folder / name)
            result = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=folder,
                                    capture_output=True, text=True, timeout=600)
            if result.returncode != 0:
                _missing(f"npm ci of the test OpenID provider failed: {result.stderr[-2000:]}")
            done.touch()
    shutil.copy(SOURCE / "provider.js", folder / "provider.js")
    return folder


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class OidcProvider:
    issuer: str

    def set_groups(self, user: str, groups: list[str]) -> None:
        requests.post(f"{self.issuer}/__test__/groups/{user}", json={"groups": groups},
                      timeout=5).raise_for_status()

    def tamper_next_id_token(self, **change: Any) -> None:
        """The next token response's id_token gets ``aud=...`` or is ``expired=True``."""
        requests.post(f"{self.issuer}/__test__/tamper", json=change, timeout=5).raise_for_status()

    def settings(self) -> dict[str, Any]:
        """The portal's settings with single sign-on at this provider."""
        from django.conf import settings

        return {**oidc_settings(self.issuer, CLIENT_ID, CLIENT_SECRET,
                                scopes="openid email profile groups"),
                "AUTHENTICATION_BACKENDS": authentication_backends(
                    list(settings.AUTHENTICATION_BACKENDS), sso=True, password=True),
                "LEDGER_OIDC_ROLE_MAP": ROLE_MAP}


@contextmanager
def running_provider(redirect_uris: list[str], post_logout_uris: list[str]
                     ) -> Iterator[OidcProvider]:
    """A provider process of its own, whose client may come back to ``redirect_uris``."""
    if not shutil.which("node") or not shutil.which("npm"):
        _missing("node and npm are needed for the test OpenID provider (apt-get install nodejs "
                 "npm)")
    folder = _installed_packages()
    port = _free_port()
    issuer = f"http://127.0.0.1:{port}"
    uris = [arg for uri in redirect_uris for arg in ("--redirect-uri", uri)] + [
        arg for uri in post_logout_uris for arg in ("--post-logout-uri", uri)]
    log = open(folder / f"provider-{port}.log", "w")  # noqa: SIM115  (closed below)
    process = subprocess.Popen(
        ["node", "provider.js", "--port", str(port), "--client-id", CLIENT_ID,
         "--client-secret", CLIENT_SECRET, *uris],
        cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            try:
                if requests.get(f"{issuer}/.well-known/openid-configuration",
                                timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the test OpenID provider did not start")
        if process.poll() is not None:
            pytest.fail(f"the test OpenID provider exited: {(folder / log.name).read_text()}")
        yield OidcProvider(issuer)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def oidc_provider_process(live_server: Any) -> Iterator[OidcProvider]:
    with running_provider(
            [f"{live_server.url}/oidc/callback/", "http://testserver/oidc/callback/"],
            [f"{live_server.url}/admin/login/", "http://testserver/admin/login/"]) as provider:
        yield provider


@pytest.fixture
def oidc_provider(oidc_provider_process: OidcProvider, settings: Any) -> OidcProvider:
    """The provider, its users' groups as they start (alice: acme-governors and
    acme-approvers; nobody: none), and the portal's single sign-on pointed at it."""
    oidc_provider_process.set_groups("alice", ["acme-governors", "acme-approvers"])
    oidc_provider_process.set_groups("nobody", [])
    for name, value in oidc_provider_process.settings().items():
        setattr(settings, name, value)
    return oidc_provider_process
