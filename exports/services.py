"""Audit exports: request, produce (plan -> parts -> join), share, download, expire.

The page, the admin, the API, the CLI and the Celery tasks all call these. Producing is safe to
run twice and to die halfway: every part and the join claim their row with a conditional update
that counts attempts, write to a local temporary file, publish it whole, and record the result
only if their attempt is still the current one; a reader sees a bundle only once its row says
``done``.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from concurrent.futures import Future, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Exists, F, Max, OuterRef, QuerySet, Sum
from django.db.models.functions import Greatest
from django.utils import timezone

from core import signing
from core.actors import Actor, label_of, person_of
from core.canonical import canonical_timestamp
from core.db_routing import stale_ok_job
from core.jobs import enqueue_on_commit
from core.metrics import EXPORT_BYTES
from core.models import Tenant
from core.processes import choose_processes, django_pool, finished_in_order
from core.roles import Role
from core.tenancy import has_role
from core.watchdog import beat
from runs.annotations import annotate
from runs.commitments import Committer, commitment_key
from runs.models import AnnotationKind, RedactionRule
from runs.redaction import Redactor, TenantRule
from runs.services import LEVEL_ROLES, allowed_levels

from . import verify, writer
from .access import ExportNotAllowed, share_export, visible_exports
from .models import (
    AuditExport,
    ExportDownload,
    ExportFormat,
    ExportPart,
    ExportStatus,
    PartStatus,
    RedactionLevel,
)
from .sections import SECTION_BY_NAME, SECTIONS
from .storage import LocalFile, export_storage

log = logging.getLogger(__name__)


def _principal(*, by: Actor) -> tuple[Any, str]:
    return person_of(by), label_of(by)


# -- request ----------------------------------------------------------------------------------

def check_request(tenant: Tenant, window_from: datetime, window_to: datetime,
                  *, by: Actor, redaction_level: str, fmt: str, justification: str) -> str:
    """Refuse a request ``by`` may not make (ExportNotAllowed) or that makes no sense
    (ValidationError); return the justification, trimmed."""
    if not has_role(by, Role.EXPORT, tenant):
        raise ExportNotAllowed(f"exporting {tenant.slug} needs the export role")
    if redaction_level not in RedactionLevel.values:
        raise ValidationError(f"unknown redaction level {redaction_level!r}")
    if redaction_level not in allowed_levels(by, tenant.pk):
        raise ExportNotAllowed(f"redaction level {redaction_level!r} needs the "
                               f"{LEVEL_ROLES[redaction_level]} role")
    if redaction_level == RedactionLevel.NONE and not justification.strip():
        raise ValidationError("an unredacted export needs a justification")
    if fmt not in ExportFormat.values:
        raise ValidationError(f"unknown format {fmt!r}; use jsonl or json")
    if window_from.tzinfo is None or window_to.tzinfo is None:
        raise ValidationError("the window's bounds need a time zone")
    if window_from >= window_to:
        raise ValidationError("the window must end after it starts")
    return justification.strip()


def request_export(tenant: Tenant, window_from: datetime, window_to: datetime, *,
                   by: Actor, redaction_level: str = RedactionLevel.STRICT,
                   fmt: str = ExportFormat.JSONL, justification: str = "",
                   enqueue: bool = True) -> AuditExport:
    """Queue an export of ``tenant``'s records between ``window_from`` (inclusive) and
    ``window_to`` (exclusive). Needs the export role; ``standard`` needs view_confidential,
    ``none`` view_unredacted and a justification, which is annotated in the ledger."""
    justification = check_request(tenant, window_from, window_to, by=by,
                                  redaction_level=redaction_level, fmt=fmt,
                                  justification=justification)
    user, label = _principal(by=by)
    # The tenant's highest key of each table now: rows recorded after the request are not
    # exported (the export row keeps them, so they are the tenant's, not the installation's).
    watermarks = {s.name: s.model._default_manager.filter(tenant=tenant).aggregate(
        top=Max("pk"))["top"] or 0 for s in SECTIONS}
    with transaction.atomic():
        export = AuditExport.objects.create(
            tenant=tenant, window_from=window_from, window_to=window_to,
            redaction_level=redaction_level, format=fmt, justification=justification,
            requested_by=user, requested_by_label=label, watermarks=watermarks,
            commitment_key=(None if redaction_level == RedactionLevel.NONE
                            else commitment_key(tenant)))
        if redaction_level != RedactionLevel.STRICT:
            annotate(tenant, AnnotationKind.OVERRIDE,
                     f"Export {export.pk} requested at redaction level {redaction_level}: "
                     f"{justification or '(no justification)'}", by=by,
                     data={"event": "export_requested", "export_id": export.pk,
                           "redaction_level": redaction_level,
                           "window": [canonical_timestamp(window_from),
                                      canonical_timestamp(window_to)]})
        if enqueue:
            from .tasks import plan_export

            enqueue_on_commit(plan_export, (export.pk,))
    return export


# -- produce ----------------------------------------------------------------------------------

def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _fail(export_id: int, reason: str) -> None:
    AuditExport.objects.filter(pk=export_id).exclude(status=ExportStatus.DONE).update(
        status=ExportStatus.FAILED, error=reason[:2000], finished_at=timezone.now())
    _discard_parts(export_id)


def plan(export_id: int) -> list[int]:
    """Claim a queued export and cut it into parts; return the part ids to produce."""
    part_rows = settings.LEDGER_EXPORT_PART_ROWS
    with transaction.atomic():
        export = (AuditExport.objects.select_for_update()
                  .filter(pk=export_id, status__in=[ExportStatus.QUEUED, ExportStatus.RUNNING])
                  .first())
        if export is None:
            return []
        if export.status == ExportStatus.RUNNING:  # planned before; hand out what is left
            return list(export.parts.exclude(status=PartStatus.DONE).values_list("pk", flat=True))
        parts: list[ExportPart] = []
        for section in SECTIONS:
            upto = export.watermarks.get(section.name, 0)
            for after, until, rows in _ranges(section.bounded(export, 0, upto), upto, part_rows):
                parts.append(ExportPart(export=export, index=len(parts), section=section.name,
                                        after_pk=after, upto_pk=until, estimated_rows=rows))
        ExportPart.objects.bulk_create(parts)
        beat(AuditExport, export.pk, status=ExportStatus.RUNNING,
             rows_total=sum(p.estimated_rows for p in parts))
        if not parts:
            AuditExport.objects.filter(pk=export.pk).update(joining=True)
    return list(ExportPart.objects.filter(export_id=export_id).order_by("index")
                .values_list("pk", flat=True))


def _ranges(qs: QuerySet[Any], upto: int, part_rows: int) -> list[tuple[int, int, int]]:
    """Primary-key ranges of about ``part_rows`` rows each, found by keyset steps (each step
    reads ``part_rows`` index entries; nothing is loaded)."""
    ranges, after = [], 0
    while True:
        boundary = (qs.filter(pk__gt=after).order_by("pk")
                    .values_list("pk", flat=True)[part_rows - 1:part_rows].first())
        if boundary is None:
            rest = qs.filter(pk__gt=after).order_by()[:part_rows].count()
            if rest:
                ranges.append((after, upto, rest))
            return ranges
        ranges.append((after, boundary, part_rows))
        after = boundary


def tenant_redactor(tenant_id: int, level: str) -> Redactor:
    rules = [TenantRule(pattern, label) for pattern, label in RedactionRule.objects.filter(
        tenant_id=tenant_id).values_list("pattern", "label")]
    return Redactor(level, rules)


def export_committer(export: AuditExport) -> Committer | None:
    """What a redacted export commits under (None: unredacted, the hashes are shown)."""
    if export.redaction_level == RedactionLevel.NONE:
        return None
    # An export requested before keys existed commits under the tenant's current key.
    return Committer(export.commitment_key or commitment_key(export.tenant_id))


def _verification(export: AuditExport, committer: Committer | None) -> dict[str, Any]:
    """What the bundle lets a reader check offline, said in the manifest."""
    offline = ("the signature over this manifest, both files' checksums, and the record chain "
               "over every line as exported")
    if committer is None:
        return {"offline": offline + "; each ledger record also carries the ledger's own "
                "content_hash and chain_hash, recomputable from its content"}
    return {"offline": offline + " (redacted): no record carries a hash of what redaction "
            "hid", "commitments": {
                "algorithm": "HMAC-SHA256", "key": committer.key_id,
                "record": 'HMAC(k, "record:" + content_hash)',
                "chain": 'HMAC(k, "chain:" + chain_hash)', "head": 'HMAC(k, "chain:" + head)',
                "action": 'HMAC(k, "action:" + action_hash)',
                "fields": 'HMAC(k, "field:<name>:" + canonical JSON of the unredacted value)',
                "key_holders": "the portal; a view_unredacted reader who is given the key "
                               "(ledger commitment-key), which the governance log records"}}


def _temp_dir(export_id: int) -> Path:
    path = Path(settings.LEDGER_EXPORT_TMP_DIR) / str(export_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def produce_part(part_id: int) -> bool:
    """Claim and write one part; when it is the last, mark the export for joining. Returns
    whether the join may start now."""
    claimed = ExportPart.objects.filter(
        pk=part_id, status__in=[PartStatus.QUEUED, PartStatus.RUNNING],
        export__status=ExportStatus.RUNNING).update(
        status=PartStatus.RUNNING, attempts=F("attempts") + 1, claimed_by=_worker_name(),
        rows_done=0)
    if not claimed:
        return False
    part = ExportPart.objects.select_related("export").get(pk=part_id)
    export = part.export
    beat(AuditExport, export.pk)
    # Each watchdog pass may hand a part out once more on top of the deliveries after crashes.
    if part.attempts > settings.LEDGER_EXPORT_MAX_ATTEMPTS + export.stalls:
        _fail(export.pk, f"part {part.index} ({part.section}) was started "
              f"{part.attempts - 1} times and never finished (its worker died)")
        return False
    directory = _temp_dir(export.pk)
    for stale in directory.glob(f"part-{part.index}-*"):  # what a killed attempt left
        stale.unlink(missing_ok=True)
    temp = directory / f"part-{part.index}-{part.attempts}"

    def progress(rows: int) -> None:
        with transaction.atomic():  # one commit (one WAL flush) for both rows
            ExportPart.objects.filter(pk=part.pk, attempts=part.attempts).update(rows_done=rows)
            _sum_progress(export.pk)

    def write(_alias: str) -> tuple[int, _Hashing]:
        redactor = tenant_redactor(export.tenant_id, export.redaction_level)
        with temp.open("wb", buffering=1 << 20) as raw:  # from the start on a second try
            out = _Hashing(raw)
            rows = writer.write_part(SECTION_BY_NAME[part.section], export, part.after_pk,
                                     part.upto_pk, redactor, out, progress,  # type: ignore[arg-type]
                                     settings.LEDGER_EXPORT_PROGRESS_ROWS,
                                     export_committer(export))
        return rows, out

    try:
        # the part's rows may come from the read replica once it holds everything committed
        # before now (the export's window was fixed before): the same rows as the primary's
        rows, out = stale_ok_job(write)
        name = f"parts/{export.pk}/{part.index}-{part.attempts}.part"
        with LocalFile(temp) as handle:  # moved into local storage, not copied
            name = export_storage().save(name, handle)
    except Exception as exc:
        if not _part_attempt_current(part):
            log.info("export %s part %s: attempt %s was superseded (%s)", export.pk,
                     part.index, part.attempts, type(exc).__name__)
            return False  # a newer attempt writes this part; its outcome counts
        _fail(export.pk, f"part {part.index} ({part.section}): {type(exc).__name__}: {exc}")
        raise
    finally:
        temp.unlink(missing_ok=True)
    done = ExportPart.objects.filter(pk=part.pk, attempts=part.attempts,
                                     status=PartStatus.RUNNING).update(
        status=PartStatus.DONE, file=name, rows_done=rows, sha256=out.hexdigest())
    if not done:  # another attempt took over: its file counts, not ours
        export_storage().delete(name)
        return False
    _sum_progress(export.pk)
    unfinished = ExportPart.objects.filter(export=OuterRef("pk")).exclude(status=PartStatus.DONE)
    # One conditional update: of the parts finishing together, exactly one starts the join.
    return bool(AuditExport.objects.filter(pk=export.pk, status=ExportStatus.RUNNING,
                                           joining=False)
                .exclude(Exists(unfinished)).update(joining=True))


def _part_attempt_current(part: ExportPart) -> bool:
    return ExportPart.objects.filter(pk=part.pk, attempts=part.attempts).exists()


def _sum_progress(export_id: int) -> None:
    done = ExportPart.objects.filter(export_id=export_id).aggregate(
        rows=Sum("rows_done"))["rows"] or 0
    # A part started again counts from zero: the export's progress waits for it to catch up
    # rather than going backwards.
    AuditExport.objects.filter(pk=export_id, status=ExportStatus.RUNNING).update(
        rows_done=Greatest(F("rows_done"), done), heartbeat_at=timezone.now())


def join(export_id: int, followed: Followed | None = None) -> AuditExport | None:
    """Claim a fully written export, join its parts, sign and publish the bundle.
    ``followed``: the data and index files already joined while the parts were written
    (``produce_now``), taken when they were joined from the very parts the export holds."""
    claimed = AuditExport.objects.filter(pk=export_id, status=ExportStatus.RUNNING,
                                         joining=True).update(
        join_attempts=F("join_attempts") + 1)
    if not claimed:
        return None
    export = AuditExport.objects.select_related("tenant").get(pk=export_id)
    beat(AuditExport, export.pk)
    attempt = export.join_attempts
    if attempt > settings.LEDGER_EXPORT_MAX_ATTEMPTS + export.stalls:
        _fail(export.pk, f"the join was started {attempt - 1} times and never finished "
              "(its worker died)")
        return None
    directory = _temp_dir(export.pk) / f"join-{attempt}"
    for stale in _temp_dir(export.pk).glob("join-*"):
        shutil.rmtree(stale, ignore_errors=True)
    directory.mkdir(parents=True)
    storage = export_storage()
    try:
        part_files = list(export.parts.order_by("index").values_list("index", "file", "sha256"))
        if followed is not None and followed.parts == part_files:
            log.info("export %s: the parts were joined as they were written", export.pk)
            joined = followed.moved_to(directory)
        else:
            joined = writer.join_parts((_checked(storage, export.pk, *part)
                                        for part in part_files), export.format, directory)
        manifest, signature = _sign(export, joined)
        bundle = directory / "bundle.tar"
        sha256, size = writer.build_bundle(directory, joined, writer.manifest_bytes(manifest),
                                           signature, bundle)
        name = f"{export.tenant.slug}/{export.download_name[:-4]}-{attempt}.tar"
        with LocalFile(bundle) as handle:
            name = storage.save(name, handle)
        EXPORT_BYTES.inc(size)
    except Exception as exc:
        if not AuditExport.objects.filter(pk=export.pk, join_attempts=attempt).exists():
            log.info("export %s: join attempt %s was superseded (%s)", export.pk, attempt,
                     type(exc).__name__)
            return None  # a newer join publishes it
        _fail(export.pk, f"join: {type(exc).__name__}: {exc}")
        raise
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    now = timezone.now()
    published = AuditExport.objects.filter(
        pk=export.pk, status=ExportStatus.RUNNING, join_attempts=attempt).update(
        status=ExportStatus.DONE, file=name, size=size, sha256=sha256, counts=joined.counts,
        rows_done=joined.record_count, rows_total=joined.record_count, finished_at=now,
        expires_at=now + timedelta(days=settings.LEDGER_EXPORT_TTL_DAYS))
    if not published:
        storage.delete(name)
        return None
    _discard_parts(export.pk)
    export.refresh_from_db()
    return export


@dataclass
class Followed:
    """The data and index files joined from ``parts`` (index, file, sha256) as each was
    written, in this process's temporary folder."""

    parts: list[tuple[int, str, str]]
    joined: writer.Joined
    directory: Path

    def moved_to(self, directory: Path) -> writer.Joined:
        for name in self.joined.files:
            os.replace(self.directory / name, directory / name)
        return self.joined


