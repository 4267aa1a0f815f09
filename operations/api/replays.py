"""Replay API: start a replay of a recorded run, follow its progress and divergences."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from core.actors import actor_of
from core.api.scoping import TenantScopedViewMixin
from core.roles import Role
from policies.models import PolicyVersion
from runs.models import Run
from runs.services import RedactionNotAllowed, redactor_for

from ..models import Replay, ReplayMode
from ..replay import start_replay
from ..replay_present import REPLAY_RELATED, replay_summary, step_rows


class ReplayRequestSerializer(serializers.Serializer[Any]):
    run_id = serializers.CharField(max_length=200)
    mode = serializers.ChoiceField(choices=ReplayMode.choices, default=ReplayMode.SANDBOX)
    until_step = serializers.IntegerField(min_value=0, required=False, allow_null=True,
                                          default=None, help_text="The last plan step index.")
    policy_version = serializers.IntegerField(required=False, allow_null=True, default=None,
                                              help_text="Pin a policy version (its id).")


class ReplaySerializer(serializers.Serializer[Any]):
    """A replay: status, progress, and (in detail) its steps with their divergences."""

    id = serializers.IntegerField()
    tenant = serializers.CharField()
    run_id = serializers.CharField()
    mode = serializers.ChoiceField(choices=ReplayMode.choices)
    until_step = serializers.IntegerField(allow_null=True)
    status = serializers.CharField()
    policy_version = serializers.JSONField()  # any JSON value, null included
    progress = serializers.JSONField()
    divergent_steps = serializers.IntegerField()
    failure_reason = serializers.CharField()
    requested_by = serializers.CharField()
    approval = serializers.JSONField()  # any JSON value, null included
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    page = serializers.CharField()
    steps = serializers.JSONField(required=False)


class ReplayList(TenantScopedViewMixin, generics.ListAPIView[Replay]):
    """Replays of your tenants, newest first; POST starts one (operate role)."""

    serializer_class = ReplaySerializer
    role = Role.VIEW_LEDGER
    scoped_model = Replay

    def get_queryset(self) -> QuerySet[Any]:
        queryset = self.scoped_queryset().select_related(*REPLAY_RELATED)
        run_id = self.request.query_params.get("run_id")
        return queryset.filter(run__run_id=run_id) if run_id else queryset

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        assert page is not None
        return self.get_paginated_response([replay_summary(r) for r in page])

    @extend_schema(request=ReplayRequestSerializer, responses={201: ReplaySerializer},
                   parameters=[OpenApiParameter("tenant", str, description="The tenant's slug "
                                                "(people with several tenants).")])
    def post(self, request: Request) -> Response:
        asked = ReplayRequestSerializer(data=request.data)
        asked.is_valid(raise_exception=True)
        data = asked.validated_data
        runs = Run.objects.for_user(request.user, Role.OPERATE).filter(run_id=data["run_id"])
        slug = request.query_params.get("tenant")
        if slug:
            runs = runs.filter(tenant__slug=slug)
        found = list(runs.select_related("tenant", "agent")[:2])
        if not found:
            raise NotFound("No such run among the tenants you may operate on.")
        if len(found) > 1:
            raise ValidationError({"tenant": "this run_id is in several of your tenants; pass "
                                   "?tenant=<slug>"})
        run = found[0]
        version = None
        if data["policy_version"] is not None:
            version = PolicyVersion.objects.filter(tenant=run.tenant,
                                                   pk=data["policy_version"]).first()
            if version is None:
                raise ValidationError({"policy_version": "no such version in this tenant"})
        replay = start_replay(run, by=actor_of(request), mode=data["mode"],
                              until_step=data["until_step"], policy_version=version)
        replay = Replay.objects.select_related(*REPLAY_RELATED).get(pk=replay.pk)
        return Response(replay_summary(replay), status=status.HTTP_201_CREATED)


class ReplayDetail(TenantScopedViewMixin, generics.RetrieveAPIView[Replay]):
    """One replay with its steps (outputs redacted at ``?redaction=``, strict by default)."""

    serializer_class = ReplaySerializer
    role = Role.VIEW_LEDGER
    scoped_model = Replay
    lookup_field = "pk"
    lookup_url_kwarg = "replay_id"

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped_queryset().select_related(*REPLAY_RELATED)

    @extend_schema(parameters=[OpenApiParameter("redaction", str, enum=["strict", "standard",
                                                                        "none"])])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        replay = self.get_object()
        try:
            view = redactor_for(request.user, replay.tenant_id,
                                request.query_params.get("redaction"),
                                viewing=f"replay {replay.pk} (API)")
        except RedactionNotAllowed as exc:
            raise PermissionDenied(str(exc)) from None
        body = replay_summary(replay)
        body["redaction"] = view.level
        body["steps"] = step_rows(replay, view)
        return Response(body)
