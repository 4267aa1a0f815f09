"""Ledger API: batch ingestion and the read routes. Thin: scope, validate, call a service."""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from django.db.models import QuerySet
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from pydantic import ValidationError
from rest_framework import generics, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.exceptions import ValidationError as DRFValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import signing
from core.api.authentication import bound_agents
from core.api.scoping import TenantScopedViewMixin
from core.models import Tenant
from core.roles import Role

from .. import services
from ..deferred_batch import HeldBackInvalid, as_received, parse_for_tenant
from ..ingest_schema import BatchIn, validation_errors
from ..models import Agent, IntegrityAlarm, Run, ToolCall
from . import presenters as p
from . import serializers as s
from .filters import RunFilter, ToolCallFilter

TENANT_PARAM = OpenApiParameter(
    "tenant", str, description="Narrow to one of your tenants (by slug).")
REDACTION_PARAM = OpenApiParameter(
    "redaction", str, enum=["strict", "standard", "none"],
    description="How much ledger content to redact. strict (the default) for everyone; "
    "standard needs the view_confidential role, none the view_unredacted role.")


class Redaction:
    """The reader's redaction, per tenant of the rows at hand (a person may span several)."""

    def __init__(self, request: Request):
        self._viewer = services.ViewersByTenant(request.user,
                                                request.query_params.get("redaction"),
                                                viewing=f"{request.path} (API)")

    def row(self, kind: str, row: dict[str, Any], tenant_id: int) -> dict[str, Any]:
        return self._viewer(tenant_id).redact_row(kind, row)

    def fields(self, row: dict[str, Any], names: tuple[str, ...], tenant_id: int
               ) -> dict[str, Any]:
        """``row`` with the named fields redacted (detectors and the tenant's rules)."""
        return self._viewer(tenant_id).redactor.redact_fields(row, names)


class _ValuesListView(TenantScopedViewMixin, generics.ListAPIView[Any]):
    fields: dict[str, str]
    redacted_kind: str | None = None

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped_queryset()

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        qs = self.filter_queryset(self.get_queryset())
        extra = ("id", "tenant_id") if self.redacted_kind else ("id",)
        page = self.paginate_queryset(p.values_of(qs, self.fields, *extra))
        assert page is not None
        rows = p.renamed(page)
        redaction = Redaction(request)
        for i, row in enumerate(rows):
            del row["id"]
            if self.redacted_kind:
                rows[i] = redaction.row(self.redacted_kind, row, row.pop("tenant_id"))
        return self.get_paginated_response(rows)


@extend_schema(parameters=[TENANT_PARAM])
class TenantList(_ValuesListView):
    """Tenants whose ledger you may read."""

    serializer_class = s.TenantSerializer
    role = Role.VIEW_LEDGER
    fields = p.TENANT_FIELDS

    def get_queryset(self) -> QuerySet[Any]:
        return Tenant.objects.for_user(self.request.user, self.role)


@extend_schema(parameters=[TENANT_PARAM])
class AgentList(_ValuesListView):
    serializer_class = s.AgentSerializer
    role = Role.VIEW_LEDGER
    scoped_model = Agent
    fields = p.AGENT_FIELDS


@extend_schema(parameters=[TENANT_PARAM])
class IntegrityAlarmList(_ValuesListView):
    """Run heads the digest sealer refused to sign because they contradict an earlier digest
    (a rewrite it would otherwise have laundered), newest first."""

    serializer_class = s.IntegrityAlarmSerializer
    role = Role.VIEW_LEDGER
    scoped_model = IntegrityAlarm
    fields = p.INTEGRITY_ALARM_FIELDS
    redacted_kind = "integrity_alarm"

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped_queryset().order_by("-raised_at", "-id")


@extend_schema(parameters=[TENANT_PARAM])
class AgentDetail(TenantScopedViewMixin, generics.RetrieveAPIView[Agent]):
    serializer_class = s.AgentSerializer
    role = Role.VIEW_LEDGER
    scoped_model = Agent
    lookup_field = "agent_id"

    def get_queryset(self) -> QuerySet[Any]:
        return p.values_of(self.scoped_queryset(), p.AGENT_FIELDS)

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(p.renamed([self.get_object()])[0])


@extend_schema(parameters=[TENANT_PARAM, REDACTION_PARAM])
class RunList(_ValuesListView):
    """Runs, newest first; filter by run_id, agent_id, status, trigger_ref and start time."""

    serializer_class = s.RunSerializer
    role = Role.VIEW_LEDGER
    scoped_model = Run
    filterset_class = RunFilter
    fields = p.RUN_FIELDS
    redacted_kind = "run"


#: The run detail carries at most this many records; a longer run's answer ends with
#: ``timeline_next``, the records cursor from there (a 10,000-call run was 8.3 MB in one answer).
RUN_DETAIL_MAX_RECORDS = 2000
#: A page of the records cursor: this many records unless ``limit`` says fewer.
RECORDS_DEFAULT_LIMIT = 500
RECORDS_MAX_LIMIT = 2000


