"""Human-in-the-loop approval requests and the votes on them."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from simple_history.models import HistoricalRecords

from core.history import history_user
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


class Channel(models.TextChoices):
    EMAIL = "email", "e-mail"
    WEBHOOK = "webhook", "signed webhook (JSON, HMAC-SHA256)"
    SLACK = "slack", "Slack-compatible incoming webhook"


class NotifyEvent(models.TextChoices):
    CREATED = "created", "a request is created"
    ESCALATED = "escalated", "a request waits past the tenant's escalation time"
    EXPIRED = "expired", "a request expires undecided"


def every_event() -> list[str]:
    return list(NotifyEvent.values)


class ApprovalRoute(TenantOwned):
    """Where a tenant's approvers are told about requests: a channel, for some action classes
    (all when empty) and events. A tenant with no enabled route is served by the portal's
    default notifier (``LEDGER_NOTIFIER``: e-mail to the tenant's approvers)."""

    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="approval_routes")
    name = models.CharField(max_length=100, help_text="What it is, e.g. payments on-call.")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    action_classes = models.JSONField(
        default=list, blank=True,
        help_text="Action classes routed here: any of read, write, delete, exfil (empty: all).")
    events = models.JSONField(default=every_event,
                              help_text="Any of created, escalated, expired.")
    target = models.CharField(
        max_length=500, blank=True,
        help_text="E-mail: addresses, comma-separated (empty: the tenant's approvers). "
        "Webhook: the https URL the JSON is posted to. Slack: leave empty.")
    secret_ref = models.CharField(
        max_length=200, blank=True,
        help_text="A secret reference (env:NAME), resolved in this tenant's namespace. "
        "Webhook: the HMAC key that signs each delivery. Slack: the incoming-webhook URL "
        "(it is a credential, so it is never stored here).")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords(excluded_fields=["updated_at"], get_user=history_user)

    class Meta:
        ordering = ["tenant", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_channel_display()})"

    def clean(self) -> None:
        problems: dict[str, str] = {}
        unknown = set(self.action_classes or []) - {"read", "write", "delete", "exfil"}
        if not isinstance(self.action_classes, list) or unknown:
            problems["action_classes"] = "a list of read, write, delete and exfil"
        if not isinstance(self.events, list) or not self.events or \
                set(self.events) - set(NotifyEvent.values):
            problems["events"] = "a list of created, escalated and expired"
        if self.secret_ref and not self.secret_ref.startswith("env:"):
            problems["secret_ref"] = "a secret reference: env:NAME"
        if self.channel == Channel.WEBHOOK:
            url = urlsplit(self.target)
            # plain http only to a host the operator listed (an internal relay, a test server)
            if not url.hostname or url.scheme not in ("https", "http") or (
                    url.scheme == "http" and url.hostname not in settings.LEDGER_EGRESS_ALLOW):
                problems["target"] = ("the https URL deliveries are posted to (http only to a "
                                      "host in LEDGER_EGRESS_ALLOW)")
            if not self.secret_ref:
                problems["secret_ref"] = "a webhook is signed: name its key (env:NAME)"
        if self.channel == Channel.SLACK:
            if self.target:
                problems["target"] = ("a Slack webhook URL is a credential: give it as "
                                      "secret_ref (env:NAME), not here")
            if not self.secret_ref:
                problems["secret_ref"] = "the incoming-webhook URL, as env:NAME"
        if self.channel == Channel.EMAIL and "://" in self.target:
            problems["target"] = "e-mail addresses, comma-separated"
        if problems:
            raise ValidationError(problems)

    def covers(self, event: str, action_class: str) -> bool:
        return self.enabled and event in (self.events or []) and (
            not self.action_classes or action_class in self.action_classes)


class NotificationDelivery(TenantOwned):
    """One attempt to tell approvers about a request: what was sent where, and whether it
    arrived (HTTP status, recipients, or why not). Never the arguments."""

    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="+")
    request = models.ForeignKey(ApprovalRequest, on_delete=models.PROTECT,
                                related_name="notifications")
    route = models.ForeignKey(ApprovalRoute, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="deliveries",
                              help_text="Empty: the portal's default notifier.")
    channel = models.CharField(max_length=10)
    event = models.CharField(max_length=10, choices=NotifyEvent.choices)
    delivered = models.BooleanField()
    detail = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "notification deliveries"
        indexes = [models.Index(fields=["request", "created_at"], name="delivery_by_request")]

    def __str__(self) -> str:
        return f"{self.event} via {self.channel}: {'delivered' if self.delivered else 'failed'}"