class _PartNotFollowed(Exception):
    """A part finished without this attempt's file (another attempt's, or the export failed):
    the join reads the parts again once they are all written."""


def follow_parts(export: AuditExport, part_ids: list[int], futures: list[Future[bool]]
                  ) -> Followed | None:
    """Join the parts into the data and index files while they are being written, each as
    soon as it and those before it are done: the join's pass over every record, which cannot
    be shared, runs beside the writers instead of after them. Raises what a part raises."""
    directory = _temp_dir(export.pk) / "follow"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    storage = export_storage()
    used: list[tuple[int, str, str]] = []

    def parts() -> Iterator[Iterator[bytes]]:
        for position in finished_in_order(futures):
            part: tuple[int, str, str] | None = ExportPart.objects.filter(
                pk=part_ids[position], status=PartStatus.DONE,
                export__status=ExportStatus.RUNNING).values_list("index", "file", "sha256").first()
            if part is None:
                raise _PartNotFollowed
            used.append(part)
            yield _checked(storage, export.pk, *part)

    try:
        joined = writer.join_parts(parts(), export.format, directory)
    except _PartNotFollowed:
        return None
    return Followed(used, joined, directory)


class ExportUnavailable(ValidationError):
    """The export cannot be downloaded now: not finished, failed or expired."""


