"""Policies: versioned rule sets that decide what agents may do, and the trail of decisions.

A version is a draft until published, then immutable; publishing retires the previous one.
Every decision taken is stored (the policy trail) and never changed.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from simple_history.models import HistoricalRecords

from core.history import history_user
from core.models import TenantOwned
from runs.models.base import AppendOnly, LedgerQuerySet


class Effect(models.TextChoices):
    ALLOW = "allow"
    SANDBOX_ONLY = "sandbox_only", "sandbox only"
    REQUIRE_APPROVAL = "require_approval", "require approval"
    DENY = "deny"


# The strictest matching effect wins.
STRICTNESS = {Effect.ALLOW: 0, Effect.SANDBOX_ONLY: 1, Effect.REQUIRE_APPROVAL: 2,
              Effect.DENY: 3}


class Mode(models.TextChoices):
    LIVE = "live"
    SANDBOX = "sandbox"
    REPLAY = "replay"
    # A compensation the portal is asked to send (a rollback): decided like any call.
    ROLLBACK = "rollback"


# What an agent may declare when it asks; rollback decisions are the portal's own.
AGENT_MODES = [(m.value, m.label) for m in Mode if m != Mode.ROLLBACK]


class Engine(models.TextChoices):
    EMBEDDED = "embedded", "embedded rules"
    OPA = "opa", "OPA (REST Data API)"


class Policy(TenantOwned):
    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="policies")
    name = models.SlugField(max_length=100)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords(get_user=history_user)

    class Meta:
        ordering = ["tenant", "name"]
        verbose_name_plural = "policies"
        constraints = [models.UniqueConstraint(fields=["tenant", "name"],
                                               name="policy_name_unique_per_tenant")]

    def __str__(self) -> str:
        return self.name


class VersionStatus(models.TextChoices):
    DRAFT = "draft"
    PUBLISHED = "published"
    RETIRED = "retired"


class PolicyVersion(TenantOwned):
    policy = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=VersionStatus.choices,
                              default=VersionStatus.DRAFT)
    default_effect = models.CharField(
        max_length=20, choices=Effect.choices, default=Effect.ALLOW, blank=True,
        help_text="The effect when no rule matches. Empty: none; the policy decides only the "
        "calls its rules match and leaves the others to the tenant's other policies (a tool "
        "freeze is such a policy, so it can only tighten).")
    # What decides is part of the version, so the checksum covers it and changing it takes a
    # new draft and a second person's publish, like a rule.
    engine = models.CharField(max_length=10, choices=Engine.choices, default=Engine.EMBEDDED)
    opa_url = models.URLField(blank=True, help_text="e.g. http://opa:8181")
    opa_path = models.CharField(max_length=200, blank=True,
                                help_text="Decision path, e.g. agents/tools/effect")
    opa_timeout_ms = models.PositiveIntegerField(
        default=500, help_text="A deadline for OPA's whole answer.")
    opa_fallback_effect = models.CharField(
        max_length=20, choices=Effect.choices, default=Effect.DENY,
        help_text="The effect when OPA cannot answer in time (fail closed by default).")
    change_note = models.TextField(help_text="What changes, and why.")
    based_on = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The version this draft was copied from (the published one, when it was "
        "drafted), if any.")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                               on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    publisher = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                  on_delete=models.PROTECT, related_name="+")
    published_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    checksum = models.CharField(max_length=64, blank=True)

    history = HistoricalRecords(get_user=history_user)

    class Meta:
        ordering = ["policy", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "number"], name="version_number_unique"),
            models.UniqueConstraint(fields=["policy"], condition=models.Q(status="published"),
                                    name="one_published_version_per_policy"),
        ]

    def __str__(self) -> str:
        return f"{self.policy.name} v{self.number} ({self.status})"

    # The settings that decide besides the rules; a new draft copies them from its base.
    DECIDING_FIELDS = ("default_effect", "engine", "opa_url", "opa_path", "opa_timeout_ms",
                       "opa_fallback_effect")

    # Once published a version only moves on to retired; its content never changes.
    LIFECYCLE_FIELDS = frozenset({"status", "published_at", "publisher", "retired_at",
                                  "checksum"})

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            stored = PolicyVersion.objects.filter(pk=self.pk).values_list(
                "status", flat=True).first()
            fields = kwargs.get("update_fields")
            if stored not in (None, VersionStatus.DRAFT) and (
                    fields is None or not set(fields) <= self.LIFECYCLE_FIELDS):
                from django.core.exceptions import ValidationError

                raise ValidationError(f"a {stored} version is immutable; draft a new version")
        super().save(*args, **kwargs)


    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.engine == Engine.OPA and not (self.opa_url and self.opa_path):
            raise ValidationError({"opa_url" if not self.opa_url else "opa_path":
                                   "OPA decides only with both a URL and a decision path."})

    @property
    def is_draft(self) -> bool:
        return self.status == VersionStatus.DRAFT

class OutageMatch(models.TextChoices):
    ANY = "any", "in and out of outage"
    ONLY = "only", "only during an outage"
    NEVER = "never", "only outside an outage"


class Rule(TenantOwned):
    """One rule of a version; rules are edited only while their version is a draft."""

    version = models.ForeignKey(PolicyVersion, on_delete=models.CASCADE, related_name="rules")
    position = models.PositiveIntegerField(default=0)
    name = models.CharField(max_length=100)
    tool = models.CharField(max_length=200, default="*", help_text="Tool name glob, e.g. refund_*")
    action_classes = models.JSONField(default=list, blank=True,
                                      help_text="Any of read, write, delete, exfil (empty: any).")
    agents = models.JSONField(default=list, blank=True, help_text="agent_ids (empty: any).")
    modes = models.JSONField(default=list, blank=True,
                             help_text="Any of live, sandbox, replay, rollback (empty: any).")
    outage = models.CharField(max_length=5, choices=OutageMatch.choices, default=OutageMatch.ANY)
    condition = models.TextField(blank=True, help_text="Optional CEL expression over the input "
                                 "document, e.g. args.amount_cents > 10000")
    effect = models.CharField(max_length=20, choices=Effect.choices)

    history = HistoricalRecords(get_user=history_user)

    class Meta:
        ordering = ["version", "position", "id"]

    def __str__(self) -> str:
        return f"{self.name} -> {self.effect}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self._refuse_unless_draft()
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        self._refuse_unless_draft()
        return super().delete(*args, **kwargs)

    def _refuse_unless_draft(self) -> None:
        from django.core.exceptions import ValidationError

        status = PolicyVersion.objects.filter(pk=self.version_id).values_list(
            "status", flat=True).first()
        if status != VersionStatus.DRAFT:
            raise ValidationError(f"the rules of a {status} version cannot change; draft a "
                                  "new version")

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from .engine import condition_problems

        problems = condition_problems(self.condition)
        if problems:
            raise ValidationError({"condition": problems})

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tool": self.tool, "action_classes": self.action_classes,
                "agents": self.agents, "modes": self.modes, "outage": self.outage,
                "condition": self.condition, "effect": self.effect}


class Decision(TenantOwned, AppendOnly):
    """One decision on a proposed tool call: the policy trail."""

    run_id = models.CharField(max_length=200, blank=True)
    call_id = models.CharField(max_length=200, blank=True, db_index=True)
    agent_id = models.CharField(max_length=200, blank=True)
    tool = models.CharField(max_length=200)
    action_class = models.CharField(max_length=8)
    declared_action_class = models.CharField(
        max_length=8, blank=True,
        help_text="The class the agent declared, when the tool registry says otherwise.")
    mode = models.CharField(max_length=10, choices=Mode.choices)
    input = models.JSONField(help_text="The input document the engine saw.")
    effect = models.CharField(max_length=20, choices=Effect.choices)
    reason = models.TextField(blank=True)
    policy_version = models.ForeignKey(PolicyVersion, null=True, blank=True,
                                       on_delete=models.PROTECT, related_name="decisions")
    matched_rules = models.JSONField(default=list)
    engine = models.CharField(max_length=10, choices=Engine.choices)
    engine_answers = models.JSONField(
        default=list, blank=True, help_text="Each external engine's reference to its answer: "
        "policy, version, OPA's decision_id and the revision of each bundle it decided with.")
    latency_us = models.PositiveIntegerField()
    replay = models.ForeignKey(
        "operations.Replay", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="Taken during this replay: part of the replay's trail, not the original "
        "run's.")
    approval = models.ForeignKey("approvals.ApprovalRequest", null=True, blank=True,
                                 on_delete=models.PROTECT, related_name="decisions")
    exception = models.ForeignKey("policies.GovernedException", null=True, blank=True,
                                  on_delete=models.PROTECT, related_name="decisions",
                                  help_text="The governed exception that overrode the policy.")
    decided_by = models.CharField(max_length=200, blank=True, help_text="Who asked.")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = LedgerQuerySet.as_manager()  # type: ignore[misc]  # narrower than TenantOwned's

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["tenant", "-id"], name="decision_tenant_id"),
                   models.Index(fields=["tenant", "run_id"], name="decision_tenant_run")]

    def __str__(self) -> str:
        return f"{self.tool}: {self.effect}"


class ExceptionStatus(models.TextChoices):
    REQUESTED = "requested"
    AWAITING_SECOND = "awaiting_second", "awaiting a second grantor"
    ACTIVE = "active"
    REVOKED = "revoked"


class GovernedException(TenantOwned):
    """A scoped, justified, time-bound override of what a policy version decides."""

    tool = models.CharField(max_length=200, help_text="Tool name glob.")
    agent_id = models.CharField(max_length=200, blank=True, help_text="Empty: any agent.")
    action_class = models.CharField(max_length=8, blank=True, help_text="Empty: any class.")
    policy_version = models.ForeignKey(PolicyVersion, on_delete=models.PROTECT,
                                       related_name="exceptions",
                                       help_text="The version whose decisions it overrides.")
    effect = models.CharField(max_length=20, choices=Effect.choices, default=Effect.ALLOW)
    justification = models.TextField()
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=ExceptionStatus.choices,
                              default=ExceptionStatus.REQUESTED)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                     related_name="+")
    granted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.PROTECT, related_name="+")
    second_grantor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                       on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords(get_user=history_user)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "status", "ends_at"],
                                name="exception_active")]

    def __str__(self) -> str:
        return f"exception {self.pk}: {self.tool} -> {self.effect} ({self.status})"


class BackTestStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class BackTest(TenantOwned):
    """A draft version run against the recorded tool calls of a window, before publishing."""

    version = models.ForeignKey(PolicyVersion, on_delete=models.PROTECT,
                                related_name="backtests")
    window_from = models.DateTimeField()
    window_to = models.DateTimeField()
    status = models.CharField(max_length=8, choices=BackTestStatus.choices,
                              default=BackTestStatus.QUEUED)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    changed = models.PositiveIntegerField(default=0)
    redacted_calls = models.PositiveIntegerField(
        default=0, help_text="Calls whose arguments held values the requester sees redacted: "
        "conditions read those as their markers.")
    agents = models.JSONField(default=list, blank=True,
                              help_text="Only the calls of these agent_ids (empty: every agent).")
    tools = models.JSONField(default=list, blank=True,
                             help_text="Only the calls of these tools (empty: every tool).")
    counts = models.JSONField(
        default=dict, blank=True, help_text="tool -> {calls, before: {effect: calls}, after: "
        "{effect: calls}, changed}: every call of the window, changed or not")
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                     on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Watchdog (core/watchdog.py): when a worker last showed this job moving, and how
    # often the watchdog found it stalled and queued it again.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    stalls = models.PositiveSmallIntegerField(default=0)


    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"back-test of {self.version} ({self.status})"

    @property
    def percent(self) -> int:
        return int(100 * self.processed / self.total) if self.total else (
            100 if self.status == BackTestStatus.DONE else 0)


class BackTestChange(TenantOwned):
    """One recorded call a back-tested draft would decide differently: every one is kept, so
    a reviewer can open each before publishing."""

    backtest = models.ForeignKey(BackTest, on_delete=models.CASCADE, related_name="changes")
    call_id = models.CharField(max_length=200)
    run_id = models.CharField(max_length=200)
    tool = models.CharField(max_length=200)
    before = models.CharField(max_length=20, choices=Effect.choices)
    after = models.CharField(max_length=20, choices=Effect.choices)
    rules = models.JSONField(default=list, blank=True,
                             help_text="The draft's rules that matched the call.")

    class Meta:
        ordering = ["backtest", "id"]
        indexes = [models.Index(fields=["backtest", "tool", "id"], name="backtest_change_tool")]
