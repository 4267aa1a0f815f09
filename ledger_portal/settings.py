"""Settings, read from the environment (12-factor).

Nothing set gives the embedded default: SQLite in ``data/`` and a Celery broker that needs no
server. ``DATABASE_URL`` switches to PostgreSQL (psycopg 3); ``REDIS_URL`` switches Celery and the
cache to Redis. Outside ``DEBUG`` a real ``SECRET_KEY`` and ``ALLOWED_HOSTS`` are required.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from core.env import (
    env_bool,
    env_destinations,
    env_int,
    env_json,
    env_list,
    env_str,
    read_or_create_secret,
)
from core.mcp_stdio import parse_stdio_commands
from core.sso_settings import authentication_backends, oidc_settings

# Django's generic classes (ModelAdmin[Run], ModelForm[ApiKey]...) subscriptable at run time, as
# their stubs have them, so the code can say what each admin and form is for.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("LEDGER_DATA_DIR") or BASE_DIR / "data")

DEBUG = env_bool("DEBUG", False)
# Without SECRET_KEY a random key is made once and kept (mode 0600) in the data folder, so no
# installation ever runs on a key that is published in this repository.
SECRET_KEY = env_str("SECRET_KEY") or read_or_create_secret(DATA_DIR / "secret_key")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "simple_history",
    "axes",
    "core",
    "ledger_portal",
    "runs",
    "approvals",
    "policies",
    "operations",
    "exports",
    "incidents",
]

MIDDLEWARE = [
    # no cyclic collection while a request is handled (core/heap.py)
    "core.heap.CollectorPausedDuringRequest",
    # then: its id, timing and access line cover every answer, refusals included
    "core.observability.RequestObservationMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # static files from gunicorn itself, before sessions or a database are touched
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "core.middleware.RolesPerRequestMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    "core.middleware.SecurityHeadersMiddleware",
    "core.middleware.RefuseNulInQueryMiddleware",
    "core.middleware.ApiErrorsAsJsonMiddleware",
    # last, as django-axes asks: it turns a lockout raised during login into its answer
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "ledger_portal.urls"
WSGI_APPLICATION = "ledger_portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_database_url = env_str("DATABASE_URL")
if _database_url:
    try:
        _db = dj_database_url.parse(_database_url, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {exc}") from exc
    if _db["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured("DATABASE_URL must be a postgres:// URL (PostgreSQL only)")
    _db["CONN_HEALTH_CHECKS"] = True
    # The server drops a connection whose peer is gone within about two minutes (the default
    # is hours): a lost worker's replay lock (core/locks.py) is freed with it.
    _db.setdefault("OPTIONS", {})
    _db["OPTIONS"]["options"] = " ".join(filter(None, [
        _db["OPTIONS"].get("options", ""), "-c tcp_keepalives_idle=60",
        "-c tcp_keepalives_interval=10", "-c tcp_keepalives_count=6"]))
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    _db = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(DATA_DIR / "ledger.sqlite3"),
        # WAL lets the web process read while the embedded worker writes.
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"},
        # Tests get a file too: an in-memory database is one connection shared by every thread,
        # and a live server answering an agent's concurrent requests interleaves transactions
        # on it ("cannot release savepoint").
        "TEST": {"NAME": str(DATA_DIR / "test-ledger.sqlite3")},
    }
DATABASES = {"default": _db}
# A PostgreSQL read replica for the reads that say they may be stale by seconds (ledger lists,
# timelines, export parts, back-tests: core/db_routing.py); everything else stays on the
# primary. Unset: one database, as without it.
_replica_url = env_str("DATABASE_REPLICA_URL")
DATABASE_ROUTERS: list[str] = []
if _replica_url:
    if not _database_url:
        raise ImproperlyConfigured("DATABASE_REPLICA_URL needs DATABASE_URL (a PostgreSQL "
                                   "primary): SQLite has no replica")
    try:
        _replica = dj_database_url.parse(_replica_url,
                                         conn_max_age=env_int("DB_CONN_MAX_AGE", 60))
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_REPLICA_URL is not a database URL: {exc}") from exc
    if _replica["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured("DATABASE_REPLICA_URL must be a postgres:// URL")
    _replica["CONN_HEALTH_CHECKS"] = True
    _replica.setdefault("OPTIONS", {})
    # a replica that does not answer is given up on quickly: the primary serves instead
    _replica["OPTIONS"].setdefault("connect_timeout", 3)
    _replica["OPTIONS"]["options"] = " ".join(filter(None, [
        _replica["OPTIONS"].get("options", ""), "-c tcp_keepalives_idle=60",
        "-c tcp_keepalives_interval=10", "-c tcp_keepalives_count=6"]))
    # tests: the replica alias reads the test database itself (Django's test mirror)
    _replica["TEST"] = {"MIRROR": "default"}
    DATABASES["replica"] = _replica
    DATABASE_ROUTERS = ["core.db_routing.ReplicaRouter"]
    # a browser that just changed something reads the primary for a while (read your writes)
    MIDDLEWARE.insert(MIDDLEWARE.index("django.contrib.sessions.middleware.SessionMiddleware"),
                      "core.db_routing.ReadYourWritesMiddleware")
# Stale-ok reads leave the replica while it is further behind than this (seconds), and come
# back once it has caught up; each process looks at most once every
# LEDGER_REPLICA_CHECK_SECONDS.
LEDGER_REPLICA_MAX_LAG_SECONDS = env_int("LEDGER_REPLICA_MAX_LAG_SECONDS", 30, minimum=0)
LEDGER_REPLICA_CHECK_SECONDS = env_int("LEDGER_REPLICA_CHECK_SECONDS", 5, minimum=0)
# PostgreSQL: the role the portal runs as, when it is not the tables' owner (recommended;
# docs/operations.md). `manage.py migrate`, run as the owner, grants it what the app needs.
LEDGER_APP_DB_ROLE = env_str("LEDGER_APP_DB_ROLE") or ""
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTHENTICATION_BACKENDS = [
    # first: refuses a locked-out login before any password is checked
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user row; anonymous sees nothing.
GUARDIAN_MONKEY_PATCH_USER = False

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
# One date format on every page, the admin's included (ledger_portal/formats/en/formats.py).
FORMAT_MODULE_PATH = ["ledger_portal.formats"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"  # filled by `manage.py collectstatic` (deploy/entrypoint.sh)
# WhiteNoise reads the folder when the process starts; it must exist even before the first
# collectstatic (a missing one is a warning, which the tests turn into an error).
STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# Audit export bundles: local files under the data folder unless LEDGER_EXPORT_STORAGE names
# another Django storage backend (e.g. storages.backends.s3.S3Storage, configured by its own
# settings); parts are written to LEDGER_EXPORT_TMP_DIR first, then published whole.
# LEDGER_EXPORT_STORAGE=s3: an S3 bucket (or any S3-compatible store) through django-storages,
# installed with the `s3` extra; its settings are LEDGER_S3_* (keys `_FILE`able).
_export_storage = env_str("LEDGER_EXPORT_STORAGE") or "exports.storage.AtomicFileSystemStorage"
_export_options: dict[str, Any] = (
    {"location": str(DATA_DIR / "exports")}
    if _export_storage == "exports.storage.AtomicFileSystemStorage" else {})
if _export_storage == "s3":
    # django-storages' S3 storage, reading objects as a stream (exports/s3.py says why)
    _export_storage = "exports.s3.StreamingS3Storage"
    _export_options = {
        "bucket_name": env_str("LEDGER_S3_BUCKET") or "", "location": "exports",
        "endpoint_url": env_str("LEDGER_S3_ENDPOINT_URL"),
        "region_name": env_str("LEDGER_S3_REGION"),
        "access_key": env_str("LEDGER_S3_ACCESS_KEY_ID"),
        "secret_key": env_str("LEDGER_S3_SECRET_ACCESS_KEY"),
        # bundles are private: downloads go through the portal's checks, never a public URL
        "default_acl": "private", "querystring_auth": True, "file_overwrite": False}
    if not _export_options["bucket_name"]:
        raise ImproperlyConfigured("LEDGER_EXPORT_STORAGE=s3 needs LEDGER_S3_BUCKET")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "exports": {"BACKEND": _export_storage, "OPTIONS": _export_options},
}
LEDGER_EXPORT_TMP_DIR = Path(env_str("LEDGER_EXPORT_TMP_DIR") or DATA_DIR / "exports-tmp")
# Rows per part: a window bigger than this is cut into parts that workers write in parallel.
LEDGER_EXPORT_PART_ROWS = env_int("LEDGER_EXPORT_PART_ROWS", 250_000, minimum=1)
# How often (in rows) a part reports its progress on the export's row (one commit each; about
# every half second at 20,000 rows/s).
LEDGER_EXPORT_PROGRESS_ROWS = env_int("LEDGER_EXPORT_PROGRESS_ROWS", 10_000, minimum=1)
LEDGER_EXPORT_TTL_DAYS = env_int("LEDGER_EXPORT_TTL_DAYS", 7, minimum=1)
# A part or join whose worker died this many times fails the export (with the reason).
LEDGER_EXPORT_MAX_ATTEMPTS = env_int("LEDGER_EXPORT_MAX_ATTEMPTS", 3, minimum=1)
LOGIN_URL = "admin:login"

# Served over HTTPS (a TLS-terminating proxy in front): plain HTTP is redirected, HSTS sent and
# cookies marked secure. On whenever DEBUG is off; the test suite and a plain-HTTP lab switch it
# off with LEDGER_HTTPS=0.
LEDGER_HTTPS = env_bool("LEDGER_HTTPS", not DEBUG)
SECURE_SSL_REDIRECT = LEDGER_HTTPS
# Health checks come from the host itself (systemd, a container runtime, a load balancer's
# probe) over plain HTTP: redirected, they would read as failures.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if LEDGER_HTTPS else 0,
                              minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", LEDGER_HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Preloading commits the whole parent domain to HTTPS in browsers for good: the deployer's
# choice, not a default, so check --deploy does not nag about it.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
# Behind a proxy that terminates TLS and says so in X-Forwarded-Proto (only set this when the
# proxy strips the header from clients' requests).
if env_bool("LEDGER_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", LEDGER_HTTPS or not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", LEDGER_HTTPS or not DEBUG)
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Our pages load scripts and styles from our own static files only; inline styles stay allowed
# for the admin's widgets. Override whole with LEDGER_CSP.
LEDGER_CSP = env_str("LEDGER_CSP") or (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'")

# Login throttling (django-axes): LEDGER_LOGIN_FAILURE_LIMIT wrong passwords for one user from
# one address lock that pair out for LEDGER_LOGIN_COOLOFF_MINUTES; a right password then still
# fails. Attempts are kept in the database (admin: Axes).
AXES_FAILURE_LIMIT = env_int("LEDGER_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env_int("LEDGER_LOGIN_COOLOFF_MINUTES", 15, minimum=1) / 60
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/locked_out.html"
AXES_VERBOSE = False
# Behind proxies, the client address is the one the outermost proxy appended to
# X-Forwarded-For (core/client_address.py); the lockout and the login record both read it.
LEDGER_PROXY_COUNT = env_int("LEDGER_PROXY_COUNT", 0, minimum=0)
AXES_CLIENT_IP_CALLABLE = "core.client_address.client_address"

# Single sign-on (OpenID Connect, authorization code flow with PKCE; core/sso.py on
# mozilla-django-oidc). Off unless OIDC_ISSUER is set; endpoints come from the issuer's discovery
# document. LEDGER_PASSWORD_LOGIN=0 refuses password logins everywhere (the admin's form too).
# Roles follow the IdP's groups (LEDGER_OIDC_ROLE_MAP), re-applied at every sign-in: a session
# lasts at most SESSION_COOKIE_AGE seconds, the longest a removed group member keeps a role.
OIDC_ISSUER = (env_str("OIDC_ISSUER") or "").rstrip("/")
LEDGER_PASSWORD_LOGIN = env_bool("LEDGER_PASSWORD_LOGIN", True)
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 12 * 3600 if OIDC_ISSUER else 14 * 86400,
                             minimum=60)
AUTHENTICATION_BACKENDS = authentication_backends(
    AUTHENTICATION_BACKENDS, sso=bool(OIDC_ISSUER), password=LEDGER_PASSWORD_LOGIN)
# the lockout counts wrong passwords only: single sign-on's refusals are the provider's to throttle
AXES_WHITELIST_CALLABLE = "core.login_audit.not_a_password_attempt"
if OIDC_ISSUER:
    globals().update(oidc_settings(
        OIDC_ISSUER, env_str("OIDC_CLIENT_ID") or "", env_str("OIDC_CLIENT_SECRET") or "",
        scopes=env_str("OIDC_SCOPES") or "openid email profile groups",
        sign_algo=env_str("OIDC_SIGN_ALGO") or "RS256",
        timeout=env_int("OIDC_TIMEOUT_SECONDS", 10, minimum=1),
        leeway=env_int("LEDGER_OIDC_LEEWAY_SECONDS", 60, minimum=0)))
# Login events name people and their addresses: kept this many days, then removed (daily).
LEDGER_LOGIN_EVENT_RETENTION_DAYS = env_int("LEDGER_LOGIN_EVENT_RETENTION_DAYS", 400, minimum=1)
LEDGER_OIDC_USERNAME_CLAIM = env_str("LEDGER_OIDC_USERNAME_CLAIM") or "preferred_username"
LEDGER_OIDC_GROUPS_CLAIM = env_str("LEDGER_OIDC_GROUPS_CLAIM") or "groups"
# {"<IdP group>": {"<tenant slug>": ["<role>", ...]}}: checked here, tenants at sign-in.
LEDGER_OIDC_ROLE_MAP: dict[str, dict[str, list[str]]] = env_json("LEDGER_OIDC_ROLE_MAP", {})

# Per API key (DRF throttling): requests a key may make; a person's session is not limited.
LEDGER_API_RATE = env_str("LEDGER_API_RATE", "12000/min")
# How many ?wait= long-polls one key may hold at once in one web process; more answer at once
# with Retry-After, so a key cannot occupy every worker.
LEDGER_APPROVAL_WAITERS_PER_KEY = env_int("LEDGER_APPROVAL_WAITERS_PER_KEY", 2, minimum=0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.api.authentication.ApiKeyAuthentication",
        "core.api.authentication.PersonalTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": [
        "core.api.renderers.OrjsonRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["core.api.parsers.OrjsonParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.IdCursorPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_THROTTLE_CLASSES": ["core.api.throttling.ApiKeyRateThrottle"],
    "EXCEPTION_HANDLER": "core.api.errors.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ledger-portal API",
    "DESCRIPTION": "Ingest, read and govern the Agent Execution Ledger. Every route is "
    "tenant-scoped: an API key acts for its own tenant only.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema maps every route and field: for signed-in people and keys only.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    # 3.1: the batch schema comes from pydantic, which speaks JSON Schema 2020-12 (nullable
    # fields as `type: null`).
    "OAS_VERSION": "3.1.0",
    # Served from our own static files: the docs work offline and load nothing from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "runs.models.RunStatus",
        "ToolCallStatusEnum": "runs.models.ToolCallStatus",
        "ActionClassEnum": "runs.models.ActionClass",
        "ReplayModeEnum": "operations.models.ReplayMode",
        "PolicyModeEnum": "policies.models.Mode",
        "IncidentStatusEnum": "incidents.choices.IncidentStatus",
        "RemediationStatusEnum": "incidents.choices.Remediation",
        "SeverityEnum": "incidents.choices.Severity",
        "RollbackStatusEnum": "operations.models.rollback.RollbackStatus",
        "FreezeModeEnum": ["deny", "sandbox"],
        "ExportStatusEnum": "exports.models.ExportStatus",
        "ApprovalKindEnum": "approvals.models.Kind",
        "ApprovalStatusEnum": "approvals.models.Status",
        "EffectEnum": "policies.models.Effect",
    },
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

# Ingestion limits (issue: batches up to 5 MB / 1,000 records).
LEDGER_BATCH_MAX_BYTES = env_int("LEDGER_BATCH_MAX_BYTES", 5 * 1024 * 1024, minimum=1024)
LEDGER_BATCH_MAX_RECORDS = env_int("LEDGER_BATCH_MAX_RECORDS", 1000, minimum=1)
# OpenTelemetry spans on POST /v1/traces: the largest body (compressed or not), and how long a
# trace without its root span stays quiet before its run is recorded (and, open, closed).
LEDGER_OTLP_MAX_BYTES = env_int("LEDGER_OTLP_MAX_BYTES", LEDGER_BATCH_MAX_BYTES, minimum=1024)
LEDGER_OTLP_QUIET_SECONDS = env_int("LEDGER_OTLP_QUIET_SECONDS", 60, minimum=0)
# Django refuses bodies above this before our view could answer with a clear 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(LEDGER_BATCH_MAX_BYTES, LEDGER_OTLP_MAX_BYTES) + 1024 * 1024
# How often an API key's last use is written (seconds): one write per key per interval.
LEDGER_API_KEY_TOUCH_INTERVAL = env_int("LEDGER_API_KEY_TOUCH_INTERVAL", 60, minimum=0)

# Celery: Redis when REDIS_URL is set, else kombu's filesystem transport (no server needed).
CELERY_BROKER_URL = REDIS_URL or "filesystem://"
if not REDIS_URL:
    _queue_dir = DATA_DIR / "celery"
    for _sub in ("queue", "processed", "control"):
        (_queue_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "queue"),
        "data_folder_out": str(_queue_dir / "queue"),
        "processed_folder": str(_queue_dir / "processed"),
        # broadcast bindings (worker control); kombu's default is ./control in the cwd
        "control_folder": str(_queue_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
# beat keeps its last-run times beside the rest of our data, not in whatever folder it starts in
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    # jobs queued while the broker was down (core/jobs.py)
    "dispatch-outbox": {"task": "ledger_portal.dispatch_outbox", "schedule": 10},
    "escalate-overdue-approvals": {"task": "approvals.escalate_overdue", "schedule": 60},
    "assemble-idle-otel-traces": {"task": "runs.assemble_idle_otel_traces", "schedule": 10},
    "defer-orphan-otel-events": {"task": "runs.defer_orphan_otel_events", "schedule": 60},
    "fail-stuck-rollbacks": {"task": "runs.fail_stuck_rollbacks", "schedule": 60},
    "seal-tenant-digests": {
        "task": "runs.seal_tenant_digests",
        "schedule": env_int("LEDGER_DIGEST_INTERVAL", 300, minimum=10),
    },
    # Tenants' retention periods are in days; checking hourly removes runs soon after they
    # fall due without a long transaction at any one time.
    "apply-retention": {
        "task": "runs.apply_retention",
        "schedule": env_int("LEDGER_RETENTION_INTERVAL", 3600, minimum=60),
    },
    "watch-replays": {"task": "runs.watch_replays", "schedule": 60},
    "watch-jobs": {"task": "ledger_portal.watch_jobs", "schedule": 60},
    "expire-audit-exports": {"task": "exports.expire_exports", "schedule": 3600},
    "prune-login-events": {"task": "ledger_portal.prune_login_events", "schedule": 86400},
    # PostgreSQL's partitioned tables (core/partitions.py): next months' partitions, daily
    "ensure-partitions": {"task": "ledger_portal.ensure_partitions", "schedule": 86400},
    # proof that someone picks up queued work (/readyz, pages showing a queued job)
    "worker-heartbeat": {"task": "ledger_portal.worker_heartbeat",
                         "schedule": env_int("LEDGER_WORKER_HEARTBEAT_SECONDS", 30, minimum=5)},
}
# How many months ahead of the current one the partitioned tables' partitions are created
# (PostgreSQL; the beat task ensure-partitions, and `manage.py partitions --ensure`).
LEDGER_PARTITION_MONTHS_AHEAD = env_int("LEDGER_PARTITION_MONTHS_AHEAD", 3, minimum=1)
# A worker heartbeat older than this means queued work is not being picked up.
LEDGER_WORKER_STALE_SECONDS = env_int("LEDGER_WORKER_STALE_SECONDS", 120, minimum=10)
# Replays: the longest one may run (seconds; past it the beat task fails it), how often one
# waiting for a person looks again, and how often a transient tool failure is retried.
LEDGER_REPLAY_TIME_LIMIT = env_int("LEDGER_REPLAY_TIME_LIMIT", 3600, minimum=10)
LEDGER_REPLAY_APPROVAL_POLL = env_int("LEDGER_REPLAY_APPROVAL_POLL", 10, minimum=1)
LEDGER_REPLAY_TRANSIENT_RETRIES = env_int("LEDGER_REPLAY_TRANSIENT_RETRIES", 2, minimum=0)
# Who hears about HITL requests that wait too long (escalations and expiries).
LEDGER_NOTIFIER = env_str("LEDGER_NOTIFIER", "approvals.notify.EmailNotifier")
LEDGER_NOTIFY_WEBHOOK_URL = env_str("LEDGER_NOTIFY_WEBHOOK_URL", "") or ""
# Where people reach the portal (https://ledger.example.com): links in notifications.
LEDGER_PUBLIC_URL = env_str("LEDGER_PUBLIC_URL", "") or ""
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "ledger-portal@localhost")
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
# Resolves tools' secret references inside the tool's tenant's namespace (env:NAME of tenant
# acme -> LEDGER_TENANT_ACME_NAME by default); a class with resolve(tenant_slug, reference).
# Backends named by their path before operations/ was split out of runs/ keep working.
LEDGER_SECRETS_BACKEND = re.sub(r"^(runs|operations)\.secrets\.", "core.secrets.", env_str(
    "LEDGER_SECRETS_BACKEND") or "core.secrets.EnvironmentSecrets")
# Where the portal may send requests (tools, compensate hooks, OPA, webhooks): host names,
# host:port, addresses or CIDR ranges, comma-separated. Empty: nowhere. Loopback, private,
# link-local and metadata addresses are refused unless listed. Responses are cut at MAX_BYTES.
LEDGER_EGRESS_ALLOW = env_destinations("LEDGER_EGRESS_ALLOW")
LEDGER_EGRESS_MAX_BYTES = env_int("LEDGER_EGRESS_MAX_BYTES", 1024 * 1024, minimum=1024)
# The stdio MCP servers the portal may start for a tool (a tenant's tool picks one by name; it
# never types a command): JSON, name -> argv list or {"argv": [...], "secret_env": NAME,
# "env": {...}} (core/mcp_stdio.py). Empty: none.
LEDGER_MCP_STDIO_COMMANDS: dict[str, Any] = env_json("LEDGER_MCP_STDIO_COMMANDS", {})
parse_stdio_commands(LEDGER_MCP_STDIO_COMMANDS)  # a bad entry stops the process, named
# How long such a server may take to start and answer MCP's initialize (seconds; a server
# fetched by npx or uvx on first use is slow). Each call then has its tool's timeout.
LEDGER_MCP_STDIO_START_TIMEOUT = env_int("LEDGER_MCP_STDIO_START_TIMEOUT", 20, minimum=1)
# Incident escalation: who hears when write/delete/exfil calls are involved, and how.
LEDGER_INCIDENT_NOTIFIER = env_str("LEDGER_INCIDENT_NOTIFIER", "incidents.notify.EmailNotifier")
LEDGER_INCIDENT_WEBHOOK_URL = env_str("LEDGER_INCIDENT_WEBHOOK_URL", "") or ""
LEDGER_SECURITY_CONTACTS = env_list("LEDGER_SECURITY_CONTACTS", [])
LEDGER_DATA_OWNER_CONTACTS = env_list("LEDGER_DATA_OWNER_CONTACTS", [])
# Per tenant slug, overriding the two lists above: {"acme": {"security": [..], "data_owners": [..]}}
LEDGER_INCIDENT_CONTACTS = env_json("LEDGER_INCIDENT_CONTACTS", {})
if not isinstance(LEDGER_INCIDENT_CONTACTS, dict) or not all(
        isinstance(v, dict) and set(v) <= {"security", "data_owners"}
        and all(isinstance(x, list) and all(isinstance(e, str) for e in x) for x in v.values())
        for v in LEDGER_INCIDENT_CONTACTS.values()):
    raise ImproperlyConfigured('LEDGER_INCIDENT_CONTACTS must map tenant slugs to {"security": '
                               '[emails], "data_owners": [emails]}')
# Rollbacks: attempts on transient failures, exponential backoff (base, cap) and the time after
# which a queued or running rollback that has not moved is marked failed by the beat task.
LEDGER_ROLLBACK_MAX_ATTEMPTS = env_int("LEDGER_ROLLBACK_MAX_ATTEMPTS", 5, minimum=1)
LEDGER_ROLLBACK_BACKOFF_MS = env_int("LEDGER_ROLLBACK_BACKOFF_MS", 2000, minimum=0)
LEDGER_ROLLBACK_BACKOFF_MAX_MS = env_int("LEDGER_ROLLBACK_BACKOFF_MAX_MS", 300_000, minimum=0)
LEDGER_ROLLBACK_TIME_LIMIT = env_int("LEDGER_ROLLBACK_TIME_LIMIT", 900, minimum=10)
# The longest a client may block on GET /api/v1/approvals/<id>/?wait=N (seconds).
LEDGER_APPROVAL_MAX_WAIT = env_int("LEDGER_APPROVAL_MAX_WAIT", 30, minimum=0)
# Public keys of earlier signing keys (base64), still trusted when verifying old digests.
LEDGER_PREVIOUS_PUBLIC_KEYS = env_list("LEDGER_PREVIOUS_PUBLIC_KEYS", [])

# -- Task time limits, watchdogs and the broker's visibility timeout (docs/operations.md) --------
# Every task kind has a time limit (seconds): past it the task is told (SoftTimeLimitExceeded,
# it ends with its reason on record), 30 s later its process is killed. Measured on the 2-core
# CI machine (bench/README.md): an export part of 250,000 rows takes 10-45 s and a join of 1.8M
# records under a minute; a back-test of 1M calls 48 s; the limits leave tenfold or more.
LEDGER_TASK_TIME_LIMITS: dict[str, int] = {
    "exports.plan_export": 300,
    "exports.produce_export_part": env_int("LEDGER_EXPORT_PART_TIME_LIMIT", 900, minimum=10),
    "exports.join_export": env_int("LEDGER_EXPORT_JOIN_TIME_LIMIT", 1800, minimum=10),
    "exports.expire_exports": 600,
    "policies.run_backtest": env_int("LEDGER_BACKTEST_TIME_LIMIT", 3600, minimum=10),
    "runs.run_replay": LEDGER_REPLAY_TIME_LIMIT,
    "runs.run_rollback": 300,
    # under its hourly schedule, so two never overlap; a cut batch is rolled back whole
    "runs.apply_retention": 3000,
    "runs.seal_tenant_digests": 600,
    "runs.assemble_idle_otel_traces": 120,
    "runs.defer_orphan_otel_events": 120,
    "runs.watch_replays": 120,
    "runs.fail_stuck_rollbacks": 120,
    "ledger_portal.watch_jobs": 120,
    "ledger_portal.dispatch_outbox": 120,
    "approvals.escalate_overdue": 120,
    # each delivery has a 5 s timeout; a tenant with many routes still finishes well inside
    "approvals.notify_approvers": 120,
    "ledger_portal.worker_heartbeat": 30,
    "ledger_portal.prune_login_events": 600,
    "ledger_portal.ensure_partitions": 600,
}
TASK_KILL_GRACE = 30
CELERY_TASK_ANNOTATIONS = {name: {"soft_time_limit": limit,
                                  "time_limit": limit + TASK_KILL_GRACE}
                           for name, limit in LEDGER_TASK_TIME_LIMITS.items()}
# The longest a task's message waits in a worker before it runs (a countdown): a replay looking
# again for its approval, a rollback backing off.
LEDGER_LONGEST_COUNTDOWN = max(LEDGER_REPLAY_APPROVAL_POLL, LEDGER_ROLLBACK_BACKOFF_MAX_MS // 1000)
# Redis hands a message that was taken but never acknowledged to another worker after the
# visibility timeout. Messages are acknowledged when their task ends (acks_late), so it must
# outlast the longest task plus its countdown, or a task still running is started twice; kombu's
# default (one hour) is shorter than a replay's limit. What it does not catch sooner, the
# watchdogs do: a job with no heartbeat for LEDGER_JOB_STALL_SECONDS is re-queued (exports,
# replays) or failed with its reason (back-tests), checked every LEDGER_WATCHDOG_INTERVAL.
CELERY_BROKER_VISIBILITY_TIMEOUT = (max(LEDGER_TASK_TIME_LIMITS.values()) + TASK_KILL_GRACE
                                    + LEDGER_LONGEST_COUNTDOWN + 300)
if REDIS_URL:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_BROKER_VISIBILITY_TIMEOUT}
LEDGER_WATCHDOG_INTERVAL = env_int("LEDGER_WATCHDOG_INTERVAL", 60, minimum=1)
LEDGER_JOB_STALL_SECONDS = env_int("LEDGER_JOB_STALL_SECONDS", 300, minimum=5)
LEDGER_JOB_MAX_STALLS = env_int("LEDGER_JOB_MAX_STALLS", 3, minimum=1)
LEDGER_JOB_WATCHDOGS = ["exports.watchdog.requeue_stalled_exports",
                        "operations.replay.requeue_stalled_replays",
                        "policies.backtest.fail_stalled_backtests"]
for _watchdog in ("watch-replays", "fail-stuck-rollbacks", "watch-jobs"):
    CELERY_BEAT_SCHEDULE[_watchdog]["schedule"] = LEDGER_WATCHDOG_INTERVAL
# A lost broker connection leaves a running task to finish: a replay stopped mid-call would
# leave the call's outcome unknown, and its conditional updates make a second copy harmless.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False

# LEDGER_LOG_FORMAT=json (deploy/ sets it): one JSON object per line (python-json-logger),
# with each request's access line (logger ledger.access: request id, route, status, duration,
# tenant, user or key id; never payloads); text, the default (make demo), for a terminal. The
# access line costs about 0.05-0.1 ms a request to format and write (bench/request_middleware),
# so it is on with json (where a collector wants it) and off with text (runserver and gunicorn
# print their own); LEDGER_ACCESS_LOG decides either way.
LEDGER_LOG_FORMAT = env_str("LEDGER_LOG_FORMAT") or "text"
if LEDGER_LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured("LEDGER_LOG_FORMAT is text or json")
from pythonjsonlogger.core import RESERVED_ATTRS as _LOG_RECORD_FIELDS  # noqa: E402

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "pythonjsonlogger.json.JsonFormatter",
                 "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                 "rename_fields": {"asctime": "time", "levelname": "level"},
                 # Celery's task lines pass their arguments and result as `data`; the text
                 # format never shows it, nor does this
                 "reserved_attrs": [*_LOG_RECORD_FIELDS, "data"]},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LEDGER_LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "WARNING")},
    "loggers": {"ledger.access": {
        "level": "INFO" if env_bool("LEDGER_ACCESS_LOG", LEDGER_LOG_FORMAT == "json")
        else "WARNING"}},
}
# A Celery worker keeps the handlers above instead of installing its own text ones, so its
# lines are JSON too (its level is then LOG_LEVEL's, not --loglevel's).
CELERY_WORKER_HIJACK_ROOT_LOGGER = LEDGER_LOG_FORMAT == "text"
# GET /metrics (Prometheus text): for a Bearer LEDGER_METRICS_TOKEN (_FILE-able) or callers in
# LEDGER_METRICS_ALLOW (addresses/CIDRs); with neither, it answers 404. Several processes
# (gunicorn workers, Celery workers): PROMETHEUS_MULTIPROC_DIR, read by core/metrics.py itself.
LEDGER_METRICS_TOKEN = env_str("LEDGER_METRICS_TOKEN") or ""
LEDGER_METRICS_ALLOW = env_list("LEDGER_METRICS_ALLOW", [])
