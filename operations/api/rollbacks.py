"""Rollback API: ask for the compensation of a tool call (or a whole run) and follow it."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.exceptions import ValidationError as BadRequest
from rest_framework.request import Request
from rest_framework.response import Response

from core.actors import actor_of
from core.api.scoping import TenantScopedViewMixin
from core.roles import Role
from runs.api.views import Redaction
from runs.models import Run, ToolCall

from ..models import Rollback, RollbackStatus
from ..rollback import find_incident, request_rollback, request_run_rollback

# What the compensate hook answered: its content, redacted like the ledger's (as exports do).
ANSWER_FIELDS = ("outcome", "remaining_side_effects", "attempt_log", "last_error")


class RollbackSerializer(serializers.ModelSerializer[Rollback]):
    """A rollback; the hook's answer redacted by ``context["redaction"]`` (strict without)."""

    tenant: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True)
    call_id = serializers.CharField(source="tool_call.call_id")
    tool = serializers.CharField(source="tool_call.tool.name")
    run_id = serializers.CharField(source="run.run_id")
    status = serializers.ChoiceField(choices=RollbackStatus.choices)
    requested_by = serializers.CharField(source="requested_by_label")
    incident = serializers.IntegerField(source="incident_id", allow_null=True)
    decision = serializers.IntegerField(source="decision_id", allow_null=True,
                                        help_text="The policy decision that let it go ahead.")

    class Meta:
        model = Rollback
        fields = ["id", "tenant", "call_id", "tool", "run_id", "status", "attempts",
                  "attempt_log", "outcome", "remaining_side_effects", "last_error",
                  "idempotency_key", "requested_by", "incident", "decision", "batch", "position",
                  "created_at", "started_at", "finished_at"]

    def to_representation(self, instance: Rollback) -> dict[str, Any]:
        data = super().to_representation(instance)
        redaction = self.context.get("redaction")
        if redaction is None:
            from runs.services import redactor_for

            shown: dict[str, Any] = redactor_for(None, instance.tenant_id).redactor.redact_fields(
                data, ANSWER_FIELDS)
            return shown
        redacted: dict[str, Any] = redaction.fields(data, ANSWER_FIELDS, instance.tenant_id)
        return redacted


class RollbackRequestSerializer(serializers.Serializer[Any]):
    call_id = serializers.CharField(required=False, help_text="The tool call to roll back.")
    run_id = serializers.CharField(required=False, help_text="Roll back every completed, "
                                   "compensable call of this run instead, latest first.")
    incident = serializers.IntegerField(required=False, allow_null=True, default=None,
                                        help_text="The incident this is for (its id).")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if bool(attrs.get("call_id")) == bool(attrs.get("run_id")):
            raise serializers.ValidationError("give one of call_id or run_id")
        return attrs


class RollbackRequestedSerializer(serializers.Serializer[Any]):
    queued = serializers.BooleanField(help_text="False: the call was already rolled back; "
                                      "this is that first rollback.")
    rollbacks = RollbackSerializer(many=True)


class RollbackList(TenantScopedViewMixin, generics.ListCreateAPIView[Rollback]):
    """Rollbacks of your tenants, newest first. POST asks for one (operate role): a call is
    rolled back at most once; asking again returns the first rollback and its outcome."""

    role = Role.VIEW_LEDGER
    scoped_model = Rollback
    serializer_class = RollbackSerializer
    filterset_fields = ["status"]

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped_queryset().select_related("tenant", "tool_call__tool", "run")

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "redaction": Redaction(self.request)}

    @extend_schema(request=RollbackRequestSerializer,
                   responses={202: RollbackRequestedSerializer, 200: RollbackRequestedSerializer})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        form = RollbackRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        slug = request.query_params.get("tenant")
        incident = None
        if data["incident"] is not None:
            incident = find_incident(data["incident"], by=actor_of(request))
            if incident is None:
                raise NotFound("no such incident in your tenants")
        model, lookup = (Run, {"run_id": data["run_id"]}) if data.get("run_id") else (
            ToolCall, {"call_id": data["call_id"]})
        targets = model.objects.for_user(request.user, Role.VIEW_LEDGER).filter(**lookup)
        if slug:
            targets = targets.filter(tenant__slug=slug)
        if incident is not None:
            targets = targets.filter(tenant_id=incident.tenant_id)
        found = list(targets[:2])
        if not found:
            raise NotFound()
        if len(found) > 1:
            raise BadRequest({"tenant": "in several of your tenants; pass ?tenant=<slug>."})
        if data.get("run_id"):
            rollbacks = request_run_rollback(found[0], by=actor_of(request), incident=incident)
            queued = True
        else:
            rollback, queued = request_rollback(found[0], by=actor_of(request),
                                                incident=incident)
            rollbacks = [rollback]
        rows = Rollback.objects.filter(pk__in=[r.pk for r in rollbacks]).select_related(
            "tenant", "tool_call__tool", "run").order_by("position", "id")
        shown = RollbackSerializer(rows, many=True, context=self.get_serializer_context()).data
        return Response({"queued": queued, "rollbacks": shown},
                        status=status.HTTP_202_ACCEPTED if queued else status.HTTP_200_OK)


class RollbackDetail(TenantScopedViewMixin, generics.RetrieveAPIView[Rollback]):
    """A rollback: status, attempts, outcome, remaining side effects, last error."""

    role = Role.VIEW_LEDGER
    scoped_model = Rollback
    serializer_class = RollbackSerializer
    lookup_url_kwarg = "rollback_id"

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped_queryset().select_related("tenant", "tool_call__tool", "run")

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "redaction": Redaction(self.request)}