class _Hashing:
    """A writer that also hashes what goes through it."""

    def __init__(self, out: Any) -> None:
        self._out, self._hash = out, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        return int(self._out.write(data))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class PartAltered(Exception):
    pass


def _checked(storage: Any, export_id: int, index: int, name: str, sha256: str) -> Any:
    """A part file, read line by line (closed when exhausted), checked against the checksum
    its worker recorded once the last line is read: a part altered in storage stops the
    join before anything is signed."""
    digest = hashlib.sha256()
    beat(AuditExport, export_id)  # the join moves part by part
    with storage.open(name, "rb") as handle:
        for line in handle:
            digest.update(line)
            yield line
    if digest.hexdigest() != sha256:
        raise PartAltered(f"part {index} was altered in storage after its worker wrote it "
                          f"(sha256 {digest.hexdigest()[:16]}…, written as {sha256[:16]}…)")


def _sign(export: AuditExport, joined: writer.Joined) -> tuple[dict[str, Any], str]:
    """The manifest and its signature. The tenant's exports form a chain: each manifest holds
    the signature of the one signed before it (one signer per tenant at a time); a join that
    runs again reuses what it signed."""
    with transaction.atomic():
        Tenant.objects.filter(pk=export.tenant_id).lock_rows()
        stored: Any = AuditExport.objects.filter(pk=export.pk).values_list(
            "manifest", "signature").get()
        if stored[1]:
            return stored[0], stored[1]
        previous: Any = (AuditExport.objects.filter(tenant_id=export.tenant_id)
                    .exclude(signature="").exclude(pk=export.pk).order_by("-signed_at", "-pk")
                    .values("pk", "signature").first())
        manifest = _manifest(export, joined, previous)
        signature = signing.sign(writer.manifest_bytes(manifest))
        AuditExport.objects.filter(pk=export.pk).update(
            manifest=manifest, signature=signature, signed_at=timezone.now(),
            previous_id=previous["pk"] if previous else None)
    return manifest, signature


