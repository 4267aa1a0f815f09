"""Governance from the API: policy versions, back-tests and governed exceptions, through the
same services (roles, four-eyes, windows) as the admin and the ``ledger`` command."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from core.actors import actor_of
from core.api.scoping import TenantScopedViewMixin
from core.roles import Role
from runs.links import timeline_url
from runs.models import ActionClass

from ..backtest import MAX_NARROWING, start_backtest
from ..exceptions import grant_exception, request_exception, revoke_exception
from ..models import BackTest, BackTestChange, Effect, GovernedException, PolicyVersion


class VersionSerializer(serializers.ModelSerializer[PolicyVersion]):
    tenant = serializers.CharField(source="tenant.slug")
    policy = serializers.CharField(source="policy.name")
    author = serializers.CharField(source="author.username", default=None)
    publisher = serializers.CharField(source="publisher.username", default=None)

    class Meta:
        model = PolicyVersion
        fields = ["id", "tenant", "policy", "number", "status", "default_effect", "engine",
                  "change_note", "author", "publisher", "created_at", "published_at",
                  "retired_at", "checksum"]


class VersionFilter(django_filters.FilterSet):  # type: ignore[misc]  # untyped library
    policy = django_filters.CharFilter(field_name="policy__name")

    class Meta:
        model = PolicyVersion
        fields = ["policy", "status"]


class VersionList(TenantScopedViewMixin, generics.ListAPIView[PolicyVersion]):
    """The versions of the policies you govern, newest first (``?policy=``, ``?status=``)."""

    serializer_class = VersionSerializer
    role = Role.MANAGE_POLICIES
    scoped_model = PolicyVersion
    filterset_class = VersionFilter

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped_queryset().select_related("tenant", "policy", "author", "publisher")


class BackTestSerializer(serializers.ModelSerializer[BackTest]):
    tenant = serializers.CharField(source="tenant.slug")
    version = serializers.SerializerMethodField()
    percent = serializers.IntegerField()
    requested_by = serializers.CharField(source="requested_by.username", default=None)

    class Meta:
        model = BackTest
        fields = ["id", "tenant", "version", "window_from", "window_to", "agents", "tools",
                  "status", "total", "processed", "percent", "changed", "redacted_calls",
                  "counts", "error",
                  "requested_by", "created_at", "finished_at"]

    def get_version(self, test: BackTest) -> dict[str, Any]:
        return {"id": test.version_id, "policy": test.version.policy.name,
                "number": test.version.number, "status": test.version.status}


class StartBackTestSerializer(serializers.Serializer[Any]):
    window_from = serializers.DateTimeField()
    window_to = serializers.DateTimeField()
    agents = serializers.ListField(child=serializers.CharField(max_length=200), required=False,
                                   default=list, max_length=MAX_NARROWING)
    tools = serializers.ListField(child=serializers.CharField(max_length=200), required=False,
                                  default=list, max_length=MAX_NARROWING)


class BackTestStart(TenantScopedViewMixin, generics.GenericAPIView[PolicyVersion]):
    """Queue a back-test of a version over the calls recorded in a window (202: poll the
    back-test's ``status`` and ``percent``)."""

    serializer_class = StartBackTestSerializer
    role = Role.MANAGE_POLICIES
    scoped_model = PolicyVersion
    lookup_url_kwarg = "version_id"

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped_queryset().select_related("policy")

    @extend_schema(request=StartBackTestSerializer, responses={202: BackTestSerializer})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        version = self.get_object()
        body = StartBackTestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        test = start_backtest(version, by=actor_of(request), **body.validated_data)
        return Response(BackTestSerializer(test).data, status=status.HTTP_202_ACCEPTED)


class _BackTests(TenantScopedViewMixin, generics.GenericAPIView[BackTest]):
    serializer_class = BackTestSerializer
    role = Role.MANAGE_POLICIES
    scoped_model = BackTest
    lookup_url_kwarg = "backtest_id"

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped_queryset().select_related("tenant", "version__policy",
                                                     "requested_by")


class BackTestList(_BackTests, generics.ListAPIView[BackTest]):
    """Back-tests of the policies you govern, newest first."""


class BackTestDetail(_BackTests, generics.RetrieveAPIView[BackTest]):
    """One back-test: its progress, then per tool the calls before and after."""


class BackTestChangeSerializer(serializers.ModelSerializer[BackTestChange]):
    timeline = serializers.SerializerMethodField()

    class Meta:
        model = BackTestChange
        fields = ["id", "call_id", "run_id", "tool", "before", "after", "rules", "timeline"]

    def get_timeline(self, change: BackTestChange) -> str:
        url = timeline_url(self.context["tenant_slug"], change.run_id)
        return f"{url}#tool_call-{change.call_id}" if url else ""


class BackTestChanges(TenantScopedViewMixin, generics.ListAPIView[BackTestChange]):
    """Every call the back-tested version would decide differently, with its timeline link."""

    serializer_class = BackTestChangeSerializer
    role = Role.MANAGE_POLICIES
    scoped_model = BackTestChange

    def _test(self) -> BackTest:
        test = BackTest.objects.for_user(self.request.user, self.role).select_related(
            "tenant").filter(pk=self.kwargs["backtest_id"]).first()
        if test is None:
            raise NotFound()
        return test

    def get_queryset(self) -> QuerySet[Any]:
        if getattr(self, "swagger_fake_view", False):  # the schema generator, with no id
            return BackTestChange.objects.none()
        test = self._test()
        return self.scoped_queryset().filter(tenant_id=test.tenant_id, backtest=test)

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "tenant_slug": self._test().tenant.slug}


