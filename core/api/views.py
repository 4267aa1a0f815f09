"""Tenant-level API routes: outage mode. Thin: scope, validate, call the service."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.actors import actor_of

from ..models import Tenant
from ..roles import Role
from ..services import OUTAGE_REASON_MAX, set_outage_mode


class OutageStateSerializer(serializers.Serializer[Any]):
    tenant = serializers.SlugField()
    outage_mode = serializers.BooleanField()
    changed = serializers.BooleanField(
        required=False, help_text="POST: false when the tenant already was in that mode "
        "(nothing recorded).")
    annotation_id = serializers.CharField(
        required=False, allow_null=True, help_text="POST: the governance-log annotation "
        "recording the change.")


class OutageRequestSerializer(serializers.Serializer[Any]):
    outage_mode = serializers.BooleanField(help_text="true: enter outage mode; false: leave it.")
    reason = serializers.CharField(max_length=OUTAGE_REASON_MAX,
                                   help_text="Why (the outage, the incident, who decided).")


class TenantOutage(APIView):
    """A tenant's outage mode. While on, replays run in sandbox only and leaving sandbox needs
    an approved HITL request; policy rules may match on it. GET: view_ledger; POST switches it
    (manage_policies role) and records who and why in the tenant's governance log."""

    def _tenant(self, request: Request, slug: str) -> Tenant:
        tenant = Tenant.objects.for_user(request.user, Role.VIEW_LEDGER).filter(
            slug=slug).first()
        if tenant is None:
            raise NotFound("No such tenant among yours.")
        return tenant

    @extend_schema(responses=OutageStateSerializer)
    def get(self, request: Request, slug: str) -> Response:
        tenant = self._tenant(request, slug)
        return Response({"tenant": tenant.slug, "outage_mode": tenant.outage_mode})

    @extend_schema(request=OutageRequestSerializer, responses=OutageStateSerializer)
    def post(self, request: Request, slug: str) -> Response:
        tenant = self._tenant(request, slug)
        form = OutageRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        note = set_outage_mode(tenant, by=actor_of(request),
                               on=form.validated_data["outage_mode"],
                               reason=form.validated_data["reason"])
        body: dict[str, Any] = {"tenant": tenant.slug, "outage_mode": tenant.outage_mode,
                                "changed": note is not None,
                                "annotation_id": note.annotation_id if note else None}
        return Response(body, status=status.HTTP_200_OK)
