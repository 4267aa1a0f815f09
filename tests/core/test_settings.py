"""Settings read the environment strictly: a bad value names the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from core.env import env_bool, env_int, env_list, env_str, read_or_create_secret


def test_booleans_accept_the_usual_spellings_and_refuse_the_rest(monkeypatch):
    monkeypatch.setenv("FLAG", "yes")
    assert env_bool("FLAG", False) is True
    monkeypatch.setenv("FLAG", "0")
    assert env_bool("FLAG", True) is False
    monkeypatch.setenv("FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="FLAG='maybe'"):
        env_bool("FLAG", False)


def test_integers_are_checked(monkeypatch):
    monkeypatch.setenv("LIMIT", "ten")
    with pytest.raises(ImproperlyConfigured, match="LIMIT"):
        env_int("LIMIT", 1)
    monkeypatch.setenv("LIMIT", "0")
    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        env_int("LIMIT", 5, minimum=1)


def test_a_file_variant_holds_secrets(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("TOKEN_FILE", str(secret))
    assert env_str("TOKEN") == "s3cret"
    monkeypatch.setenv("TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="TOKEN_FILE"):
        env_str("TOKEN")


def test_lists_are_comma_separated(monkeypatch):
    monkeypatch.setenv("HOSTS", "a.example, b.example,,")
    assert env_list("HOSTS", []) == ["a.example", "b.example"]


def test_without_a_secret_key_a_private_random_one_is_kept(tmp_path):
    path = tmp_path / "secret_key"
    first = read_or_create_secret(path)
    assert len(first) > 40
    assert read_or_create_secret(path) == first
    assert path.stat().st_mode & 0o777 == 0o600


def _settings_in_subprocess(env: dict[str, str], show: str = ""
                            ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "REDIS_URL", "DATABASE_REPLICA_URL")}
    code = ("import django, os; os.environ['DJANGO_SETTINGS_MODULE']='ledger_portal.settings';"
            "django.setup(); from django.conf import settings as s;"
            "print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL" + show + ")")
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                          capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])


def test_nothing_set_gives_the_embedded_default(tmp_path):
    done = _settings_in_subprocess({"LEDGER_DATA_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["django.db.backends.sqlite3", "filesystem://"]


def test_database_and_redis_urls_select_postgresql_and_redis(tmp_path):
    done = _settings_in_subprocess({
        "LEDGER_DATA_DIR": str(tmp_path), "DATABASE_URL": "postgres://u@db.invalid:5432/x",
        "REDIS_URL": "redis://127.0.0.1:6379/3"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["django.db.backends.postgresql", "redis://127.0.0.1:6379/3"]


def test_a_database_url_of_another_kind_is_refused(tmp_path):
    done = _settings_in_subprocess({"LEDGER_DATA_DIR": str(tmp_path),
                                    "DATABASE_URL": "mysql://u@db/x"})
    assert done.returncode != 0
    assert "DATABASE_URL must be a postgres:// URL" in done.stderr


def test_a_replica_url_adds_a_replica_that_tests_mirror_and_a_router(tmp_path):
    show = (", sorted(s.DATABASES), s.DATABASES['replica']['TEST']['MIRROR'], s.DATABASE_ROUTERS,"
            " 'core.db_routing.ReadYourWritesMiddleware' in s.MIDDLEWARE")
    done = _settings_in_subprocess({
        "LEDGER_DATA_DIR": str(tmp_path), "DATABASE_URL": "postgres://u@db.invalid:5432/x",
        "DATABASE_REPLICA_URL": "postgres://u@replica.invalid:5432/x"}, show)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(maxsplit=2)[2].strip() == (
        "['default', 'replica'] default ['core.db_routing.ReplicaRouter'] True")
    alone = _settings_in_subprocess({"LEDGER_DATA_DIR": str(tmp_path),
                                     "DATABASE_URL": "postgres://u@db.invalid:5432/x"},
                                    ", sorted(s.DATABASES), s.DATABASE_ROUTERS")
    assert alone.stdout.split(maxsplit=2)[2].strip() == "['default'] []"


def test_a_replica_needs_a_postgresql_primary(tmp_path):
    done = _settings_in_subprocess({"LEDGER_DATA_DIR": str(tmp_path),
                                    "DATABASE_REPLICA_URL": "postgres://u@replica/x"})
    assert done.returncode != 0
    assert "DATABASE_REPLICA_URL needs DATABASE_URL" in done.stderr


@pytest.mark.parametrize("old", ["runs", "operations"])
def test_a_secrets_backend_named_by_an_older_path_still_loads(tmp_path, old):
    """``runs.secrets.X`` became ``operations.secrets.X`` when operations left runs/, then
    ``core.secrets.X`` when approval notifications needed tenant secrets too."""
    code = ("import django, os; os.environ['DJANGO_SETTINGS_MODULE']='ledger_portal.settings';"
            "django.setup(); from core.secrets import secrets_backend;"
            "print(type(secrets_backend()).__name__)")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    done = subprocess.run([sys.executable, "-c", code], env={
        **env, "LEDGER_DATA_DIR": str(tmp_path),
        "LEDGER_SECRETS_BACKEND": f"{old}.secrets.EnvironmentSecrets"},
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "EnvironmentSecrets"