def _records_url(request: Request, run_id: str, after: int, limit: int | None = None) -> str:
    """The records cursor of ``run_id`` after ``after``, keeping the reader's query (tenant,
    redaction, format)."""
    url = request.build_absolute_uri(reverse("api:run-records", args=[run_id]))
    query = request.query_params.copy()
    query["cursor"] = str(after)
    if limit is not None:
        query["limit"] = str(limit)
    return f"{url}?{query.urlencode()}"


def _seq_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise DRFValidationError({name: f"a whole number from {low} to {high}"})
    return int(raw)


def _redacted_records(redaction: Redaction, run: dict[str, Any], after: int,
                      limit: int | None) -> list[dict[str, Any]]:
    return [redaction.row(entry["kind"], entry, run["tenant_id"])
            for entry in p.timeline_of(run["id"], run["tenant_id"], after, limit)]


@extend_schema(parameters=[TENANT_PARAM, REDACTION_PARAM], responses=s.RunDetailSerializer)
class RunDetail(TenantScopedViewMixin, generics.RetrieveAPIView[Run]):
    """A run with its timeline (steps, model calls, tool calls, annotations) in chain order.

    A run of more than 2,000 records carries its first 2,000 and ``timeline_next``: the
    records cursor (``GET /api/v1/runs/<run_id>/records/``) from there; a shorter run is whole
    and ``timeline_next`` is null."""

    serializer_class = s.RunDetailSerializer
    role = Role.VIEW_LEDGER
    scoped_model = Run
    lookup_field = "run_id"

    def get_queryset(self) -> QuerySet[Any]:
        return p.values_of(self.scoped_queryset(), p.RUN_FIELDS, "id", "tenant_id")

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        run = p.renamed([self.get_object()])[0]
        ids = {"id": run.pop("id"), "tenant_id": run.pop("tenant_id")}
        long = run["last_seq"] > RUN_DETAIL_MAX_RECORDS
        redaction = Redaction(request)
        shown = redaction.row("run", run, ids["tenant_id"])
        timeline = _redacted_records(redaction, ids, 0, RUN_DETAIL_MAX_RECORDS if long else None)
        shown["timeline"] = timeline
        shown["timeline_next"] = (_records_url(request, run["run_id"], timeline[-1]["seq"])
                                  if long and timeline else None)
        return Response(shown)


@extend_schema(parameters=[
    TENANT_PARAM, REDACTION_PARAM,
    OpenApiParameter("cursor", str, description="Where to go on from: the ``next`` of the "
                     "previous page (opaque; absent: from the run's first record)."),
    OpenApiParameter("limit", int, description=f"Records in a page, 1 to {RECORDS_MAX_LIMIT} "
                     f"(default {RECORDS_DEFAULT_LIMIT}).")],
    responses=s.RunRecordsPageSerializer)
class RunRecords(TenantScopedViewMixin, generics.RetrieveAPIView[Run]):
    """A run's records in chain order, a page at a time: follow ``next`` until it is null.

    Keyset pagination on the record's ``seq``: every record once, in order, each page as fast
    as the first; redacted as the run detail is. For runs too long for one answer."""

    serializer_class = s.RunRecordsPageSerializer
    role = Role.VIEW_LEDGER
    scoped_model = Run
    lookup_field = "run_id"

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped_queryset().values("id", "tenant_id", "run_id", "last_seq")

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        run = self.get_object()
        after = _seq_param(request, "cursor", 0, 0, 2**31 - 1)
        limit = _seq_param(request, "limit", RECORDS_DEFAULT_LIMIT, 1, RECORDS_MAX_LIMIT)
        records = _redacted_records(Redaction(request), run, after, limit)
        last = records[-1]["seq"] if records else after
        # seq counts up from 1 without gaps, but a page short of ``limit`` does not end the
        # walk by itself: only reaching the run's tip does (a cursor always moves forward)
        more = bool(records) and last < run["last_seq"]
        return Response({"run_id": run["run_id"], "results": records,
                         "next": _records_url(request, run["run_id"], last) if more else None})


@extend_schema(parameters=[TENANT_PARAM, REDACTION_PARAM])
class ToolCallList(_ValuesListView):
    """Tool calls, newest first; filter by tool, action class, status, run and start time."""

    serializer_class = s.ToolCallSerializer
    role = Role.VIEW_LEDGER
    scoped_model = ToolCall
    filterset_class = ToolCallFilter
    fields = p.TOOL_CALL_FIELDS
    redacted_kind = "tool_call"