def _action(committer: Committer | None, action_hash: str) -> dict[str, str]:
    if committer is None:
        return {"action_hash": action_hash}
    return {"action_commitment": committer.of_hash("action_hash", action_hash)}


def _manifest(export: AuditExport, joined: writer.Joined,
              previous: dict[str, Any] | None) -> dict[str, Any]:
    approvals = SECTION_BY_NAME["approval"].bounded(
        export, 0, export.watermarks.get("approval", 0)).order_by("pk")
    versions = SECTION_BY_NAME["policy_version"].bounded(
        export, 0, export.watermarks.get("policy_version", 0)).order_by("pk")
    public_key = signing.public_key_b64()
    committer = export_committer(export)
    return {
        "format": verify.FORMAT,
        "export_id": export.pk,
        "generated_at": canonical_timestamp(timezone.now()),
        "tenant": export.tenant.slug,
        "window": {"from": canonical_timestamp(export.window_from),
                   "to": canonical_timestamp(export.window_to)},
        "redaction_level": export.redaction_level,
        "data_format": export.format,
        "record_count": joined.record_count,
        "records": joined.counts,
        "files": joined.files,
        "chain": {"algorithm": "sha256", "genesis": verify.GENESIS, "head": joined.head,
                  "link": "sha256(f'{previous link}:{n}:{sha256(line) hex}')"},
        "verification": _verification(export, committer),
        "policy_versions": [
            {"id": pk, "policy": policy, "number": number, "status": status,
             "checksum": checksum}
            for pk, policy, number, status, checksum in versions.values_list(
                "pk", "policy__name", "number", "status", "checksum")],
        "approvals": [
            {"id": pk, "status": status, **_action(committer, action_hash), "votes": votes}
            for pk, status, action_hash, votes in approvals.annotate(
                vote_count=Count("votes")).values_list("pk", "status", "action_hash",
                                                       "vote_count")],
        "previous_export": ({"export_id": previous["pk"], "signature": previous["signature"]}
                            if previous else None),
        "signing": {"algorithm": signing.ALGORITHM, "public_key": public_key,
                    "key_id": signing.key_id(public_key)},
        "volatile_fields": list(verify.VOLATILE_MANIFEST_FIELDS),
    }


