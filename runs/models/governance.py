"""Mutable governance objects of the ledger (with full history)."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from simple_history.models import HistoricalRecords

from core.history import history_user
from core.models import TenantOwned


class ActionClass(models.TextChoices):
    READ = "read", "read"
    WRITE = "write", "write"
    DELETE = "delete", "delete"
    EXFIL = "exfil", "exfil"


class Agent(TenantOwned):
    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="agents")
    agent_id = models.CharField(max_length=200)
    name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords(excluded_fields=["updated_at"], get_user=history_user)

    class Meta:
        ordering = ["tenant", "agent_id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "agent_id"],
                                    name="agent_id_unique_per_tenant")
        ]

    def __str__(self) -> str:
        return self.name or self.agent_id


class ConnectorKind(models.TextChoices):
    NONE = "none", "none (recorded outputs only)"
    HTTP = "http", "HTTP (JSON in and out)"
    MCP = "mcp", "MCP (tools/call over streamable HTTP, or stdio)"


class DryRunVia(models.TextChoices):
    NONE = "none", "no dry-run"
    HEADER = "header", "a request header"
    FLAG = "flag", "a flag in the JSON arguments"


def http_url(value: str) -> None:
    """An http(s) URL with a host; internal service names (http://billing:8080/) are fine."""
    from urllib.parse import urlsplit

    from django.core.exceptions import ValidationError

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"{value!r} is not an http(s) URL")


SECRET_REFERENCE = r"^[a-z][a-z0-9_]*:[A-Za-z0-9_.\-/]+$"
#: The most dry runs of one tool a replay has in flight at once (``Tool.dry_run_concurrency``).
MAX_DRY_RUN_CONCURRENCY = 16


def allowed_stdio_server(value: str) -> None:
    """A server name from the platform operator's allowlist; anything else (a command, a
    path, argv) is refused, naming what is allowed."""
    from django.core.exceptions import ValidationError

    from core.mcp_stdio import SETTING, allowed_names_text, allowed_stdio_commands

    if value and value not in allowed_stdio_commands():
        raise ValidationError(
            f"{value[:80]!r} is not a stdio MCP server the platform allows; pick one of its "
            f"allowlist ({SETTING}): {allowed_names_text()}. Commands are set by the "
            "platform operator, never on a tool.")


class Tool(TenantOwned):
    """A tool agents call. Registered on first sight by ingestion; edited by governance.

    The connector fields say how the portal itself reaches the tool (replay, rollback).
    Credentials are never stored here: ``secret_ref`` names a secret (``env:BILLING_TOKEN``)
    that the secrets backend resolves at call time.
    """

    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="tools")
    name = models.CharField(max_length=200)
    action_class = models.CharField(max_length=8, choices=ActionClass.choices,
                                    default=ActionClass.READ)
    description = models.TextField(blank=True)
    supports_rollback = models.BooleanField(
        default=False, verbose_name="supports compensate",
        help_text="The tool has a compensating action (rollback) at its compensate endpoint.")
    connector = models.CharField(max_length=4, choices=ConnectorKind.choices,
                                 default=ConnectorKind.NONE)
    endpoint = models.CharField(max_length=500, blank=True, validators=[http_url],
                               help_text="HTTP: the URL to POST arguments to. MCP: the server's "
                               "streamable-HTTP URL, e.g. http://tools:8000/mcp")
    stdio_server = models.CharField(
        max_length=64, blank=True, validators=[allowed_stdio_server],
        verbose_name="stdio MCP server",
        help_text="MCP over stdio: which server of the platform's allowlist "
        "(LEDGER_MCP_STDIO_COMMANDS) the portal starts for this tool, once per replay. Empty: "
        "the MCP server is reached at the endpoint URL.")
    remote_name = models.CharField(max_length=200, blank=True,
                                   help_text="MCP: the tool's name on the server (empty: the "
                                   "same name).")
    timeout_ms = models.PositiveIntegerField(default=10_000)
    dry_run_via = models.CharField(max_length=6, choices=DryRunVia.choices,
                                   default=DryRunVia.NONE,
                                   help_text="How the tool is asked for a dry run, if it has one.")
    dry_run_name = models.CharField(max_length=100, blank=True,
                                    help_text="The header (e.g. X-Dry-Run) or JSON flag (e.g. "
                                    "dry_run) the tool declares.")
    dry_run_concurrency = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(MAX_DRY_RUN_CONCURRENCY)],
        verbose_name="concurrent dry runs",
        help_text="How many of a sandbox replay's dry runs the tool may get at once (1 to "
        f"{MAX_DRY_RUN_CONCURRENCY}). Raise it only if the tool's dry runs are independent of "
        "each other (no shared state, no rate limit). 1: one at a time. Live calls are always "
        "sent one at a time.")
    compensate_endpoint = models.CharField(
        max_length=500, blank=True,
        help_text="HTTP: the URL of the compensating action. MCP: the compensating tool's name.")
    supports_idempotency = models.BooleanField(
        default=False, help_text="The tool honours an Idempotency-Key: a repeated key is "
        "answered without a second side effect.")
    volatile_fields = models.JSONField(
        default=list, blank=True,
        help_text="Output fields ignored when comparing outputs: keys (created_at) or JSON "
        "paths ($.receipt.id, $.items[*].ts).")
    secret_ref = models.CharField(
        max_length=200, blank=True, validators=[RegexValidator(SECRET_REFERENCE)],
        verbose_name="secret reference",
        help_text="Where the credential lives, e.g. env:BILLING_API_TOKEN; sent as a bearer "
        "token. Never the credential itself.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords(excluded_fields=["updated_at"], get_user=history_user)

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="tool_name_unique_per_tenant")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def has_dry_run(self) -> bool:
        return self.dry_run_via != DryRunVia.NONE and bool(self.dry_run_name)

    @property
    def can_compensate(self) -> bool:
        return self.supports_rollback and bool(self.compensate_endpoint)

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        errors: dict[str, str] = {}
        if self.stdio_server and self.connector != ConnectorKind.MCP:
            errors["stdio_server"] = "a stdio server is reached with the MCP connector"
        elif self.stdio_server and self.endpoint:
            errors["endpoint"] = "an MCP tool has an endpoint URL or a stdio server, not both"
        elif self.connector != ConnectorKind.NONE and not (self.endpoint or self.stdio_server):
            errors["endpoint"] = f"a {self.connector} connector needs an endpoint" + (
                " (or a stdio server)" if self.connector == ConnectorKind.MCP else "")
        if self.stdio_server and self.dry_run_via == DryRunVia.HEADER:
            errors["dry_run_via"] = "a stdio server has no headers: ask for dry runs with a flag"
        if self.dry_run_via != DryRunVia.NONE and not self.dry_run_name:
            errors["dry_run_name"] = "name the header or flag the tool reads"
        if self.dry_run_concurrency and self.dry_run_concurrency > 1:
            if not self.has_dry_run:
                errors["dry_run_concurrency"] = "only dry runs are sent concurrently, and this " \
                    "tool declares none: leave it at 1"
            elif self.stdio_server:
                errors["dry_run_concurrency"] = "a stdio server answers one call at a time: " \
                    "leave it at 1"
        if self.supports_rollback and self.connector != ConnectorKind.NONE and (
                not self.compensate_endpoint):
            errors["compensate_endpoint"] = "a tool that compensates needs its endpoint"
        if not isinstance(self.volatile_fields, list) or not all(
                isinstance(f, str) and f for f in self.volatile_fields):
            errors["volatile_fields"] = 'a list of keys or JSON paths, e.g. ["created_at", ' \
                '"$.receipt.id"]'
        if errors:
            raise ValidationError(errors)


