"""Audit exports: the job row an auditor watches, its parts, who it is shared with and who
downloaded it."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from core.models import TenantOwned


class ExportStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"


class RedactionLevel(models.TextChoices):
    STRICT = "strict"
    STANDARD = "standard"
    NONE = "none"


class ExportFormat(models.TextChoices):
    JSONL = "jsonl", "JSON Lines"
    JSON = "json", "JSON array (one record a line)"


class AuditExport(TenantOwned):
    """A tenant- and time-bounded, redacted, signed export of the ledger and its governance
    records. Produced by Celery tasks in parts; published as one bundle (a tar)."""

    window_from = models.DateTimeField()
    window_to = models.DateTimeField()
    redaction_level = models.CharField(max_length=8, choices=RedactionLevel.choices,
                                       default=RedactionLevel.STRICT)
    format = models.CharField(max_length=5, choices=ExportFormat.choices,
                              default=ExportFormat.JSONL)
    justification = models.TextField(blank=True, help_text="Why (required for unredacted).")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                     on_delete=models.PROTECT, related_name="+")
    requested_by_label = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=8, choices=ExportStatus.choices,
                              default=ExportStatus.QUEUED)
    # Redacted exports show keyed commitments where the ledger keeps hashes; every part of one
    # export commits under the key current when it was requested, whatever rotates meanwhile.
    commitment_key = models.ForeignKey("runs.CommitmentKey", null=True, blank=True,
                                       on_delete=models.PROTECT, related_name="+")
    # The highest primary key of each section when the export was requested: every part reads
    # the same rows however long the queue, and rows recorded later are left out.
    watermarks = models.JSONField(default=dict, blank=True)
    rows_total = models.PositiveBigIntegerField(default=0, help_text="Estimated when planned.")
    rows_done = models.PositiveBigIntegerField(default=0)
    counts = models.JSONField(default=dict, blank=True, help_text="Records by type.")
    joining = models.BooleanField(default=False, help_text="Every part is written; the "
                                  "join (manifest, signature, bundle) is queued or running.")
    join_attempts = models.PositiveSmallIntegerField(default=0)
    file = models.CharField(max_length=500, blank=True, help_text="Name in export storage.")
    size = models.PositiveBigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True, help_text="Of the bundle.")
    manifest = models.JSONField(null=True, blank=True)
    signature = models.TextField(blank=True)
    signed_at = models.DateTimeField(null=True, blank=True)
    previous = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="+", help_text="The tenant's export signed "
                                 "before this one (its signature is in this manifest).")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Watchdog (core/watchdog.py): when a worker last showed this job moving, and how
    # often the watchdog found it stalled and queued it again.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    stalls = models.PositiveSmallIntegerField(default=0)
    expires_at = models.DateTimeField(null=True, blank=True)
    under_review = models.BooleanField(
        default=False, help_text="Compliance is reviewing it: the runs of its window are held "
        "from retention and the bundle does not expire.")


    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["tenant", "-id"], name="export_tenant_id"),
                   models.Index(fields=["status", "expires_at"], name="export_expiry")]

    def __str__(self) -> str:
        return f"export {self.pk} of {self.window_from:%Y-%m-%d}..{self.window_to:%Y-%m-%d}"

    @property
    def percent(self) -> int:
        if self.status == ExportStatus.DONE:
            return 100
        return min(99, int(100 * self.rows_done / self.rows_total)) if self.rows_total else 0

    @property
    def download_name(self) -> str:
        return f"ledger-export-{self.pk}.tar"


class PartStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


class ExportPart(models.Model):
    """One chunk of an export: the rows of one section in a primary-key range, written by one
    task into its own part file; the join concatenates the parts in ``index`` order."""

    export = models.ForeignKey(AuditExport, on_delete=models.CASCADE, related_name="parts")
    index = models.PositiveIntegerField()
    section = models.CharField(max_length=40)
    after_pk = models.BigIntegerField(help_text="Rows with a primary key above this...")
    upto_pk = models.BigIntegerField(help_text="...and up to this one.")
    estimated_rows = models.PositiveBigIntegerField(default=0)
    status = models.CharField(max_length=8, choices=PartStatus.choices,
                              default=PartStatus.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_by = models.CharField(max_length=200, blank=True, help_text="host:pid")
    rows_done = models.PositiveBigIntegerField(default=0)
    file = models.CharField(max_length=500, blank=True)
    sha256 = models.CharField(max_length=64, blank=True,
                              help_text="Of the part file, computed by the worker as it wrote "
                              "it; the join refuses a part that no longer matches.")

    class Meta:
        ordering = ["export", "index"]
        constraints = [models.UniqueConstraint(fields=["export", "index"],
                                               name="export_part_index_unique")]

    def __str__(self) -> str:
        return f"part {self.index} ({self.section})"


class ExportShare(TenantOwned):
    """An export shared with one person who lacks the export role (an external auditor)."""

    export = models.ForeignKey(AuditExport, on_delete=models.CASCADE, related_name="shares")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="+")
    shared_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                  on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)


    class Meta:
        constraints = [models.UniqueConstraint(fields=["export", "user"],
                                               name="one_share_per_user")]

    def __str__(self) -> str:
        return f"{self.export} shared with {self.user}"


class ExportDownload(TenantOwned):
    """One download of an export: who, when, from where."""

    export = models.ForeignKey(AuditExport, on_delete=models.PROTECT, related_name="downloads")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                             on_delete=models.PROTECT, related_name="+")
    principal = models.CharField(max_length=200, help_text="The user or API key.")
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    at = models.DateTimeField(auto_now_add=True)


    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.principal} downloaded export {self.export_id} at {self.at:%Y-%m-%d %H:%M}"