def _discard_parts(export_id: int) -> None:
    """Remove an export's part files from storage (with whatever an upload cut short by a dead
    worker left beside them) and its local temporary files."""
    storage = export_storage()
    folder = f"parts/{export_id}"
    try:
        # Listed, not tested with exists() first: in a bucket a folder is only a prefix, never
        # an object of its own, so exists() says no while parts lie under it.
        names = storage.listdir(folder)[1]
    except (OSError, NotImplementedError):  # a local folder never made: no parts
        names = []
    known = set(ExportPart.objects.filter(export_id=export_id).exclude(file="").values_list(
        "file", flat=True))
    kept = []
    for name in known | {f"{folder}/{leaf}" for leaf in names}:
        try:
            storage.delete(name)
        except OSError:
            kept.append(name)
            log.warning("could not delete part file %s of export %s", name, export_id)
    # A part whose file is gone says so; the expiry sweep retries what could not be deleted.
    ExportPart.objects.filter(export_id=export_id).exclude(file="").exclude(
        file__in=kept).update(file="")
    shutil.rmtree(Path(settings.LEDGER_EXPORT_TMP_DIR) / str(export_id), ignore_errors=True)


#: Rows (the plan's estimate) from which ``produce_now`` writes the parts in several processes,
#: and each further process needs as many more: a process costs 1.5-2.7 s to start, and one
#: writes a strict export at about 16,000 records/s (bench/export.py, 2 cores).
PARALLEL_FROM_ROWS = 100_000
#: The settings writing a part reads, handed to the processes that write parts.
PART_SETTINGS = ("STORAGES", "LEDGER_EXPORT_TMP_DIR", "LEDGER_EXPORT_PROGRESS_ROWS",
                 "LEDGER_EXPORT_MAX_ATTEMPTS")


