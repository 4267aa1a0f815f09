"""Replays of recorded runs and their steps: a job row with status and progress, one row per
replayed tool call (a live step committed before the walk moves on, sandbox steps in groups)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from core.models import TenantOwned


class ReplayMode(models.TextChoices):
    SANDBOX = "sandbox"
    LIVE = "live"


class ReplayStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval", "waiting for approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"


ACTIVE_REPLAY_STATUSES = (ReplayStatus.QUEUED, ReplayStatus.RUNNING,
                          ReplayStatus.WAITING_APPROVAL)


class Replay(TenantOwned):
    run = models.ForeignKey("runs.Run", on_delete=models.PROTECT, related_name="replay_jobs")
    mode = models.CharField(max_length=7, choices=ReplayMode.choices,
                            default=ReplayMode.SANDBOX)
    until_step = models.PositiveIntegerField(
        null=True, blank=True, help_text="The last plan step (its index) replayed; empty: all.")
    policy_version = models.ForeignKey(
        "policies.PolicyVersion", null=True, blank=True, on_delete=models.PROTECT,
        related_name="+", help_text="Pinned version; empty: whatever is published.")
    status = models.CharField(max_length=16, choices=ReplayStatus.choices,
                              default=ReplayStatus.QUEUED)
    steps_total = models.PositiveIntegerField(default=0)
    steps_done = models.PositiveIntegerField(default=0)
    divergent_steps = models.PositiveIntegerField(default=0)
    failure_reason = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                     on_delete=models.PROTECT, related_name="+")
    requested_by_label = models.CharField(max_length=200, blank=True)
    approval = models.ForeignKey(
        "approvals.ApprovalRequest", null=True, blank=True, on_delete=models.PROTECT,
        related_name="+", help_text="The HITL request the replay waits for or went ahead on.")
    task_id = models.CharField(max_length=64, blank=True,
                               help_text="The Celery message that may work on it now.")
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid working on it.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Watchdog (core/watchdog.py): when a worker last showed this job moving, and how
    # often the watchdog found it stalled and queued it again.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    stalls = models.PositiveSmallIntegerField(default=0)


    class Meta:
        db_table = "runs_replay"  # as when it lived in runs/ (operations 0001)
        ordering = ["-id"]
        indexes = [models.Index(fields=["tenant", "-id"], name="replay_tenant_id"),
                   models.Index(fields=["status", "deadline_at"], name="replay_status_deadline")]

    def __str__(self) -> str:
        return f"replay {self.pk} of {self.run_id} ({self.mode}, {self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status not in ACTIVE_REPLAY_STATUSES

    @property
    def percent(self) -> int:
        if not self.steps_total:
            return 100 if self.is_finished else 0
        return int(100 * self.steps_done / self.steps_total)


class StepMode(models.TextChoices):
    LIVE = "live", "live call"
    DRY_RUN = "dry_run", "dry run"
    STUB = "stub", "recorded output (stub)"
    NOT_CALLED = "not_called", "not called"


class StepStatus(models.TextChoices):
    ATTEMPTING = "attempting", "attempting (sent, no answer recorded yet)"
    WAITING_APPROVAL = "waiting_approval", "waiting for approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DENIED = "denied"


DONE_STEP_STATUSES = (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.DENIED)


class FollowUp(models.TextChoices):
    """What is done about a flagged step: open when flagged, then decided by a person."""

    OPEN = "open"
    QUEUED_FOR_FUZZING = "queued_for_fuzzing", "queued for fuzz testing"
    EXPECTED = "expected", "expected (not an issue)"
    FIXED = "fixed"


class ReplayStep(TenantOwned):
    replay = models.ForeignKey(Replay, on_delete=models.CASCADE, related_name="steps")
    seq = models.PositiveIntegerField(help_text="Position in the replay (1, 2, ...).")
    call_id = models.CharField(max_length=200)
    step_index = models.PositiveIntegerField(null=True, blank=True,
                                             help_text="The plan step of the recorded call.")
    tool = models.ForeignKey("runs.Tool", on_delete=models.PROTECT, related_name="+")
    decision = models.ForeignKey("policies.Decision", null=True, blank=True,
                                 on_delete=models.PROTECT, related_name="+")
    mode_used = models.CharField(max_length=10, choices=StepMode.choices)
    idempotency_key = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    output = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=StepStatus.choices)
    error = models.TextField(blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    divergence = models.JSONField(null=True, blank=True,
                                  help_text="How the output differs from the recorded one.")
    flagged = models.BooleanField(default=False, help_text="Flagged for follow-up.")
    follow_up = models.CharField(max_length=20, choices=FollowUp.choices, blank=True, default="",
                                 help_text="A flagged step's follow-up; empty: not flagged.")
    follow_up_note = models.TextField(blank=True, default="")
    follow_up_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                     on_delete=models.PROTECT, related_name="+")
    follow_up_by_label = models.CharField(max_length=200, blank=True, default="")
    follow_up_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)


    class Meta:
        db_table = "runs_replaystep"
        ordering = ["replay", "seq"]
        constraints = [models.UniqueConstraint(fields=["replay", "seq"],
                                               name="replay_step_seq_unique")]
        indexes = [models.Index(fields=["tenant", "follow_up", "-id"],
                                name="replay_step_follow_up",
                                condition=models.Q(flagged=True))]

    def __str__(self) -> str:
        return f"{self.seq}. {self.call_id} ({self.status})"
