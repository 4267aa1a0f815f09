"""Tenants, the guardian permission rows that carry per-tenant roles, and API keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth.models import User
from django.db import models
from django.utils import timezone
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase
from simple_history.models import HistoricalRecords

from .actors import Viewer
from .history import history_user
from .roles import Role
from .tenancy import TenantScopedQuerySet

if TYPE_CHECKING:
    from django.db.models import QuerySet


class TenantQuerySet(models.QuerySet["Tenant"]):
    def for_user(self, user: Viewer, role: str) -> QuerySet[Tenant]:
        from .tenancy import tenants_for

        return tenants_for(user, role, base=self)

    def lock_rows(self) -> list[Tenant]:
        """Lock these tenants' rows until the transaction ends, in id order (so two lockers of
        the same tenants never deadlock): how the changes made one at a time per tenant
        (retention, legal holds, digests, export signatures, outage mode) take their turn.

        ``FOR NO KEY UPDATE``, not ``FOR UPDATE``: every record an agent stores checks its
        foreign key to its tenant with a ``FOR KEY SHARE`` lock, which ``FOR UPDATE`` blocks.
        With it, every store of the tenant waited for the change to commit."""
        return list(self.select_for_update(no_key=True).order_by("pk"))


class Tenant(models.Model):
    slug = models.SlugField(max_length=63, unique=True)
    name = models.CharField(max_length=200)
    outage_mode = models.BooleanField(
        default=False,
        help_text="During an outage replays are forced to sandbox and leaving it needs HITL "
        "approval.",
    )
    approval_escalate_minutes = models.PositiveIntegerField(
        default=30, help_text="A pending HITL request is escalated (flagged, approvers "
        "notified) after this long.")
    approval_timeout_minutes = models.PositiveIntegerField(
        default=240, help_text="A pending HITL request expires after this long.")
    retention_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Closed runs that ended longer ago than this are "
        "removed by the retention task, unless something holds them. Empty: keep forever.")
    unregistered_tools = models.CharField(
        max_length=20, default="require_approval",
        choices=[("require_approval", "hold for a person unless declared read"),
                 ("trust_declared", "decide by the class the agent declares")],
        help_text="How calls to tools missing from the tool registry are decided: their "
        "declared class is only the agent's word.")
    batch_unknown_fields = models.CharField(
        max_length=10, default="strict",
        choices=[("strict", "refuse the batch (400), nothing recorded"),
                 ("lenient", "record the known part, defer the rest for reconciliation")],
        help_text="What batch ingestion does with fields or enum values it does not know (a "
        "newer agent's): strict refuses the whole batch; lenient records what it knows and "
        "keeps the rest as deferred items (Deferred pending ledger schema reconciliation).")
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords(get_user=history_user)
    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]
        permissions = [(role.value, role.label) for role in Role]

    def __str__(self) -> str:
        return self.slug


class TenantUserObjectPermission(UserObjectPermissionBase):
    """Guardian direct foreign-key permission: a role of one user on one tenant."""

    content_object = models.ForeignKey(Tenant, on_delete=models.CASCADE)

    class Meta(UserObjectPermissionBase.Meta):
        verbose_name = "tenant role of a user"


class TenantGroupObjectPermission(GroupObjectPermissionBase):
    """Guardian direct foreign-key permission: a role of one group on one tenant."""

    content_object = models.ForeignKey(Tenant, on_delete=models.CASCADE)

    class Meta(GroupObjectPermissionBase.Meta):
        verbose_name = "tenant role of a group"


KEY_PREFIX = "lpk"


def new_credential(kind: str) -> tuple[str, str]:
    """A new ``(prefix, raw)`` credential ``<kind>_<prefix>_<secret>``: the prefix finds its
    row, the secret carries 256 bits."""
    prefix = secrets.token_hex(6)
    return prefix, f"{kind}_{prefix}_{secrets.token_urlsafe(32)}"


def hash_api_key(raw: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is enough (no password stretching).
    return hashlib.sha256(raw.encode()).hexdigest()


class TenantOwned(models.Model):
    """A row that belongs to one tenant: its ``tenant`` and the one tenant scope
    (``objects.for_user(user, role)``). A model may redeclare ``tenant`` (its own related
    name, what a tenant's removal does) or ``objects`` (a narrower queryset that still derives
    from ``TenantScopedQuerySet``); ``manage.py check`` refuses a model with a foreign key to
    Tenant that does not derive from this (``ledger_portal.E001``)."""

    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT, related_name="+")

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        abstract = True


class ApiKeyQuerySet(TenantScopedQuerySet["ApiKey"]):
    def usable(self) -> ApiKeyQuerySet:
        now = timezone.now()
        return self.filter(revoked_at__isnull=True, confirmed_at__isnull=False).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiKey(TenantOwned):
    """A tenant's credential for agents. Only a hash is stored; the key is shown once."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list, help_text="Roles this key acts with.")
    agent_ids = models.JSONField(
        default=list, blank=True, help_text="The agents this key records and asks for (empty: "
        "any). A governed exception scoped to an agent applies only through a key bound to it.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # A key with a sensitive scope (SENSITIVE_SCOPES) works only once a second person who holds
    # those roles confirmed it; keys without one are confirmed when issued.
    confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+", editable=False)
    confirmed_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True, editable=False)

    history = HistoricalRecords(excluded_fields=["last_used_at", "last_used_ip"],
                                get_user=history_user)
    objects = ApiKeyQuerySet.as_manager()  # type: ignore[misc]  # narrower than TenantOwned's

    class Meta:
        ordering = ["tenant", "name"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name} ({KEY_PREFIX}_{self.prefix}_…)"

    @staticmethod
    def generate() -> tuple[str, str]:
        """A new ``(prefix, raw_key)``; the raw key is ``lpk_<prefix>_<secret>``."""
        return new_credential(KEY_PREFIX)

    def matches(self, raw: str) -> bool:
        return hmac.compare_digest(self.key_hash, hash_api_key(raw))

    @property
    def is_usable(self) -> bool:
        if self.revoked_at is not None or self.confirmed_at is None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()


