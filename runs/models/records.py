"""The ledger: runs and the records chained under them.

External ids (``run_id``, ``call_id``, ``annotation_id``) are unique per tenant, never globally.
Each record's ``ledger_content()`` names related rows by their external ids, so a record hashes
the same however the database numbers its rows.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.utils import timezone

from .base import LedgerQuerySet, LedgerRecord
from .governance import ActionClass, Agent, Tool

__all__ = ["ActionClass", "Annotation", "Classification", "ModelCall", "Run", "Step", "ToolCall"]


class Classification(models.TextChoices):
    """Labels on fields of inputs, outputs and prompts, from least to most sensitive."""

    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    RESTRICTED = "restricted"
    SECRET = "secret"


class RunStatus(models.TextChoices):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_RUN_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})


class RunQuerySet(LedgerQuerySet):
    def advance_tip(self, run_pk: int, **tip: Any) -> int:
        """Move a run's tip (last seq, head hash, status): the only update the ledger allows."""
        allowed = {"last_seq", "head_hash", "status", "ended_at", "tip_moved_at"}
        if not set(tip) <= allowed:
            raise ValueError(f"only {sorted(allowed)} of a run may change")
        tip.setdefault("tip_moved_at", timezone.now())
        return models.QuerySet.update(self.filter(pk=run_pk), **tip)


class Run(LedgerRecord):
    """One agent run: the head of its chain (seq 0).

    The identity columns are immutable. The tip columns (``last_seq``, ``head_hash``, ``status``,
    ``ended_at``) only move forward, by ingestion; a status change is itself chained as an
    annotation, so the tip is a cache of what the chain says.
    """

    kind: ClassVar[str] = "run"
    content_fields = ("run_id", "agent_id", "goal", "trigger_ref", "started_at", "replay_of",
                      "metadata")
    content_refs = {"agent_id": "agent__agent_id", "replay_of": "replay_of__run_id"}

    run_id = models.CharField(max_length=200)
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="runs")
    goal = models.TextField(blank=True)
    trigger_ref = models.CharField(max_length=200, blank=True,
                                   help_text="The alert or request that started the run.")
    started_at = models.DateTimeField()
    replay_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT,
                                  related_name="replays")
    metadata = models.JSONField(default=dict, blank=True)

    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.RUNNING)
    ended_at = models.DateTimeField(null=True, blank=True)
    last_seq = models.PositiveIntegerField(default=0)
    head_hash = models.CharField(max_length=64)
    tip_moved_at = models.DateTimeField(default=timezone.now, db_index=True,
                                        help_text="When the chain last grew (for digests).")

    objects = RunQuerySet.as_manager()  # type: ignore[misc]  # a narrower manager than the base

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "run_id"], name="run_id_unique_per_tenant")
        ]
        indexes = [
            # The admin's sort by started_at, either way (ties by id, in the sort's direction),
            # within a tenant and across all of them; and its default list, newest first.
            models.Index(fields=["tenant", "-started_at", "-id"], name="run_tenant_started_id"),
            models.Index(fields=["-started_at", "-id"], name="run_started_id"),
            models.Index(fields=["tenant", "-id"], name="run_tenant_id"),
            models.Index(fields=["tenant", "status", "-id"], name="run_tenant_status"),
            models.Index(fields=["tenant", "trigger_ref"], name="run_tenant_trigger"),
        ]

    def __str__(self) -> str:
        return self.run_id

    @property
    def is_closed(self) -> bool:
        return self.status in TERMINAL_RUN_STATUSES



class RunRecord(LedgerRecord):
    """A record chained under a run."""

    # No index of its own: every record table's unique (run, seq) leads with the run (on
    # PostgreSQL, its ``_lookup`` index on the partitioned table), and serves what one would.
    # Each index is one more entry written per record stored.
    run = models.ForeignKey(Run, on_delete=models.PROTECT, related_name="+", db_index=False)

    class Meta:
        abstract = True