def produce_now(export: AuditExport, workers: int | None = None) -> AuditExport:
    """Plan, write every part and join on this machine (the CLI; tests): the same steps the
    Celery tasks take. The parts are written by ``workers`` processes at once (None: chosen by
    the export's size, one for a small one; always one inside a caller's transaction or on
    SQLite), as Celery workers would write them. A step that fails leaves the export failed
    with the reason, which the caller reports (the tasks re-raise it for Celery instead)."""
    try:
        part_ids = plan(export.pk)
        processes = _processes_for(export.pk, len(part_ids), workers)
        followed = None
        if processes > 1:
            followed = _produce_in_processes(export, part_ids, processes)
        else:
            for part_id in part_ids:
                produce_part(part_id)
        join(export.pk, followed)
    except Exception as exc:
        log.warning("export %s failed in process: %s", export.pk, type(exc).__name__)
        if not AuditExport.objects.filter(pk=export.pk, status=ExportStatus.FAILED).exists():
            _fail(export.pk, f"{type(exc).__name__}: {exc}")
    export.refresh_from_db()
    return export


def _processes_for(export_id: int, parts: int, workers: int | None) -> int:
    # Other processes see committed rows only (the plan, inside a caller's transaction, is
    # not), and SQLite takes one writer at a time.
    if parts < 2 or transaction.get_connection().in_atomic_block or \
            transaction.get_connection().vendor != "postgresql":
        return 1
    if workers is not None:
        return max(1, min(workers, parts))
    rows = AuditExport.objects.filter(pk=export_id).values_list("rows_total", flat=True).first()
    return choose_processes(rows or 0, os.cpu_count() or 1, PARALLEL_FROM_ROWS, most=parts)


