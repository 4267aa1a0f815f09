"""Deferred items API: the reconciliation queue. Thin: scope, redact, call ``runs.deferred``.

Reading needs view_ledger; applying and dismissing need operate (checked by the service). An
item of another tenant is a 404, as everywhere.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from core.actors import actor_of
from core.api.scoping import TenantScopedViewMixin
from core.roles import Role

from .. import deferred as service
from ..models import DeferredItem, DeferredReason, DeferredSource, DeferredStatus
from ..services import ViewersByTenant

LIST_FIELDS = {"id": "id", "tenant": "tenant__slug", "tenant_id": "tenant_id",
               "source": "source", "reason_code": "reason_code", "reason": "reason",
               "run_id": "run_id", "status": "status", "received_at": "received_at",
               "received_by": "received_by", "resolved_by": "resolved_by_label",
               "resolved_at": "resolved_at", "justification": "justification",
               "applied_records": "applied_records"}
DETAIL_FIELDS = {**LIST_FIELDS, "payload": "payload"}
FILTERS = [
    OpenApiParameter("tenant", str, description="Narrow to one of your tenants (by slug)."),
    OpenApiParameter("status", str, enum=list(DeferredStatus.values)),
    OpenApiParameter("source", str, enum=list(DeferredSource.values)),
    OpenApiParameter("reason_code", str, enum=list(DeferredReason.values)),
    OpenApiParameter("run_id", str, description="The items of one run."),
]


class DeferredItemSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    tenant = serializers.SlugField()
    source = serializers.ChoiceField(  # type: ignore[assignment]  # a field named source
        choices=DeferredSource.choices)
    reason_code = serializers.ChoiceField(choices=DeferredReason.choices)
    reason = serializers.JSONField(help_text="Why it was not placed (strictly redacted).")
    run_id = serializers.CharField(help_text="The run it belongs to; empty when none.")
    status = serializers.ChoiceField(choices=DeferredStatus.choices)
    received_at = serializers.DateTimeField()
    received_by = serializers.CharField()
    resolved_by = serializers.CharField()
    resolved_at = serializers.DateTimeField(allow_null=True)
    justification = serializers.JSONField(help_text="Why it was dismissed (redacted).")
    applied_records = serializers.JSONField(help_text="[{kind, id}] it became when applied.")
    payload = serializers.JSONField(help_text="What was received, redacted (strict).")


class DismissSerializer(serializers.Serializer[Any]):
    justification = serializers.CharField(max_length=5000)


class ApplyResultSerializer(serializers.Serializer[Any]):
    item_id = serializers.IntegerField()
    outcome = serializers.ChoiceField(choices=["applied", "still_deferred", "taken"])
    detail = serializers.CharField()
    records = serializers.JSONField()


def _rows(qs: QuerySet[Any], fields: dict[str, str]) -> QuerySet[Any]:
    from .presenters import values_of

    return values_of(qs, fields)


def _shown(request: Request, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from .presenters import renamed

    viewers = ViewersByTenant(request.user)  # strict: reconciliation needs no lighter level
    shown = []
    for row in renamed(rows):
        row = service.shown_item(viewers, row)
        del row["tenant_id"]
        shown.append(row)
    return shown


@extend_schema(parameters=FILTERS)
class DeferredItemList(TenantScopedViewMixin, generics.ListAPIView[Any]):
    """What the portal received and could not place yet (Deferred pending ledger schema
    reconciliation), newest first, redacted (strict)."""

    serializer_class = DeferredItemSerializer
    role = Role.VIEW_LEDGER
    scoped_model = DeferredItem

    def get_queryset(self) -> QuerySet[Any]:
        params = self.request.query_params
        return service.deferred_for(self.request.user, params.get("tenant"),
                                    params.get("status"), params.get("source"),
                                    params.get("run_id")).filter(
            **({"reason_code": params["reason_code"]} if params.get("reason_code") else {}))

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(_rows(self.get_queryset(), DETAIL_FIELDS))
        assert page is not None
        return self.get_paginated_response(_shown(request, list(page)))


def _visible(request: Request, deferred_id: int) -> DeferredItem:
    item = service.items_by_pk(request.user, [deferred_id]).first()
    if item is None:
        raise NotFound("No such deferred item in your tenants.")
    return item


class DeferredItemDetail(TenantScopedViewMixin, generics.RetrieveAPIView[Any]):
    """One deferred item with what was received (redacted, strict)."""

    serializer_class = DeferredItemSerializer
    role = Role.VIEW_LEDGER
    scoped_model = DeferredItem

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        item = _visible(request, kwargs["deferred_id"])
        return Response(_shown(request, list(_rows(DeferredItem.objects.filter(pk=item.pk),
                                                   DETAIL_FIELDS)))[0])


class DeferredItemDismiss(TenantScopedViewMixin, generics.GenericAPIView[Any]):
    """Dismiss a pending item with a justification (operate role); noted on its run."""

    serializer_class = DismissSerializer
    role = Role.VIEW_LEDGER
    scoped_model = DeferredItem

    @extend_schema(request=DismissSerializer, responses={200: DeferredItemSerializer})
    def post(self, request: Request, deferred_id: int) -> Response:
        item = _visible(request, deferred_id)
        body = DismissSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        # a refusal (role, justification) is answered 403/400 by the API's one error wrapper
        service.dismiss_deferred(item, by=actor_of(request),
                                 justification=body.validated_data["justification"])
        return Response(_shown(request, list(_rows(DeferredItem.objects.filter(pk=item.pk),
                                                   DETAIL_FIELDS)))[0])


class DeferredItemApply(TenantScopedViewMixin, generics.GenericAPIView[Any]):
    """Map a pending item with the current mapping and record what it becomes (operate role),
    exactly once; ``still_deferred`` when it still does not map."""

    serializer_class = ApplyResultSerializer
    role = Role.VIEW_LEDGER
    scoped_model = DeferredItem

    @extend_schema(request=None, responses={200: ApplyResultSerializer})
    def post(self, request: Request, deferred_id: int) -> Response:
        item = _visible(request, deferred_id)
        outcome = service.apply_deferred(item, by=actor_of(request))
        return Response({"item_id": outcome.item_id, "outcome": outcome.outcome,
                         "detail": outcome.detail, "records": outcome.records},
                        status=status.HTTP_200_OK)