class Step(RunRecord):
    kind: ClassVar[str] = "step"
    content_fields = ("run_id", "step_id", "index", "title", "status", "started_at", "ended_at",
                      "metadata")
    content_refs = {"run_id": "run__run_id"}

    step_id = models.CharField(max_length=200)
    index = models.PositiveIntegerField(help_text="Position in the agent's plan.")
    title = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=20, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["run", "step_id"], name="step_id_unique_per_run"),
            models.UniqueConstraint(fields=["run", "seq"], name="step_seq_unique_per_run"),
        ]

    def __str__(self) -> str:
        # Ids only: a title or body is agent content, shown redacted where it is shown at all
        # (a name printed in links and breadcrumbs would skip the engine).
        return f"{self.index}. {self.step_id}"



class ModelCall(RunRecord):
    kind: ClassVar[str] = "model_call"
    content_fields = ("run_id", "call_id", "step_id", "provider", "model", "messages", "response",
                      "input_tokens", "output_tokens", "latency_ms", "started_at", "ended_at",
                      "error", "classifications", "request")
    content_refs = {"run_id": "run__run_id", "step_id": "step__step_id"}
    optional_content_fields = frozenset({"request"})

    # Indexed by the unique (tenant, call_id) and the admin's (tenant, ...) indexes.
    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="+", db_index=False)
    call_id = models.CharField(max_length=200)
    step = models.ForeignKey(Step, null=True, blank=True, on_delete=models.PROTECT,
                             related_name="+")
    provider = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=200)
    messages = models.JSONField(default=list, help_text="The prompt messages sent.")
    response = models.JSONField(null=True, blank=True)
    request = models.JSONField(
        null=True, blank=True, help_text="What was asked of the model beside the messages: "
        "the model requested, sampling parameters (temperature, max tokens), tools offered.")
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    classifications = models.JSONField(default=dict, blank=True,
                                       help_text="Field path -> classification label.")

    class Meta:
        ordering = ["run", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "call_id"],
                                    name="model_call_id_unique_per_tenant"),
            models.UniqueConstraint(fields=["run", "seq"], name="model_call_seq_unique_per_run"),
        ]

    def __str__(self) -> str:
        return f"{self.model} ({self.call_id})"



class ToolCallStatus(models.TextChoices):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PENDING = "pending"
    DENIED = "denied"
    CANCELLED = "cancelled"


class ToolCall(RunRecord):
    kind: ClassVar[str] = "tool_call"
    content_fields = ("run_id", "call_id", "step_id", "tool", "action_class", "input", "output",
                      "status", "error", "attempt", "retry_of", "started_at", "ended_at",
                      "idempotency_key", "supports_rollback", "classifications",
                      "tool_call_ref")
    content_refs = {"run_id": "run__run_id", "step_id": "step__step_id", "tool": "tool__name",
                    "retry_of": "retry_of__call_id"}
    optional_content_fields = frozenset({"tool_call_ref"})

    # Indexed by the unique (tenant, call_id) and the admin's (tenant, ...) indexes.
    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="+", db_index=False)
    call_id = models.CharField(max_length=200)
    tool_call_ref = models.CharField(
        max_length=200, blank=True, default="",
        help_text="The tool call's own id, as the agent or its framework named it (OpenTelemetry "
                  "gen_ai.tool.call.id); call_id stays the ledger's id.")
    step = models.ForeignKey(Step, null=True, blank=True, on_delete=models.PROTECT,
                             related_name="+")
    # Indexed by (tool, -id) below, which also serves the admin's tool filter.
    tool = models.ForeignKey(Tool, on_delete=models.PROTECT, related_name="calls",
                             db_index=False)
    action_class = models.CharField(max_length=8, choices=ActionClass.choices)
    input = models.JSONField(default=dict)
    output = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=ToolCallStatus.choices)
    error = models.JSONField(null=True, blank=True)
    attempt = models.PositiveSmallIntegerField(default=1)
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="retries")
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=200, blank=True)
    supports_rollback = models.BooleanField(default=False)
    classifications = models.JSONField(default=dict, blank=True,
                                       help_text="Field path -> classification label.")

    class Meta:
        ordering = ["run", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "call_id"],
                                    name="tool_call_id_unique_per_tenant"),
            models.UniqueConstraint(fields=["run", "seq"], name="tool_call_seq_unique_per_run"),
        ]
        indexes = [
            models.Index(fields=["tenant", "-id"], name="toolcall_tenant_id"),
            models.Index(fields=["tenant", "tool", "-id"], name="toolcall_tenant_tool"),
            models.Index(fields=["tenant", "action_class", "-id"], name="toolcall_tenant_class"),
            models.Index(fields=["tenant", "status", "-id"], name="toolcall_tenant_status"),
            # The admin's sort by started_at either way, in a tenant and over all of them, and
            # a superuser's tool filter (one tool's calls are one tenant's, newest first).
            models.Index(fields=["tenant", "-started_at", "-id"],
                         name="toolcall_tenant_started_id"),
            models.Index(fields=["-started_at", "-id"], name="toolcall_started_id"),
            models.Index(fields=["tool", "-id"], name="toolcall_tool_id"),
        ]

    def __str__(self) -> str:
        return f"{self.tool.name} ({self.call_id})"