class ExceptionSerializer(serializers.ModelSerializer[GovernedException]):
    tenant = serializers.CharField(source="tenant.slug", read_only=True)
    policy_version = serializers.PrimaryKeyRelatedField(queryset=PolicyVersion.objects.none())
    requested_by = serializers.CharField(source="requested_by.username", default=None,
                                         read_only=True)
    granted_by = serializers.CharField(source="granted_by.username", default=None,
                                       read_only=True)
    second_grantor = serializers.CharField(source="second_grantor.username", default=None,
                                           read_only=True)
    action_class = serializers.ChoiceField(choices=[("", "any"), *ActionClass.choices],
                                           required=False, default="")
    effect = serializers.ChoiceField(choices=Effect.choices, default=Effect.ALLOW)

    class Meta:
        model = GovernedException
        fields = ["id", "tenant", "policy_version", "tool", "agent_id", "action_class",
                  "effect", "justification", "starts_at", "ends_at", "status", "requested_by",
                  "granted_by", "second_grantor", "created_at"]
        read_only_fields = ["status", "created_at"]

    def to_representation(self, instance: GovernedException) -> dict[str, Any]:
        # People write justifications from what agents did (a ticket, a customer's case): they
        # are shown redacted like ledger content (strict), as in the exports.
        from runs.redaction import as_text
        from runs.services import redactor_for

        shown: dict[str, Any] = super().to_representation(instance)
        redactor = redactor_for(None, instance.tenant_id).redactor
        shown["justification"] = as_text(redactor.redact_fields(
            {"justification": instance.justification}, ("justification",))["justification"])
        return shown

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is not None:
            # Published versions of the tenants where the person may ask: another tenant's
            # version id is "does not exist", like every other id outside your tenants.
            field: Any = self.fields["policy_version"]  # a PrimaryKeyRelatedField
            field.queryset = askable_versions(request.user)


def askable_versions(user: Any) -> QuerySet[PolicyVersion]:
    from core.tenancy import allowed_tenant_ids

    ids: set[int] = set()
    for role in (Role.OPERATE, Role.MANAGE_POLICIES):
        allowed = allowed_tenant_ids(user, role)
        if allowed is None:
            return PolicyVersion.objects.all()
        ids |= set(allowed)
    return PolicyVersion.objects.filter(tenant_id__in=ids)


class ExceptionFilter(django_filters.FilterSet):  # type: ignore[misc]  # untyped library
    class Meta:
        model = GovernedException
        fields = ["status", "tool", "agent_id"]


class ExceptionList(TenantScopedViewMixin, generics.ListCreateAPIView[GovernedException]):
    """Governed exceptions of the tenants you govern, newest first; POST asks for one (it
    takes effect once someone else grants it, two people when it can cover exfil)."""

    serializer_class = ExceptionSerializer
    role = Role.MANAGE_POLICIES
    scoped_model = GovernedException
    filterset_class = ExceptionFilter

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped_queryset().select_related(
            "tenant", "requested_by", "granted_by", "second_grantor")

    def perform_create(self, serializer: Any) -> None:
        data = dict(serializer.validated_data)
        version = data.pop("policy_version")
        serializer.instance = request_exception(version.tenant, by=actor_of(self.request),
                                                policy_version=version, **data)


class _ExceptionStep(TenantScopedViewMixin, generics.GenericAPIView[GovernedException]):
    serializer_class = ExceptionSerializer
    role = Role.MANAGE_POLICIES
    scoped_model = GovernedException
    lookup_url_kwarg = "exception_id"
    step: Any

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped_queryset()

    @extend_schema(request=None, responses={200: ExceptionSerializer})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        exc = type(self).step(self.get_object(), by=actor_of(request))
        return Response(ExceptionSerializer(exc, context={"request": request}).data)


class ExceptionGrant(_ExceptionStep):
    """Grant an exception someone else asked for (exfil: the second grant activates it)."""

    step = staticmethod(grant_exception)


class ExceptionRevoke(_ExceptionStep):
    """Revoke an exception: it stops applying at once."""

    step = staticmethod(revoke_exception)
