"""Human-in-the-loop approval requests and the votes on them."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from core.models import TenantOwned


class Kind(models.TextChoices):
    TOOL_CALL = "tool_call", "tool call"
    LEAVE_SANDBOX = "leave_sandbox", "leave sandbox"
    LIVE_REPLAY = "live_replay", "live replay"
    EXCEPTION = "exception", "governed exception"


class Status(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


class ApprovalRequest(TenantOwned):
    """A request for a human decision, bound to the exact action it is about.

    ``action_hash`` commits to everything the approval is bound to: the tenant, run, call,
    agent, who asked (person, API key, or replay), the tool, its canonical arguments and the
    policy version in force (name, number, checksum). An approval clears that one call, once:
    the decision that uses it claims it (``consumed_by``), and no other decision can.
    """

    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="approval_requests")
    kind = models.CharField(max_length=15, choices=Kind.choices, default=Kind.TOOL_CALL)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    run_id = models.CharField(max_length=200, blank=True)
    call_id = models.CharField(max_length=200, blank=True)
    agent_id = models.CharField(max_length=200, blank=True)
    tool = models.CharField(max_length=200)
    action_class = models.CharField(max_length=8)
    arguments = models.JSONField(default=dict)
    action_hash = models.CharField(max_length=64)
    policy_version = models.ForeignKey("policies.PolicyVersion", null=True, blank=True,
                                       on_delete=models.PROTECT, related_name="+")
    matched_rules = models.JSONField(default=list)
    requested_by = models.CharField(max_length=200, help_text="The agent or person asking.")
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                  on_delete=models.PROTECT, related_name="+")
    requester_key = models.ForeignKey("ledger_portal.ApiKey", null=True, blank=True,
                                      on_delete=models.PROTECT, related_name="+",
                                      help_text="The API key that asked, if a key did.")
    policy_checksum = models.CharField(max_length=64, blank=True,
                                       help_text="The checksum of the policy version in force "
                                       "when asked.")
    consumed_at = models.DateTimeField(null=True, blank=True)
    consumed_by = models.OneToOneField(
        "policies.Decision", null=True, blank=True, on_delete=models.PROTECT,
        related_name="consumed_approval",
        help_text="The one decision this approval cleared.")
    approvals_needed = models.PositiveSmallIntegerField(default=1)
    due_at = models.DateTimeField()
    escalated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)


    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["tenant", "status", "created_at"],
                                name="approval_queue")]

    def __str__(self) -> str:
        return f"{self.kind} {self.tool} ({self.status})"


class Vote(models.Model):
    """One approver's decision; an approver votes once per request."""

    request = models.ForeignKey(ApprovalRequest, on_delete=models.PROTECT, related_name="votes")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                 related_name="+")
    approve = models.BooleanField()
    justification = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [models.UniqueConstraint(fields=["request", "approver"],
                                               name="one_vote_per_approver")]

    def __str__(self) -> str:
        return f"{self.approver_id}: {'approve' if self.approve else 'reject'}"