def _produce_in_processes(export: AuditExport, part_ids: list[int], processes: int
                          ) -> Followed | None:
    """Each part written by one of ``processes`` fresh processes while this one joins them as
    they finish (``follow_parts``); the first failure (which ``produce_part`` has recorded on
    the export) is raised at once, and the parts not started are not."""
    parts = list(ExportPart.objects.filter(pk__in=part_ids).order_by("index")
                 .values_list("pk", "estimated_rows"))
    in_order = [pk for pk, _ in parts]
    with django_pool(processes, PART_SETTINGS) as pool:
        by_pk = {pk: pool.submit(produce_part, pk) for pk in _writing_order(parts, processes)}
        futures = [by_pk[pk] for pk in in_order]
        try:
            followed = follow_parts(export, in_order, futures)
            for future in as_completed(futures):
                future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return followed


#: How much longer the processes may write in the parts' own order than biggest first: about
#: what joining beside them saves (the join's pass is ~10% of a strict export, half of it
#: overlapped on 2 cores).
FOLLOWING_SLACK = 1.05


def _writing_order(parts: list[tuple[int, int]], processes: int) -> list[int]:
    """The order to hand ``parts`` (id, estimated rows; in index order) to the processes: their
    own, which the join follows, unless that leaves a process writing a big part alone at the
    end (a small export: one section's part is most of it); then the biggest first, which
    ends the processes together, and the join mostly waits for the first parts."""
    biggest_first = sorted(parts, key=lambda part: -part[1])
    if _end_of([rows for _, rows in parts], processes) <= FOLLOWING_SLACK * _end_of(
            [rows for _, rows in biggest_first], processes):
        return [pk for pk, _ in parts]
    return [pk for pk, _ in biggest_first]


def _end_of(sizes: list[int], processes: int) -> int:
    """When ``processes`` end, each taking the next size as soon as it is free."""
    ends = [0] * processes
    for size in sizes:
        heapq.heapreplace(ends, ends[0] + size)
    return max(ends)


# -- read, share, download, expire ------------------------------------------------------------

def open_for_download(export: AuditExport, *, by: Actor, ip: str | None, user_agent: str) -> Any:
    """The bundle, opened, after recording (and annotating) who downloads it from where."""
    if export.status != ExportStatus.DONE or not export.file:
        raise ExportUnavailable(f"export {export.pk} is {export.status}, not ready to download")
    user, label = _principal(by=by)
    with transaction.atomic():
        ExportDownload.objects.create(tenant_id=export.tenant_id, export=export, user=user,
                                      principal=label, ip=ip or None,
                                      user_agent=user_agent[:500])
        annotate(export.tenant, AnnotationKind.NOTE, f"Export {export.pk} downloaded by {label}",
                 by=by, data={"event": "export_downloaded", "export_id": export.pk,
                              "ip": ip or "", "user_agent": user_agent[:200]})
    return export_storage().open(export.file, "rb")


def expire_exports(now: datetime | None = None) -> int:
    """Delete the bundles of exports past their expiry and mark them expired; clear what
    failed exports left. Returns how many expired."""
    now = now or timezone.now()
    storage = export_storage()
    expired = 0
    for export in AuditExport.objects.filter(status=ExportStatus.DONE, expires_at__lte=now,
                                             under_review=False):
        if export.file and storage.exists(export.file):
            storage.delete(export.file)
        expired += AuditExport.objects.filter(pk=export.pk, status=ExportStatus.DONE).update(
            status=ExportStatus.EXPIRED, file="")
    # Failed exports keep their parts until now; a finished one whose worker died between
    # publishing the bundle and discarding the parts is caught here too.
    for export_id in AuditExport.objects.exclude(status__in=[
            ExportStatus.QUEUED, ExportStatus.RUNNING]).filter(
            Exists(ExportPart.objects.filter(export=OuterRef("pk")).exclude(file=""))
    ).values_list("pk", flat=True):
        _discard_parts(export_id)
    return expired


__all__ = ["ExportNotAllowed", "ExportUnavailable", "expire_exports", "join",
           "open_for_download", "plan", "produce_now", "produce_part", "request_export",
           "share_export", "visible_exports"]
