"""``POST /v1/traces``: the OTLP/HTTP trace receiver. Thin: authenticate, decode, call the
service, answer in the request's encoding."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.views import APIView

from core.api.authentication import ApiKeyAuthentication, bound_agents
from core.models import Tenant
from core.roles import Role

from ..ingest import BatchRejected
from . import logs, services, wire

# google.rpc.Code values for the Status bodies of error answers
_RPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 409: 6, 413: 8, 415: 3}


@extend_schema(exclude=True)  # protobuf in, protobuf out: the OTLP specification documents it
class TraceExport(APIView):
    """Receive OpenTelemetry spans (OTLP/HTTP, protobuf or JSON, optionally gzip) with an API key
    holding the ``ingest`` scope; GenAI spans become ledger records of the key's tenant."""

    authentication_classes = [ApiKeyAuthentication]

    def post(self, request: Request) -> HttpResponse:
        tenant = self._tenant(request)
        content_type = self._content_type(request)
        decoded = wire.spans_of(wire.parse_request(self._body(request), content_type))
        try:
            result = services.receive_spans(tenant, decoded, recorded_by=str(request.user),
                                            for_agents=bound_agents(request.user))
        except BatchRejected as exc:
            raise wire.WireError(exc.status_code, f"The spans do not fit the ledger; nothing "
                                 f"was recorded: {exc}") from exc
        return HttpResponse(wire.export_response(content_type, result.rejected, result.message),
                            content_type=content_type)

    @staticmethod
    def _tenant(request: Request) -> Tenant:
        tenant = Tenant.objects.for_user(request.user, Role.INGEST).first()
        if tenant is None:
            raise exceptions.PermissionDenied("This API key lacks the ingest scope.")
        return tenant

    @staticmethod
    def _body(request: Request) -> bytes:
        """The request's body, uncompressed, refused past ``LEDGER_OTLP_MAX_BYTES``."""
        limit = settings.LEDGER_OTLP_MAX_BYTES
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        if declared > limit:
            raise wire.WireError(413, f"The body is {declared} bytes, over the limit of "
                                 f"{limit} bytes; export smaller batches.")
        return wire.decompress(request.body, request.META.get("HTTP_CONTENT_ENCODING", ""),
                               limit)

    @staticmethod
    def _content_type(request: Request) -> str:
        content_type = wire.media_type(request.META.get("CONTENT_TYPE", ""))
        if content_type not in wire.CONTENT_TYPES:
            raise wire.WireError(415, f"Content-Type {content_type or '(none)'!r} is not "
                                 f"supported; send {' or '.join(wire.CONTENT_TYPES)}.")
        return content_type

    def handle_exception(self, exc: Exception) -> Any:
        """Errors as a google.rpc.Status in the request's encoding, as OTLP/HTTP answers them."""
        content_type = wire.media_type(self.request.META.get("CONTENT_TYPE", ""))
        if content_type not in wire.CONTENT_TYPES:
            content_type = wire.JSON
        if isinstance(exc, wire.WireError):
            status, message = exc.status, exc.message
        elif isinstance(exc, exceptions.APIException):
            response = super().handle_exception(exc)
            status, message = response.status_code, str(exc.detail)
        else:
            raise exc
        answer = HttpResponse(wire.status_body(content_type, _RPC_CODES.get(status, 2), message),
                              status=status, content_type=content_type)
        if status == 401:
            answer["WWW-Authenticate"] = "Bearer"
        return answer


@extend_schema(exclude=True)
class LogExport(TraceExport):
    """Receive GenAI events as OpenTelemetry log records (OTLP/HTTP, protobuf or JSON,
    optionally gzip) with an ``ingest`` key: each joins its span (see ``runs.otlp.logs``)."""

    def post(self, request: Request) -> HttpResponse:
        tenant = self._tenant(request)
        content_type = self._content_type(request)
        decoded = logs.events_of(logs.parse_request(self._body(request), content_type))
        logs.receive_events(tenant, decoded, recorded_by=str(request.user))
        message = "; ".join(decoded.rejected[:5])
        return HttpResponse(logs.export_response(content_type, len(decoded.rejected), message),
                            content_type=content_type)
