"""Shared fixtures: two tenants and the alice / bob / charlie trio.

- alice: member of ``acme`` with the role under test (all roles unless a test narrows it);
- bob: member of ``acme`` without it (only ``ingest``);
- charlie: a member of ``globex``, the other tenant, with every role there.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from core.models import Tenant
from core.roles import Role
from core.services import grant_role, issue_api_key
from runs.governance_log import setting_up
from runs.ingest_schema import parse_batch
from runs.sample_runs import RunGenerator
from runs.services import ingest_batch
from tests import tenant_scope_guard as scope_guard
from tests.oidc_provider import oidc_provider, oidc_provider_process  # noqa: F401  (fixtures)

ALL_ROLES = [r.value for r in Role]


def _flush_past_the_append_only_triggers() -> None:
    """Transactional tests end with a TRUNCATE of every table, which the ledger's triggers
    refuse; the test database's superuser bypasses them, as a maintenance job would."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    original = DatabaseOperations.sql_flush

    def sql_flush(self: Any, style: Any, tables: Any, **kwargs: Any) -> list[str]:
        statements = original(self, style, tables, **kwargs)
        return ["SET LOCAL session_replication_role = replica", *statements] if statements else []

    DatabaseOperations.sql_flush = sql_flush  # type: ignore[method-assign]


_flush_past_the_append_only_triggers()


def _serve_plain_http() -> None:
    """The suite talks plain HTTP to its own test servers: with DEBUG off the portal would
    redirect it to HTTPS (tests of that switch it back on with ``override_settings``)."""
    from django.conf import settings

    settings.SECURE_SSL_REDIRECT = False
    settings.SECURE_HSTS_SECONDS = 0


_serve_plain_http()


@pytest.fixture
def acme(db: Any) -> Tenant:
    return Tenant.objects.create(slug="acme", name="Acme")


@pytest.fixture
def globex(db: Any) -> Tenant:
    return Tenant.objects.create(slug="globex", name="Globex")


def _staff(username: str) -> User:
    return User.objects.create_user(username, password="pw-for-tests-only", is_staff=True)


def _member(username: str, tenant: Tenant, roles: list[str]) -> User:
    """A staff user holding ``roles`` on ``tenant``: set-up, kept out of the governance log
    (tests of the log make their own grants)."""
    with setting_up():
        user = _staff(username)
        for role in roles:
            grant_role(user, role, tenant)
    return user


@pytest.fixture
def alice(acme: Tenant) -> User:
    return _member("alice", acme, ALL_ROLES)


@pytest.fixture
def bob(acme: Tenant) -> User:
    return _member("bob", acme, [Role.INGEST])


@pytest.fixture
def charlie(globex: Tenant) -> User:
    return _member("charlie", globex, ALL_ROLES)


@pytest.fixture
def api_key() -> Callable[..., str]:
    def make(tenant: Tenant, scopes: list[str] | None = None, **kwargs: Any) -> str:
        with setting_up():
            _, raw = issue_api_key(tenant, "agent", scopes or ["ingest", "view_ledger"],
                                   **kwargs)
        return raw
    return make


@pytest.fixture
def key_client(api_key: Callable[..., str]) -> Callable[..., APIClient]:
    def make(tenant: Tenant, scopes: list[str] | None = None) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key(tenant, scopes)}")
        return client
    return make


@pytest.fixture
def user_client() -> Callable[[User], APIClient]:
    def make(user: User) -> APIClient:
        client = APIClient()
        client.force_login(user)
        return client
    return make


@pytest.fixture
def register_tools() -> Callable[..., None]:
    """Put tools in a tenant's registry: ``register_tools(acme, refund_payment="write")``."""
    from runs.models import Tool

    def register(tenant: Tenant, **classes: str) -> None:
        for name, action_class in classes.items():
            Tool.objects.get_or_create(tenant=tenant, name=name,
                                       defaults={"action_class": action_class})
    return register


