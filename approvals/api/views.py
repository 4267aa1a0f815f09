"""Polling an approval request, with an optional bounded wait."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from core.actors import actor_of
from core.api.scoping import TenantScopedViewMixin
from core.roles import Role

from ..models import ApprovalRequest, Status
from ..queue import QueueEntry, queue_entries, visible_requests
from ..services import decide_approval, withdraw_approval

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
        approval = withdraw_approval(approval, by=actor_of(request),
                                     reason=body.validated_data["reason"])
        return Response(self.get_serializer(approval).data)


class QueueEntrySerializer(ApprovalSerializer):
    """A request as an approver sees it: arguments at their clearance, who voted, and whether
    they may decide it (``why_not`` says why not)."""

    tenant = serializers.CharField(source="tenant.slug")
    arguments = serializers.SerializerMethodField()
    voters = serializers.SerializerMethodField()
    you_may_decide = serializers.SerializerMethodField()
    why_not = serializers.SerializerMethodField()

    class Meta(ApprovalSerializer.Meta):
        fields = ["id", "tenant", "kind", "status", "tool", "action_class", "arguments",
                  "run_id", "call_id", "agent_id", "requested_by", "approvals_needed",
                  "approvals", "voters", "you_may_decide", "why_not", "due_at", "decided_at",
                  "created_at", "consumed_at", "consumed_by"]

    def _entry(self, request: ApprovalRequest) -> QueueEntry:
        entry: QueueEntry = self.context["entries"][request.pk]
        return entry

    def get_approvals(self, request: ApprovalRequest) -> int:
        return self._entry(request).approvals

    def get_arguments(self, request: ApprovalRequest) -> Any:
        return self._entry(request).arguments

    def get_voters(self, request: ApprovalRequest) -> list[str]:
        return self._entry(request).voters

    def get_you_may_decide(self, request: ApprovalRequest) -> bool:
        return self._entry(request).may_decide

    def get_why_not(self, request: ApprovalRequest) -> str:
        return self._entry(request).why_not


class _Queue(TenantScopedViewMixin, generics.GenericAPIView[ApprovalRequest]):
    serializer_class = QueueEntrySerializer
    role = Role.APPROVE
    scoped_model = ApprovalRequest

    def get_queryset(self) -> QuerySet[Any]:
        return visible_requests(self.request.user, tenant=self.request.query_params.get("tenant"))

    def shown(self, requests: list[ApprovalRequest]) -> Any:
        entries = {e.request.pk: e for e in queue_entries(requests, self.request.user)}
        return QueueEntrySerializer(requests, many=True, context={"entries": entries}).data


class ApprovalList(_Queue, generics.ListAPIView[ApprovalRequest]):
    """The requests of the tenants where you approve, newest first (``?status=pending`` for
    what waits on a decision), each saying whether you may decide it."""

    @extend_schema(parameters=[
        OpenApiParameter("status", str, enum=Status.values),
        OpenApiParameter("tenant", str, description="One of your tenants (by slug)."),
        OpenApiParameter("action_class", str, enum=["read", "write", "delete", "exfil"])])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        requests = self.get_queryset()
        for name in ("status", "action_class"):
            if request.query_params.get(name):
                requests = requests.filter(**{name: request.query_params[name]})
        page = self.paginate_queryset(requests)
        return self.get_paginated_response(self.shown(list(page or [])))


class DecisionSerializer(serializers.Serializer[Any]):
    decision = serializers.ChoiceField(choices=["approve", "reject"])
    justification = serializers.CharField(required=False, allow_blank=True, max_length=2000,
                                          default="")


class ApprovalDecision(_Queue):
    """Approve or reject a request, as the queue page does: by a person (signed in, or with a
    personal access token carrying the approve scope), never by whoever caused it; rejecting
    and exfil need a justification; exfil needs two people."""

    @extend_schema(request=DecisionSerializer, responses={200: QueueEntrySerializer})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        approval = self.get_object()
        body = DecisionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        decide_approval(approval, by=actor_of(request),
                        approve=body.validated_data["decision"] == "approve",
                        justification=body.validated_data["justification"])
        return Response(self.shown([self.get_queryset().get(pk=approval.pk)])[0])
