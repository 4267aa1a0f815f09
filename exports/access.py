"""Who reads which export: an export is only ever read at a redaction level its reader's roles
allow, checked at every read (a role taken away takes the export with it).

- ``strict``: holders of the export role on its tenant, and the people it was shared with.
- ``standard``: the same, when they also hold view_confidential on the tenant.
- ``none`` (unredacted): its requester while they hold view_unredacted, and the people a
  second person allowed: someone other than the requester, holding export and view_unredacted,
  shares it, only with holders of view_unredacted on the tenant.

No share crosses tenants: someone who belongs to other tenants and not to the export's is
refused (an external auditor's account, with no roles anywhere, may receive a strict export).
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q, QuerySet

from core.actors import Actor, Viewer, person_of
from core.models import Tenant
from core.roles import Role
from core.tenancy import has_role
from runs.annotations import annotate
from runs.models import AnnotationKind
from runs.services import LEVEL_ROLES

from .models import AuditExport, ExportShare, RedactionLevel


class ExportNotAllowed(PermissionDenied):
    pass


def _readable_levels(user: Viewer) -> Q:
    """The exports whose level ``user``'s roles on their tenant allow."""
    confidential = Tenant.objects.for_user(user, Role.VIEW_CONFIDENTIAL).values("pk")
    unredacted = Tenant.objects.for_user(user, Role.VIEW_UNREDACTED).values("pk")
    return (Q(redaction_level=RedactionLevel.STRICT)
            | Q(redaction_level=RedactionLevel.STANDARD, tenant__in=confidential)
            | Q(redaction_level=RedactionLevel.NONE, tenant__in=unredacted))


def visible_exports(user: Viewer) -> QuerySet[AuditExport]:
    """The exports ``user`` may list and download (see the module's rules)."""
    exporting = AuditExport.objects.for_user(user, Role.EXPORT)
    person = person_of(user)
    held = Q(pk__in=exporting.exclude(redaction_level=RedactionLevel.NONE).values("pk"))
    if person is not None:
        held |= Q(pk__in=exporting.filter(redaction_level=RedactionLevel.NONE,
                                          requested_by=person).values("pk"))
        held |= Q(pk__in=ExportShare.objects.filter(user=person).values("export_id"))
    return AuditExport.objects.filter(held).filter(_readable_levels(user))


def _belongs_elsewhere_only(user: Viewer, tenant_id: int) -> bool:
    roles = list(Role.values)
    here = any(has_role(user, role, tenant_id) for role in roles)
    return not here and any(Tenant.objects.for_user(user, role).exclude(pk=tenant_id).exists()
                            for role in roles)


@transaction.atomic
def share_export(export: AuditExport, user: User, *, by: Actor) -> ExportShare:
    """Let ``user`` (an external auditor, say) download one export; annotated. Refused when it
    would cross tenants or widen what ``user``'s roles let them read, and for an unredacted
    export unless ``by`` is a second person holding view_unredacted."""
    tenant_id = export.tenant_id
    if not has_role(by, Role.EXPORT, tenant_id):
        raise ExportNotAllowed("sharing an export needs the export role on its tenant")
    if _belongs_elsewhere_only(user, tenant_id):
        raise ExportNotAllowed(f"{user} belongs to another tenant; an export is never shared "
                               "across tenants")
    role = LEVEL_ROLES[export.redaction_level]
    if role is not None and not has_role(user, role, tenant_id):
        raise ExportNotAllowed(f"a {export.redaction_level} export is shared only with holders "
                               f"of the {role} role on its tenant; {user} has not got it")
    if export.redaction_level == RedactionLevel.NONE:
        if export.requested_by_id is not None and export.requested_by_id == getattr(
                by, "pk", None):
            raise ExportNotAllowed("who reads an unredacted export is allowed by a second "
                                   "person, not by its requester")
        if not has_role(by, Role.VIEW_UNREDACTED, tenant_id):
            raise ExportNotAllowed("sharing an unredacted export needs the view_unredacted "
                                   "role on its tenant")
    shared_by = person_of(by)
    share, _ = ExportShare.objects.get_or_create(
        export=export, user=user, defaults={"tenant_id": tenant_id, "shared_by": shared_by})
    annotate(export.tenant, AnnotationKind.NOTE, f"Export {export.pk} shared with {user}",
             by=by, data={"event": "export_shared", "export_id": export.pk, "with": str(user),
                          "redaction_level": export.redaction_level})
    return share
