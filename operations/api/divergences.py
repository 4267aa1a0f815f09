"""Divergence follow-up API: the flagged steps of your tenants' replays, and what is done
about each (open, queued for fuzz testing, expected, fixed)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from core.actors import actor_of
from core.api.scoping import TenantScopedViewMixin
from core.roles import Role

from ..divergences import divergences_for, set_divergence_follow_up
from ..models import FollowUp, ReplayStep
from ..replay_present import divergence_rows


class FollowUpRequestSerializer(serializers.Serializer[Any]):
    state = serializers.ChoiceField(choices=FollowUp.choices)
    note = serializers.CharField(required=False, allow_blank=True, default="",
                                 help_text="Why; required for expected.")


class DivergenceSerializer(serializers.Serializer[Any]):
    """A flagged step of a replay, its redacted differences and its follow-up."""

    id = serializers.IntegerField()
    tenant = serializers.CharField()
    replay = serializers.IntegerField()
    run_id = serializers.CharField()
    seq = serializers.IntegerField()
    call_id = serializers.CharField()
    tool = serializers.CharField()
    mode_used = serializers.CharField()
    status = serializers.CharField()
    error = serializers.CharField()
    differences = serializers.JSONField()
    created_at = serializers.DateTimeField()
    follow_up = serializers.JSONField()
    page = serializers.CharField()


STATE_FILTER = OpenApiParameter(
    "state", str, enum=[*FollowUp.values, "all"],
    description="The follow-up state (default open); all: every flagged step.")


class DivergenceList(TenantScopedViewMixin, generics.ListAPIView[ReplayStep]):
    """Divergent (flagged) replay steps of your tenants, newest first; open ones by default.
    Filter with ``?state=``, ``?tenant=<slug>`` and ``?tool=<name>``."""

    serializer_class = DivergenceSerializer
    role = Role.VIEW_LEDGER
    scoped_model = ReplayStep

    def get_queryset(self) -> QuerySet[Any]:
        state = self.request.query_params.get("state") or FollowUp.OPEN
        if state != "all" and state not in FollowUp.values:
            raise NotFound(f"no follow-up state {state!r}")
        return divergences_for(self.request.user, state=None if state == "all" else state,
                               tenant=self.request.query_params.get("tenant"),
                               tool=self.request.query_params.get("tool"))

    @extend_schema(parameters=[STATE_FILTER, OpenApiParameter("tool", str)])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        assert page is not None
        return self.get_paginated_response(divergence_rows(page, request.user))


class ReplayStepFollowUp(TenantScopedViewMixin, generics.GenericAPIView[ReplayStep]):
    """A replayed step's follow-up. POST records a new state (operate role; a note is required
    for expected); the change is annotated on the replayed run."""

    serializer_class = DivergenceSerializer
    role = Role.VIEW_LEDGER
    scoped_model = ReplayStep

    def get_object(self) -> ReplayStep:
        step: ReplayStep | None = self.scoped_queryset().filter(
            replay_id=self.kwargs["replay_id"], seq=self.kwargs["seq"]).select_related(
            "tenant", "tool", "replay__run").first()
        if step is None:
            raise NotFound("No such replay step in your tenants.")
        return step

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(divergence_rows([self.get_object()], request.user)[0])

    @extend_schema(request=FollowUpRequestSerializer, responses={200: DivergenceSerializer})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        step = self.get_object()
        asked = FollowUpRequestSerializer(data=request.data)
        asked.is_valid(raise_exception=True)
        step = set_divergence_follow_up(step, by=actor_of(request),
                                        state=asked.validated_data["state"],
                                        note=asked.validated_data["note"])
        return Response(divergence_rows([step], request.user)[0])
