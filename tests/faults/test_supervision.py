"""The process definitions we ship bring a dead process back: the systemd units parse
(``systemd-analyze verify``) and restart always, the compose file validates and restarts every
long-running service, both start each process through the one entrypoint, and that entrypoint,
run from this checkout, starts a worker, a beat and a web process that serves with DEBUG off."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from configparser import ConfigParser
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from .conftest import ROOT, _free_port, wait_for

UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
INSTALLED_AT = "/opt/ledger-portal"


def unit(path: Path) -> ConfigParser:
    parser = ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def here(text: str) -> str:
    """The unit's text as installed from this checkout."""
    return text.replace(INSTALLED_AT, str(ROOT))


def from_this_checkout(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment a unit's command gets here: this test's interpreter's bin folder, the
    embedded default database (enough to start), its own data folder."""
    env = {**os.environ, "LEDGER_BIN": str(Path(sys.executable).parent),
           "LEDGER_DATA_DIR": str(tmp_path), **extra}
    env.pop("DATABASE_URL", None)
    return env


def test_there_is_a_unit_for_each_process():
    assert [p.name for p in UNITS] == ["ledger-portal-beat.service",
                                       "ledger-portal-web.service",
                                       "ledger-portal-worker.service"]


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_a_unit_starts_its_process_through_the_entrypoint(path: Path):
    verb = path.stem.removeprefix("ledger-portal-")
    assert unit(path)["Service"]["ExecStart"] == f"{INSTALLED_AT}/deploy/entrypoint.sh {verb}"


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_a_unit_restarts_always_and_parses(path: Path, tmp_path: Path):
    service = unit(path)["Service"]
    assert service["Restart"] == "always"
    assert int(service["RestartSec"]) <= 10
    # the process may write only there: its data folder must be there
    assert service["Environment"] == f"LEDGER_DATA_DIR={service['ReadWritePaths']}"
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    copy = tmp_path / path.name
    copy.write_text(here(path.read_text()).replace("/etc/ledger-portal/env",
                                                   str(tmp_path / "env")))
    (tmp_path / "env").write_text("")
    checked = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)],
                             capture_output=True, text=True, timeout=60)
    problems = [line for line in (checked.stdout + checked.stderr).splitlines()
                if path.name in line]
    assert checked.returncode == 0, checked.stderr
    assert problems == [], checked.stderr


@pytest.mark.parametrize(("path", "ready"), [
    (ROOT / "deploy/systemd/ledger-portal-worker.service", "ready."),
    (ROOT / "deploy/systemd/ledger-portal-beat.service", "beat: Starting"),
], ids=["worker", "beat"])
def test_the_unit_command_starts_from_this_checkout(path: Path, ready: str, own_redis: Any,
                                                    tmp_path: Path):
    command = shlex.split(here(unit(path)["Service"]["ExecStart"]))
    env = from_this_checkout(tmp_path, REDIS_URL=own_redis.url)
    log = tmp_path / "out.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while ready not in log.read_text():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(30)


def test_the_web_command_serves_the_portal_and_its_static_files_with_debug_off(
        tmp_path: Path):
    port = _free_port()
    command = shlex.split(here(unit(ROOT / "deploy/systemd/ledger-portal-web.service")[
        "Service"]["ExecStart"]))
    # as deployed: DEBUG off, HTTPS on behind a proxy that says so
    env = from_this_checkout(tmp_path, LEDGER_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="2",
                             DEBUG="0", LEDGER_HTTPS="1", LEDGER_BEHIND_TLS_PROXY="1")
    env.pop("REDIS_URL", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT,
                   env=env, check=True, timeout=300)
    log = tmp_path / "web.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        # plain HTTP from the host itself, as a health probe asks
        health = wait_for("the web process to answer", lambda: _get(base + "/healthz"),
                          seconds=90, every=0.2)
        assert health == (200, "application/json", b'{"status": "ok", "database": "ok", '
                                                   b'"cache": "ok"}')
        assert _answer(base + "/admin/login/", proxied=False)[0] == 301  # to HTTPS
        status, kind, css = _answer(base + "/static/admin/css/base.css")
        assert (status, kind) == (200, "text/css; charset=\"utf-8\"")
        assert b"body" in css
        # a search term someone pasted a secret into stays out of the access log
        status, _, page = _answer(base + "/admin/login/?next=/admin/%3Fq%3Dsk-live-pasted")
        assert status == 200
        assert b"/static/admin/css/base.css" in page
    finally:
        process.terminate()
        assert process.wait(45) == 0, log.read_text()[-3000:]  # a graceful stop
    assert "GET /healthz" in log.read_text()
    assert '"GET /admin/login/" 200' in log.read_text()
    assert "sk-live-pasted" not in log.read_text()


def _answer(url: str, proxied: bool = True) -> tuple[int, str, bytes]:
    answered = _get(url, proxied)
    assert answered is not None, f"nothing listens for {url}"
    return answered


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _get(url: str, proxied: bool = True) -> tuple[int, str, bytes] | None:
    """GET as the TLS proxy in front would pass it on (``proxied``), or as a plain HTTP
    client; redirects are answers, not followed."""
    request = urllib.request.Request(url, headers={"X-Forwarded-Proto": "https"}
                                     if proxied and not url.endswith("/healthz") else {})
    try:
        with urllib.request.build_opener(_NoRedirects).open(request, timeout=5) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.headers["Content-Type"], refused.read()
    except OSError:
        return None  # not listening yet


COMPOSE = ROOT / "deploy" / "compose.yaml"
COMPOSE_ENV = {"SECRET_KEY": "k" * 50, "POSTGRES_PASSWORD": "owner-password",
               "LEDGER_APP_PASSWORD": "app-password"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as Compose itself resolves it (anchors merged, variables set)."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (.ci/run installs Debian's)")
    resolved = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config"],
                              env={**os.environ, **COMPOSE_ENV}, capture_output=True,
                              text=True, timeout=60)
    assert resolved.returncode == 0, resolved.stderr
    return yaml.safe_load(resolved.stdout)


def test_every_long_running_service_restarts_unless_stopped(compose: dict[str, Any]):
    restarts = {name: service.get("restart") for name, service in compose["services"].items()}
    assert restarts == {"postgres": "unless-stopped", "redis": "unless-stopped",
                        "migrate": "no", "web": "unless-stopped", "worker": "unless-stopped",
                        "beat": "unless-stopped"}


def test_the_portal_services_start_as_the_systemd_units_do(compose: dict[str, Any]):
    unit_verbs = {p.stem.removeprefix("ledger-portal-") for p in UNITS}
    portal = {name: s for name, s in compose["services"].items()
              if s.get("image") == "ledger-portal:latest"}
    assert {name: s["command"] for name, s in portal.items()} == {
        verb: [verb] for verb in unit_verbs | {"migrate"}}
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert f'ENTRYPOINT ["{INSTALLED_AT}/deploy/entrypoint.sh"]' in dockerfile
    assert "\nUSER 10001:10001\n" in dockerfile  # not root: the ledger user's fixed ids
    assert "--uid 10001 --gid ledger" in dockerfile
    # the web service waits for migrations; the others too, so none starts on an old schema
    assert all(s["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
               for name, s in portal.items() if name != "migrate")


def test_only_migrate_connects_as_the_tables_owner(compose: dict[str, Any]):
    urls = {name: s["environment"]["DATABASE_URL"] for name, s in compose["services"].items()
            if s.get("image") == "ledger-portal:latest"}
    owner = f"postgres://ledger:{COMPOSE_ENV['POSTGRES_PASSWORD']}@"
    app = f"postgres://ledger_app:{COMPOSE_ENV['LEDGER_APP_PASSWORD']}@"
    assert urls.pop("migrate").startswith(owner)
    assert compose["services"]["migrate"]["environment"]["LEDGER_APP_DB_ROLE"] == "ledger_app"
    assert all(url.startswith(app) for url in urls.values()), urls
    init = (ROOT / "deploy/postgres-init/10-app-role.sh").read_text()
    assert "CREATE ROLE ledger_app LOGIN" in init
    assert "NOSUPERUSER" in init


def test_the_role_script_makes_a_role_that_owns_nothing(own_postgres: Any, tmp_path: Path):
    """The init script, run as the postgres image runs it, against a real cluster."""
    script = ROOT / "deploy/postgres-init/10-app-role.sh"
    env = {**os.environ, "POSTGRES_USER": "postgres", "POSTGRES_DB": "postgres",
           "LEDGER_APP_PASSWORD": "it's a \"secret\"", "PGHOST": "127.0.0.1",
           "PGPORT": str(own_postgres.port)}
    subprocess.run(["sh", str(script)], env=env, check=True, timeout=60, capture_output=True)
    with psycopg.connect(own_postgres.url(), autocommit=True) as conn:
        role = conn.execute("SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin "
                            "FROM pg_roles WHERE rolname = 'ledger_app'").fetchone()
    assert role == (False, False, False, True)


def test_the_image_holds_every_package_the_project_installs():
    """A new app is copied into the image the day it appears (operations once was not)."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    copied = {line.split()[1] for line in (ROOT / "deploy" / "Dockerfile").read_text()
              .splitlines() if line.startswith("COPY ")}
    assert packages <= copied, packages - copied
    assert {"templates", "manage.py", "deploy"} <= copied | {
        name for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") for name in line.split()[1:-1]}