@pytest.fixture
def make_run() -> Callable[..., dict[str, Any]]:
    """A realistic run in the ingestion format (from the benchmark generator)."""
    generators: dict[str, RunGenerator] = {}

    def make(tenant_slug: str = "acme", seed: int = 1) -> dict[str, Any]:
        gen = generators.setdefault(f"{tenant_slug}:{seed}", RunGenerator(
            tenant_slug, seed=seed, long_run_share=0))
        return copy.deepcopy(gen.run())
    return make


@pytest.fixture
def record() -> Callable[..., Any]:
    """Ingest runs straight through the service."""
    def do(tenant: Tenant, *runs: dict[str, Any]) -> Any:
        return ingest_batch(tenant, parse_batch({"runs": list(runs)}), recorded_by="test")
    return do


@pytest.fixture
def demo_tool_server(monkeypatch: Any, tmp_path: Any, settings: Any) -> Iterator[Any]:
    """The demo's tool server on a free loopback port, where ``seed_demo`` points the tools
    (``DEMO_TOOLS_ADDR``), and the seeded export's files in the test's own folder."""
    from ledger_portal import demo_tools

    settings.STORAGES = {**settings.STORAGES, "exports": {
        "BACKEND": "exports.storage.AtomicFileSystemStorage",
        "OPTIONS": {"location": str(tmp_path / "published")}}}
    settings.LEDGER_EXPORT_TMP_DIR = tmp_path / "export-tmp"
    with demo_tools.serve("127.0.0.1", 0) as server:
        monkeypatch.setenv("DEMO_TOOLS_ADDR", server.address)
        yield server


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        return
    skip = pytest.mark.skip(reason="PostgreSQL-only behaviour; run with DATABASE_URL set")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Each test starts with an empty local cache. A Redis cache is left alone: it shares its
    database with the Celery broker (flushing it would drop queued tasks), and the keys we
    cache are unique per test anyway (API key prefixes are random)."""
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache

    backend = caches["default"]
    if isinstance(backend, LocMemCache):
        backend.clear()


@pytest.fixture(autouse=True)
def _loopback_egress(settings: Any) -> None:
    """The tests' tool, OPA and webhook servers listen on loopback, which the egress guard
    refuses unless listed (as an operator lists their own tool hosts)."""
    settings.LEDGER_EGRESS_ALLOW = ["127.0.0.1", "localhost"]


@pytest.fixture(autouse=True)
def _cli_in_local_mode(monkeypatch: Any) -> None:
    """Tests of what a ``ledger`` command does run it as a shell on the portal host would:
    local mode, ``--as USER`` (tests/core/test_cli_tokens.py covers how it
    authenticates without it)."""
    monkeypatch.setenv("LEDGER_CLI_LOCAL", "1")
    monkeypatch.delenv("LEDGER_TOKEN", raising=False)


@pytest.fixture(scope="session", autouse=True)
def _tenant_scope_hooks() -> Iterator[None]:
    """Hook the tenant scope guard into request handling and the ``ledger`` command, once."""
    from django.db.models.signals import post_save

    with pytest.MonkeyPatch.context() as patch:
        scope_guard.install(patch)
        yield
    post_save.disconnect(dispatch_uid="tenant_scope_guard")


@pytest.fixture(autouse=True)
def tenant_scope_guard(request: pytest.FixtureRequest) -> Iterator[scope_guard.Guard | None]:
    """Every request a test makes and every ``ledger`` command it runs must scope what it reads
    of tenant-owned tables to a tenant (tests/tenant_scope_guard.py): the test fails at
    teardown with each statement that does not, and where it was sent from. A test opts out
    with ``@pytest.mark.tenant_scope_exempt(reason=...)``."""
    marker = request.node.get_closest_marker("tenant_scope_exempt")
    if marker is not None:
        if not marker.kwargs.get("reason"):
            pytest.fail("tenant_scope_exempt needs a reason=...", pytrace=False)
        yield None
        return
    guard = scope_guard.current = scope_guard.Guard()
    try:
        yield guard
    finally:
        scope_guard.current = None
    if guard.violations:
        pytest.fail(guard.report(), pytrace=False)