class CliActor(User):
    """A portal user acting through the ``ledger`` command: its name says how they
    authenticated (token, or local mode), so every record they write carries it."""

    acting_via = ""
    # The token's scopes (roles): the tenant scope narrows the user's roles to them.
    token_scopes: frozenset[str] | None = None

    class Meta:
        proxy = True

    def __str__(self) -> str:
        return f"{self.username} via {self.acting_via}" if self.acting_via else self.username


class PersonalAccessToken(models.Model):
    """How a person authenticates the ``ledger`` command (``core.access_tokens``)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="access_tokens")
    name = models.CharField(max_length=100, help_text="What it is for, e.g. the laptop.")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list, help_text="Roles it acts with (of its user's).")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["user", "-created_at"]
        verbose_name = "personal access token"

    def __str__(self) -> str:
        return f"{self.user} {self.label}"

    @property
    def label(self) -> str:
        return f"lpt_{self.prefix} (#{self.pk})"


class WorkerHeartbeat(models.Model):
    """When a Celery worker last ran the heartbeat task (``core.workers``): the proof that
    queued work is being picked up, for ``/readyz`` and for pages that show a queued job."""

    hostname = models.CharField(max_length=255, unique=True)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.hostname} at {self.seen_at:%Y-%m-%d %H:%M:%S}"


class OutboxMessage(models.Model):
    """A Celery message the broker could not take when it was sent (see ``jobs.py``)."""

    task = models.CharField(max_length=200)
    args = models.JSONField(default=list)
    task_id = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.task}{self.args}"


class SsoIdentity(models.Model):
    """The IdP account (issuer and subject) a portal user signs in as through single sign-on:
    the link is made at the first sign-in and never by e-mail or name, which an IdP lets
    people choose."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="sso_identity")
    issuer = models.CharField(max_length=500)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"],
                                               name="sso_identity_once")]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"


class SsoRoleGrant(models.Model):
    """A role the IdP's groups gave a user (``core.sso_roles``): sign-in removes these, and
    only these, when the groups no longer give them; roles granted by hand are left alone."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="sso_role_grants")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    role = models.CharField(max_length=40, choices=Role.choices)
    granted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "tenant", "role"],
                                               name="sso_role_grant_once")]

    def __str__(self) -> str:
        return f"{self.role} on {self.tenant_id} for {self.user_id} (single sign-on)"


class LoginMethod(models.TextChoices):
    PASSWORD = "password"
    OIDC = "oidc", "single sign-on"
    OTHER = "other"


class LoginOutcome(models.TextChoices):
    SUCCESS = "success"
    FAILURE = "failure"
    LOGOUT = "logout"


class LoginEvent(models.Model):
    """Every sign-in, failed sign-in and sign-out (``core.login_audit``): who, when, from
    where, how. Logins belong to no tenant: the admin lists them to superusers and to holders
    of the global ``view_loginevent`` permission (security staff)."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    account = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                on_delete=models.SET_NULL, related_name="+")
    username = models.CharField(max_length=150, blank=True,
                                help_text="The name given or asserted (kept if the account "
                                          "goes).")
    ip = models.GenericIPAddressField(null=True, blank=True)
    method = models.CharField(max_length=10, choices=LoginMethod.choices)
    outcome = models.CharField(max_length=10, choices=LoginOutcome.choices)
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-at", "-pk"]
        verbose_name = "login event"

    def __str__(self) -> str:
        return f"{self.outcome} {self.method} {self.username} at {self.at:%Y-%m-%d %H:%M:%S}"