@extend_schema(parameters=[TENANT_PARAM, REDACTION_PARAM])
class ToolCallDetail(TenantScopedViewMixin, generics.RetrieveAPIView[ToolCall]):
    serializer_class = s.ToolCallDetailSerializer
    role = Role.VIEW_LEDGER
    scoped_model = ToolCall
    lookup_field = "call_id"

    def get_queryset(self) -> QuerySet[Any]:
        return p.values_of(self.scoped_queryset(), p.TOOL_CALL_FIELDS, "tenant_id")

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        call = p.renamed([self.get_object()])[0]
        tenant_id = call.pop("tenant_id")
        call = Redaction(request).row("tool_call", call, tenant_id)
        call["decisions"] = p.decisions_of(tenant_id, [call["call_id"]]).get(call["call_id"], [])
        return Response(call)


class SigningKey(APIView):
    """The public half of the portal's Ed25519 key: what digests and exports are signed with.

    Public by nature, so anyone may fetch it to verify offline.
    """

    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []

    @extend_schema(responses=s.SigningKeySerializer)
    def get(self, request: Request) -> Response:
        public = signing.public_key_b64()
        return Response({"algorithm": signing.ALGORITHM, "public_key": public,
                         "key_id": signing.key_id(public),
                         "previous_public_keys": settings.LEDGER_PREVIOUS_PUBLIC_KEYS})


def _limits() -> dict[str, int]:
    return {"max_bytes": settings.LEDGER_BATCH_MAX_BYTES,
            "max_records": settings.LEDGER_BATCH_MAX_RECORDS}


def _too_large(what: str, received: int) -> Response:
    return Response({"detail": f"Batch too large: {received} {what}.", "limits": _limits()},
                    status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)


def _rejected(detail: str, errors: list[dict[str, str]], code: int) -> Response:
    return Response({"detail": detail, "errors": errors}, status=code)


class BatchIngest(APIView):
    """Append a batch of runs and their records to your tenant's ledger.

    One transaction per batch: everything lands or nothing does. Re-sending records that
    already landed changes nothing (200); a record whose external id is taken by different
    content is a 409 naming it. Records are chained in time order under their run.

    Fields or enum values this portal does not know are a 400 (strict, the default). A tenant
    set to lenient records the known part and keeps the rest as deferred items in the same
    transaction, listed under ``deferred`` (see ``GET /api/v1/deferred/``).
    """

    @extend_schema(
        request=BatchIn,
        parameters=[OpenApiParameter("tenant", str, description="For people: the tenant to "
                                     "record into. API keys always record into their own.")],
        responses={201: s.IngestResultSerializer, 200: s.IngestResultSerializer,
                   400: s.BatchErrorSerializer, 409: s.BatchErrorSerializer,
                   413: OpenApiResponse(description="Over the size or record limit.")},
    )
    def post(self, request: Request) -> Response:
        tenant = self._tenant(request)
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        if declared > settings.LEDGER_BATCH_MAX_BYTES:
            return _too_large("bytes", declared)
        body = request.body
        if len(body) > settings.LEDGER_BATCH_MAX_BYTES:
            return _too_large("bytes", len(body))
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _rejected("The body is not JSON.", [{"path": "(body)", "message": str(exc)}],
                             400)
        try:
            batch, deferred = parse_for_tenant(data, tenant.batch_unknown_fields == "lenient")
        except ValidationError as exc:
            return _rejected("The batch is invalid; nothing was recorded.",
                             validation_errors(exc), 400)
        except HeldBackInvalid as exc:
            return _rejected("The batch is invalid; nothing was recorded.", exc.problems, 400)
        records = sum(run.record_count for run in batch.runs)
        if records > settings.LEDGER_BATCH_MAX_RECORDS:
            return _too_large("records", records)
        try:
            result = services.ingest_batch(tenant, batch, recorded_by=str(request.user),
                                           for_agents=bound_agents(request.user),
                                           deferred=deferred)
        except services.BatchRejected as exc:
            detail = {409: "Records conflict with what is already recorded; nothing was "
                      "recorded.",
                      403: f"This API key does not act for these agents; nothing was recorded: "
                      f"{exc}"}.get(exc.status_code, "The batch is invalid; nothing was recorded.")
            return _rejected(detail, as_received(exc.problems, deferred), exc.status_code)
        code = (status.HTTP_201_CREATED if sum(result.created.values()) or result.deferred
                else status.HTTP_200_OK)
        return Response(result.as_dict(), status=code)

    @staticmethod
    def _tenant(request: Request) -> Tenant:
        tenants = Tenant.objects.for_user(request.user, Role.INGEST)
        key_tenant = getattr(request.user, "api_key_tenant_id", None)
        if key_tenant is not None:
            tenant = tenants.first()
            if tenant is None:
                raise PermissionDenied("This API key lacks the ingest scope.")
            return tenant
        slug = request.query_params.get("tenant")
        if not slug:
            raise NotFound("Pass ?tenant=<slug> to record into one of your tenants.")
        tenant = tenants.filter(slug=slug).first()
        if tenant is None:
            raise NotFound("No such tenant among those you may record into.")
        return tenant
