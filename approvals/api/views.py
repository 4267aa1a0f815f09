"""Polling an approval request, with an optional bounded wait."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import generics, serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from core.actors import actor_of
from core.api.scoping import TenantScopedViewMixin
from core.roles import Role

from ..models import ApprovalRequest, Status
from ..services import withdraw_approval

POLL_INTERVAL = 0.25
# Long-polls held now in this process, per API key (or person).
_waiting: Counter[str] = Counter()
_waiting_lock = threading.Lock()


@contextmanager
def waiting_slot(holder: str) -> Iterator[bool]:
    """Take one of ``holder``'s long-poll slots in this process; yields False when they are
    all taken (the caller answers at once instead of waiting)."""
    with _waiting_lock:
        granted = _waiting[holder] < settings.LEDGER_APPROVAL_WAITERS_PER_KEY
        if granted:
            _waiting[holder] += 1
    try:
        yield granted
    finally:
        if granted:
            with _waiting_lock:
                _waiting[holder] -= 1


class ConsumedBySerializer(serializers.Serializer[Any]):
    decision = serializers.IntegerField()
    run_id = serializers.CharField()
    call_id = serializers.CharField()


class ApprovalSerializer(serializers.ModelSerializer[ApprovalRequest]):
    approvals = serializers.SerializerMethodField()
    consumed_by = serializers.SerializerMethodField()

    class Meta:
        model = ApprovalRequest
        fields = ["id", "kind", "status", "tool", "action_class", "run_id", "call_id",
                  "approvals_needed", "approvals", "due_at", "decided_at", "created_at",
                  "consumed_at", "consumed_by"]

    def get_approvals(self, request: ApprovalRequest) -> int:
        return request.votes.filter(approve=True).count()

    @extend_schema_field(ConsumedBySerializer(allow_null=True))
    def get_consumed_by(self, request: ApprovalRequest) -> dict[str, Any] | None:
        """The one decision this approval cleared (null until one used it)."""
        decision = request.consumed_by
        if decision is None:
            return None
        return {"decision": decision.pk, "run_id": decision.run_id,
                "call_id": decision.call_id}


class ApprovalDetail(TenantScopedViewMixin, generics.RetrieveAPIView[ApprovalRequest]):
    """An approval request's state; ``?wait=N`` blocks up to N seconds (at most
    ``LEDGER_APPROVAL_MAX_WAIT``) while it is pending."""

    serializer_class = ApprovalSerializer
    role = Role.INGEST
    scoped_model = ApprovalRequest

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped_queryset()

    @extend_schema(parameters=[OpenApiParameter("wait", int, description="seconds to wait "
                                                "for a decision")])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        approval = self.get_object()
        try:
            wait = min(max(float(request.query_params.get("wait", 0)), 0),
                       settings.LEDGER_APPROVAL_MAX_WAIT)
        except ValueError:
            wait = 0
        if not wait or approval.status != Status.PENDING:
            return Response(self.get_serializer(approval).data)
        with waiting_slot(str(request.user)) as granted:
            if not granted:  # this key already holds its share of the server's workers
                return Response(self.get_serializer(approval).data,
                                headers={"Retry-After": str(max(1, int(POLL_INTERVAL * 4)))})
            deadline = time.monotonic() + wait
            while approval.status == Status.PENDING and time.monotonic() < deadline:
                time.sleep(POLL_INTERVAL)
                approval.refresh_from_db(fields=["status", "decided_at"])
        return Response(self.get_serializer(approval).data)


class WithdrawSerializer(serializers.Serializer[Any]):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")


class ApprovalWithdraw(TenantScopedViewMixin, generics.GenericAPIView[ApprovalRequest]):
    """The asker gives up on a pending request (its own wait timed out): nobody can approve it
    any more. Only whoever asked may withdraw; a decided request is left as it is."""

    serializer_class = ApprovalSerializer
    role = Role.INGEST
    scoped_model = ApprovalRequest

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped_queryset()

    @extend_schema(request=WithdrawSerializer, responses={200: ApprovalSerializer})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        approval = self.get_object()
        body = WithdrawSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            approval = withdraw_approval(approval, by=actor_of(request),
                                         reason=body.validated_data["reason"])
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc)) from exc
        return Response(self.get_serializer(approval).data)
