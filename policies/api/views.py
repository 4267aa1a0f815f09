"""Decision API: an agent proposes a tool call and learns whether it may go ahead."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.authentication import refuse_unbound_agent
from core.api.scoping import TenantScopedViewMixin
from core.models import ApiKey, Tenant
from core.payload_safety import external_id_validator, unsafe_paths
from core.roles import Role
from core.tenancy import allowed_tenant_ids
from runs.models import ActionClass

from .. import services
from ..models import AGENT_MODES, Decision, Effect, Mode


class ProposedCallSerializer(serializers.Serializer[Any]):
    run_id = serializers.CharField(max_length=200, required=False, default="",
                                   validators=[external_id_validator])
    call_id = serializers.CharField(max_length=200, required=False, default="",
                                   validators=[external_id_validator])
    agent_id = serializers.CharField(max_length=200, required=False, default="",
                                   validators=[external_id_validator])
    tool = serializers.CharField(max_length=200, validators=[external_id_validator])
    action_class = serializers.ChoiceField(choices=ActionClass.choices)
    arguments = serializers.DictField(required=False, default=dict)
    mode = serializers.ChoiceField(choices=AGENT_MODES, default=Mode.LIVE)
    approval_id = serializers.IntegerField(required=False, allow_null=True, default=None,
                                           help_text="Ask again under an approval request.")


#: One instance validates every request: a serializer deep-copies its declared fields each time
#: it is made (0.2 ms of a decision), and validating leaves nothing on the instance.
_PROPOSED = ProposedCallSerializer()


class DecisionSerializer(serializers.ModelSerializer[Decision]):
    policy = serializers.SerializerMethodField()
    approval = serializers.SerializerMethodField()

    class Meta:
        model = Decision
        fields = ["id", "effect", "reason", "policy", "matched_rules", "engine",
                  "engine_answers", "latency_us", "approval", "run_id", "call_id", "agent_id",
                  "tool", "action_class", "declared_action_class", "mode", "replay",
                  "created_at"]

    def get_policy(self, decision: Decision) -> dict[str, Any] | None:
        return _policy_of(decision)

    def get_approval(self, decision: Decision) -> dict[str, Any] | None:
        return _approval_of(decision)


def _policy_of(decision: Decision) -> dict[str, Any] | None:
    version = decision.policy_version
    if version is None:
        return None
    return {"name": version.policy.name, "version": version.number,
            "checksum": version.checksum}


def _approval_of(decision: Decision) -> dict[str, Any] | None:
    if decision.approval_id is None:
        return None
    approval = decision.approval
    assert approval is not None
    return {"id": approval.pk, "status": approval.status,
            "consumed": approval.consumed_by_id == decision.pk,
            "poll": reverse("api:approval-detail", args=[approval.pk])}


_CREATED_AT = serializers.DateTimeField()


def decision_answer(decision: Decision) -> dict[str, Any]:
    """``DecisionSerializer(decision).data``, written out: a ModelSerializer builds its fields
    anew for every instance, about 1 ms of each decision (bench/decisions.py); a test holds
    the two equal."""
    return {
        "id": decision.pk, "effect": decision.effect, "reason": decision.reason,
        "policy": _policy_of(decision),
        "matched_rules": decision.matched_rules, "engine": decision.engine,
        "engine_answers": decision.engine_answers, "latency_us": decision.latency_us,
        "approval": _approval_of(decision),
        "run_id": decision.run_id, "call_id": decision.call_id, "agent_id": decision.agent_id,
        "tool": decision.tool, "action_class": decision.action_class,
        "declared_action_class": decision.declared_action_class, "mode": decision.mode,
        "replay": decision.replay_id, "created_at": _CREATED_AT.to_representation(
            decision.created_at)}


class DecisionCreate(APIView):
    """Decide a proposed tool call under the tenant's published policies.

    The decision is stored either way (the policy trail). ``require_approval`` comes with an
    approval request to poll at ``GET /api/v1/approvals/<id>/?wait=N``; once approved, ask
    again with ``approval_id`` and the same tool and arguments.
    """

    @extend_schema(request=ProposedCallSerializer, responses={201: DecisionSerializer})
    def post(self, request: Request) -> Response:
        tenant = self._tenant(request)
        unsafe = unsafe_paths(request.data)
        if unsafe:  # nothing unsafe is decided on or stored in the policy trail
            raise ValidationError(unsafe)
        proposed = _PROPOSED.run_validation(request.data)
        refuse_unbound_agent(request.user, proposed["agent_id"])
        decision = services.decide_tool_call(
            tenant, services.ProposedCall(**proposed), asked_by=str(request.user),
            requester=request.user if getattr(request.user, "pk", None) else None,
            requester_key=getattr(request.user, "api_key", None))
        return Response(decision_answer(decision), status=status.HTTP_201_CREATED)

    @staticmethod
    def _tenant(request: Request) -> Tenant:
        key: ApiKey | None = getattr(request.user, "api_key", None)
        if key is not None and key.tenant_id in (
                allowed_tenant_ids(request.user, Role.INGEST) or ()):
            return key.tenant  # read with the key, this request: no second query
        tenants = Tenant.objects.for_user(request.user, Role.INGEST)
        slug = request.query_params.get("tenant")
        if getattr(request.user, "api_key_tenant_id", None) is None:
            tenants = tenants.filter(slug=slug) if slug else tenants.none()
        tenant = tenants.first()
        if tenant is None:
            raise PermissionDenied("Deciding needs the ingest role (API keys: the ingest scope); "
                                   "people name the tenant with ?tenant=<slug>.")
        return tenant


class DecisionFilter(django_filters.FilterSet):  # type: ignore[misc]  # untyped library
    # The replay's id, compared as a number: the generated filter would look it up among every
    # tenant's replays and refuse only an id that exists nowhere, telling another tenant's
    # replays apart from ids that do not exist.
    replay = django_filters.NumberFilter(field_name="replay_id")

    class Meta:
        model = Decision
        fields = ["run_id", "call_id", "tool", "effect", "mode", "replay"]


class DecisionList(TenantScopedViewMixin, generics.ListAPIView[Decision]):
    """The policy trail: every decision, newest first. A run's trail is what was decided when
    it ran; the decisions a replay took are that replay's (``?replay=<id>``)."""

    serializer_class = DecisionSerializer
    role = Role.VIEW_LEDGER
    scoped_model = Decision
    filterset_class = DecisionFilter

    def get_queryset(self) -> QuerySet[Any]:
        queryset = self.scoped_queryset().select_related("policy_version__policy", "approval")
        if "replay" not in self.request.query_params:
            queryset = queryset.filter(replay__isnull=True)
        return queryset


__all__ = ["DecisionCreate", "DecisionList", "Effect"]
