"""Incident API: open, list, read, link, note, freeze, mitigate, close. Thin: scope, validate,
call a service. Reading needs view_ledger; acting needs operate (the services check it)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from core.actors import actor_of
from core.api.scoping import TenantScopedViewMixin
from core.models import Tenant
from core.roles import Role

from .. import services
from ..models import Incident, IncidentStatus, Severity
from . import serializers as s
from .presenters import incident_detail, incident_row

TENANT_PARAM = OpenApiParameter("tenant", str, description="One of your tenants (by slug); "
                                "required for people opening an incident.")


def acting_tenant(request: Request, role: str) -> Tenant:
    """The tenant a write acts on: an API key's own, or the one a person names with
    ``?tenant=`` (never the request body)."""
    tenants = Tenant.objects.for_user(request.user, role)
    slug = request.query_params.get("tenant")
    if getattr(request.user, "api_key_tenant_id", None) is None:
        tenants = tenants.filter(slug=slug) if slug else tenants.none()
    tenant = tenants.first()
    if tenant is None:
        raise PermissionDenied(f"this needs the {role} role (API keys: the {role} scope); "
                               "people name the tenant with ?tenant=<slug>.")
    return tenant


@extend_schema(parameters=[TENANT_PARAM])
class IncidentList(TenantScopedViewMixin, generics.ListCreateAPIView[Incident]):
    """Incidents of your tenants, newest first (filter by ``status`` and ``severity``);
    POST opens one (operate role)."""

    role = Role.VIEW_LEDGER
    scoped_model = Incident
    serializer_class = s.IncidentSerializer

    def get_queryset(self) -> QuerySet[Any]:
        qs = self.scoped_queryset().select_related("tenant")
        for name, allowed in (("status", IncidentStatus.values), ("severity", Severity.values)):
            value = self.request.query_params.get(name)
            if value in allowed:
                qs = qs.filter(**{name: value})
        return qs

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        assert page is not None
        return self.get_paginated_response([incident_row(i) for i in page])

    @extend_schema(request=s.IncidentOpenSerializer, responses={201: s.IncidentDetailSerializer})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        tenant = acting_tenant(request, Role.OPERATE)
        form = s.IncidentOpenSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        incident = services.open_incident(tenant, by=actor_of(request), **form.validated_data)
        return Response(incident_detail(incident, request.user), status=status.HTTP_201_CREATED)


class _OneIncident(TenantScopedViewMixin, generics.GenericAPIView[Incident]):
    role = Role.VIEW_LEDGER  # found by readers; acting on it is checked by the service
    scoped_model = Incident
    lookup_url_kwarg = "incident_id"

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped_queryset().select_related("tenant")

    def act(self, request: Request, form_class: Any, action: Any) -> Response:
        incident = self.get_object()
        form = form_class(data=request.data)
        form.is_valid(raise_exception=True)
        return Response(action(incident, form.validated_data))


class IncidentDetail(_OneIncident):
    """An incident with its linked runs, calls, policy versions (freezes), rollbacks and its
    timeline of annotations."""

    serializer_class = s.IncidentDetailSerializer

    @extend_schema(parameters=[OpenApiParameter(
        "redaction", str, enum=["strict", "standard", "none"],
        description="Redaction of the timeline (strict by default).")])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        incident = self.get_object()
        return Response(incident_detail(incident, request.user,
                                        request.query_params.get("redaction")))


class IncidentLink(_OneIncident):
    """Link runs, tool calls, policy versions, replays and tickets. Linking write, delete or exfil
    calls escalates to security and data owners (recorded in the timeline)."""

    serializer_class = s.IncidentLinkSerializer

    @extend_schema(request=s.IncidentLinkSerializer, responses=s.LinkedSerializer)
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        def link(incident: Incident, data: dict[str, Any]) -> dict[str, Any]:
            return asdict(services.link_to_incident(incident, by=actor_of(request), **data))
        return self.act(request, s.IncidentLinkSerializer, link)


class IncidentNote(_OneIncident):
    serializer_class = s.IncidentNoteSerializer

    @extend_schema(request=s.IncidentNoteSerializer, responses=s.IncidentTimelineEntrySerializer)
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        def note(incident: Incident, data: dict[str, Any]) -> dict[str, Any]:
            written = services.add_note(incident, data["body"], by=actor_of(request))
            return {"annotation_id": written.annotation_id, "kind": written.annotation_kind,
                    "event": "note", "body": written.body, "data": written.data,
                    "run_id": written.run.run_id, "target_call_id": "",
                    "author": written.author_label, "recorded_at": written.recorded_at}
        return self.act(request, s.IncidentNoteSerializer, note)


class IncidentFreeze(_OneIncident):
    """Freeze a tool for this incident: the published freeze version records the incident and
    the incident lists the version."""

    serializer_class = s.IncidentFreezeSerializer

    @extend_schema(request=s.IncidentFreezeSerializer, responses=s.LinkedVersionSerializer)
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        def freeze(incident: Incident, data: dict[str, Any]) -> dict[str, Any]:
            version = services.freeze_for_incident(incident, data["tool"], by=actor_of(request),
                                                   mode=data["mode"])
            return {"id": version.pk, "policy": version.policy.name, "version": version.number,
                    "status": version.status, "freeze": True}
        return self.act(request, s.IncidentFreezeSerializer, freeze)


class IncidentMitigate(_OneIncident):
    serializer_class = s.IncidentMitigateSerializer

    @extend_schema(request=s.IncidentMitigateSerializer, responses=s.IncidentSerializer)
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.act(request, s.IncidentMitigateSerializer, lambda incident, data: (
            incident_row(services.mark_mitigated(incident, by=actor_of(request),
                                                 note=data["note"]))))


class IncidentClose(_OneIncident):
    """Close with a remediation status (required); writes the final annotation."""

    serializer_class = s.IncidentCloseSerializer

    @extend_schema(request=s.IncidentCloseSerializer, responses=s.IncidentSerializer)
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.act(request, s.IncidentCloseSerializer, lambda incident, data: (
            incident_row(services.close_incident(incident, by=actor_of(request),
                                                 remediation_status=data["remediation_status"],
                                                 note=data["note"]))))