class AnnotationKind(models.TextChoices):
    NOTE = "note"
    RUN_STATUS = "run_status", "run status"
    CORRECTION = "correction"
    POLICY_CHANGE = "policy_change", "policy change"
    APPROVAL = "approval"
    OVERRIDE = "override"
    ROLLBACK = "rollback"
    REPLAY = "replay"
    INCIDENT_LINK = "incident_link", "incident link"
    RETENTION = "retention"
    CONFIGURATION = "configuration", "configuration change"
    # Someone read ledger data below strict redaction (who, what, at which level).
    DISCLOSURE = "disclosure", "view below strict redaction"
    # Interventions a person records by hand: never in the shape of the portal's own records.
    MANUAL_APPROVAL = "manual_approval", "approval (recorded by hand)"
    MANUAL_POLICY_CHANGE = "manual_policy_change", "policy change (recorded by hand)"
    MANUAL_OVERRIDE = "manual_override", "override (recorded by hand)"


def new_annotation_id() -> str:
    return uuid.uuid4().hex


class Annotation(RunRecord):
    """A note on the ledger, by an agent or by the service that performed a manual intervention."""

    kind: ClassVar[str] = "annotation"
    content_fields = ("run_id", "annotation_id", "annotation_kind", "target_call_id", "body",
                      "data", "author_label")
    content_refs = {"run_id": "run__run_id"}

    # Indexed by the unique (tenant, annotation_id) and the admin's (tenant, ...) indexes.
    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="+", db_index=False)
    annotation_id = models.CharField(max_length=200, default=new_annotation_id)
    annotation_kind = models.CharField(max_length=20, choices=AnnotationKind.choices,
                                       default=AnnotationKind.NOTE)
    target_call_id = models.CharField(max_length=200, blank=True,
                                      help_text="The record this annotation is about, if any.")
    body = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                               on_delete=models.PROTECT, related_name="+")
    author_label = models.CharField(max_length=200, blank=True,
                                    help_text="Who wrote it: a user, an API key or the system.")

    class Meta:
        ordering = ["run", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "annotation_id"],
                                    name="annotation_id_unique_per_tenant"),
            models.UniqueConstraint(fields=["run", "seq"], name="annotation_seq_unique_per_run"),
        ]
        indexes = [
            # The admin's list, newest first, and its sort by recorded_at either way.
            models.Index(fields=["tenant", "-id"], name="annotation_tenant_id"),
            models.Index(fields=["tenant", "-recorded_at", "-id"],
                         name="annotation_tenant_recorded"),
            models.Index(fields=["-recorded_at", "-id"], name="annotation_recorded_id"),
        ]

    def __str__(self) -> str:
        return f"{self.annotation_kind} {self.annotation_id}"

