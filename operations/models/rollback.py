"""Rollbacks: one compensation of one completed tool call, run by a Celery task.

A call is rolled back at most once per tenant (a unique constraint): asking again, even at the
same moment, returns the first rollback and its outcome. The row is the job: status, attempts
(each recorded before the compensate hook is called), outcome, what side effects remain.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from core.models import TenantOwned


class RollbackStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARTIAL = "partial", "partial (side effects remain)"


FINISHED_ROLLBACK_STATUSES = frozenset({RollbackStatus.SUCCEEDED, RollbackStatus.FAILED,
                                        RollbackStatus.PARTIAL})


class Rollback(TenantOwned):
    tool_call = models.ForeignKey("runs.ToolCall", on_delete=models.PROTECT,
                                  related_name="rollbacks")
    run = models.ForeignKey("runs.Run", on_delete=models.PROTECT, related_name="+",
                            help_text="The run of the call (for whole-run rollbacks).")
    status = models.CharField(max_length=9, choices=RollbackStatus.choices,
                              default=RollbackStatus.QUEUED)
    idempotency_key = models.CharField(
        max_length=200, help_text="Sent with every compensate attempt; derived from the call.")
    attempts = models.PositiveSmallIntegerField(default=0)
    attempt_log = models.JSONField(default=list, blank=True,
                                   help_text="One entry per attempt: when, result, error, "
                                   "the backoff before the next.")
    outcome = models.JSONField(null=True, blank=True, help_text="What the hook answered.")
    remaining_side_effects = models.JSONField(default=list, blank=True)
    last_error = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                     on_delete=models.PROTECT, related_name="+")
    requested_by_label = models.CharField(max_length=200, blank=True)
    incident = models.ForeignKey("incidents.Incident", null=True, blank=True,
                                 on_delete=models.PROTECT, related_name="rollbacks")
    decision = models.ForeignKey(
        "policies.Decision", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The policy decision that let this compensation go ahead.")
    batch = models.CharField(max_length=32, blank=True, db_index=True,
                             help_text="Whole-run rollbacks share a batch, in `position` order.")
    position = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_activity_at = models.DateTimeField(default=timezone.now, help_text="For the watchdog.")


    class Meta:
        db_table = "runs_rollback"  # as when it lived in runs/ (operations 0001)
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["tenant", "tool_call"],
                                               name="rollback_once_per_call")]
        indexes = [models.Index(fields=["status", "last_activity_at"],
                                name="rollback_watchdog")]

    def __str__(self) -> str:
        return f"rollback {self.pk} of {self.tool_call_id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_ROLLBACK_STATUSES