# Where the portal sends a tool's calls and its credential: changed only by a second person.
GOVERNED_TOOL_FIELDS = ("connector", "endpoint", "stdio_server", "compensate_endpoint",
                        "secret_ref")


class ToolChangeStatus(models.TextChoices):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    SUPERSEDED = "superseded", "superseded (a newer proposal replaced it)"


class ToolChange(TenantOwned):
    """A proposed change of a tool's connection (``GOVERNED_TOOL_FIELDS``). The tool keeps its
    confirmed values until another manage_policies holder confirms (operations.tool_changes)."""

    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="tool_changes")
    tool = models.ForeignKey(Tool, on_delete=models.CASCADE, related_name="changes")
    proposed = models.JSONField(help_text="Governed field -> proposed value.")
    previous = models.JSONField(help_text="Governed field -> the confirmed value it replaces.")
    status = models.CharField(max_length=10, choices=ToolChangeStatus.choices,
                              default=ToolChangeStatus.PENDING)
    proposed_by = models.ForeignKey("auth.User", null=True, on_delete=models.PROTECT,
                                    related_name="+")
    proposed_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)


    class Meta:
        ordering = ["-proposed_at", "-id"]
        constraints = [models.UniqueConstraint(
            fields=["tool"], condition=models.Q(status="pending"),
            name="one_pending_change_per_tool")]

    def __str__(self) -> str:
        return f"{self.tool} connection change {self.pk} ({self.status})"


class RedactionRule(TenantOwned):
    """A tenant's own classification of fields, on top of what agents declare.

    ``pattern`` is a field-name glob matched against the last key of a path (``*password*``,
    ``ssn``) or a JSON path starting with ``$.`` (``$.input.customer.email``,
    ``$.messages[*].content``).
    """

    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="redaction_rules")
    pattern = models.CharField(max_length=300)
    label = models.CharField(max_length=12, choices=[
        (label, label) for label in ("public", "internal", "confidential", "restricted",
                                     "secret")])
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords(get_user=history_user)

    class Meta:
        ordering = ["tenant", "pattern"]
        constraints = [models.UniqueConstraint(fields=["tenant", "pattern"],
                                               name="redaction_rule_unique_per_tenant")]

    def __str__(self) -> str:
        return f"{self.pattern} -> {self.label}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from ..redaction import TenantRule

        try:
            TenantRule(self.pattern, self.label)
        except ValueError as exc:  # a bad rule is a form error, never a 500 on every read
            raise ValidationError({"pattern": str(exc)}) from exc
