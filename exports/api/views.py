"""Audit exports over the API: request one, follow its progress, download the bundle."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.actors import actor_of
from core.models import Tenant
from core.roles import Role

from .. import services
from ..models import AuditExport
from .serializers import AuditExportDetailSerializer, AuditExportSerializer, ExportRequestSerializer


def client_address(request: Any) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


class ExportListCreate(generics.ListAPIView[AuditExport]):
    """Exports of your tenants (and those shared with you), newest first; POST requests one.

    The export is produced by background workers: follow ``status`` and ``percent`` on its
    detail, then fetch ``download``. ``strict`` redaction unless you hold the role for a lighter
    level (``standard``: view_confidential; ``none``: view_unredacted and a justification).
    """

    serializer_class = AuditExportSerializer

    def get_queryset(self) -> QuerySet[AuditExport]:
        exports = services.visible_exports(self.request.user).select_related("tenant")
        slug = self.request.query_params.get("tenant")
        return exports.filter(tenant__slug=slug) if slug else exports

    @extend_schema(request=ExportRequestSerializer, responses={201: AuditExportSerializer})
    def post(self, request: Request) -> Response:
        body = ExportRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        tenants = Tenant.objects.for_user(request.user, Role.EXPORT)
        if data.get("tenant"):
            tenants = tenants.filter(slug=data["tenant"])
        elif getattr(request.user, "api_key_tenant_id", None) is None:
            raise ValidationError({"tenant": "name the tenant to export"})
        tenant = tenants.first()
        if tenant is None:
            raise PermissionDenied("exporting needs the export role on the tenant")
        export = services.request_export(
            tenant, data["window_from"], data["window_to"], by=actor_of(request),
            redaction_level=data["redaction_level"], fmt=data["format"],
            justification=data["justification"])
        return Response(AuditExportSerializer(export).data, status=status.HTTP_201_CREATED)


class ExportDetail(generics.RetrieveAPIView[AuditExport]):
    """One export with its progress, and once done its manifest and signature."""

    serializer_class = AuditExportDetailSerializer
    lookup_url_kwarg = "export_id"
    lookup_field = "pk"

    def get_queryset(self) -> QuerySet[AuditExport]:
        return services.visible_exports(self.request.user).select_related("tenant")


class ExportDownload(APIView):
    """The bundle (a tar: data, index, manifest, signature); each download is recorded."""

    @extend_schema(responses={(200, "application/x-tar"): OpenApiResponse(OpenApiTypes.BINARY),
                              404: OpenApiResponse(description="No such export for you"),
                              409: OpenApiResponse(description="Not ready, or expired")})
    def get(self, request: Request, export_id: int) -> Any:
        export = services.visible_exports(request.user).filter(pk=export_id).first()
        if export is None:
            raise NotFound()
        try:
            handle = services.open_for_download(
                export, by=actor_of(request), ip=client_address(request),
                user_agent=request.META.get("HTTP_USER_AGENT", ""))
        except services.ExportUnavailable as exc:
            return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_409_CONFLICT)
        response = FileResponse(handle, as_attachment=True, filename=export.download_name,
                                content_type="application/x-tar")
        # a bundle streamed from a bucket cannot be measured by seeking: its size was recorded
        response.headers.setdefault("Content-Length", str(export.size))
        return response
