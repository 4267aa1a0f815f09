"""Annotation API: record a manual intervention (policy change, approval, override...) on a run.

Thin: find the run in the reader's scope (another tenant's run is a 404), validate the shape,
call ``runs.services.annotate_run`` (which checks the operate role and the content).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.exceptions import ValidationError as BadRequest
from rest_framework.request import Request
from rest_framework.response import Response

from core.actors import actor_of
from core.api.scoping import TenantScopedViewMixin
from core.payload_safety import EXTERNAL_ID_RULE, is_external_id, unsafe_paths
from core.roles import Role

from .. import services
from ..models import Annotation, Run
from . import presenters as p
from .serializers import AnnotationSerializer


class AnnotationRequestSerializer(serializers.Serializer[Any]):
    body = serializers.CharField(max_length=services.ANNOTATION_BODY_MAX,
                                 help_text="What was done and why (plain text).")
    kind = serializers.ChoiceField(choices=[*services.MANUAL_ANNOTATION_KINDS,
                                            *services.MANUAL_KIND_WORDS],
                                   default="note")
    data = serializers.DictField(  # type: ignore[assignment]  # a field named data
        required=False, default=dict, help_text="Structured details: ticket ids, the policy "
        "version, the approver... (a JSON object).")
    target_call_id = serializers.CharField(required=False, default="", allow_blank=True,
                                           max_length=200,
                                           help_text="A tool call of this run it is about.")

    def validate_target_call_id(self, value: str) -> str:
        if value and not is_external_id(value):
            raise serializers.ValidationError(f"an id is {EXTERNAL_ID_RULE}")
        return value


class RunAnnotationCreated(AnnotationSerializer):
    kind = serializers.CharField(help_text="Always annotation.")
    run_id = serializers.CharField()
    tenant = serializers.SlugField()


@extend_schema(parameters=[OpenApiParameter(
    "tenant", str, description="Narrow to one of your tenants (by slug)."), OpenApiParameter(
    "redaction", str, enum=["strict", "standard", "none"],
    description="Redaction of the annotation returned (strict by default).")])
class RunAnnotations(TenantScopedViewMixin, generics.GenericAPIView[Run]):
    """Append an annotation to a run's hash chain (operate role), authored by the caller.

    The runbook's "record manual interventions as ledger annotations": it shows in the run's
    timeline, is covered by ``ledger verify`` and exported with the run. Annotations are
    append-only: a mistake is corrected with another (kind ``correction``).
    """

    role = Role.VIEW_LEDGER  # found by readers; writing needs operate (the service checks)
    scoped_model = Run
    lookup_field = "run_id"
    serializer_class = AnnotationRequestSerializer

    def get_queryset(self) -> Any:
        return self.scoped_queryset()

    @extend_schema(request=AnnotationRequestSerializer, responses={201: RunAnnotationCreated})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        run = self.get_object()
        unsafe = unsafe_paths(request.data)
        if unsafe:  # before anything else: nothing unsafe reaches the service or the store
            raise BadRequest(unsafe)
        form = AnnotationRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        try:
            redaction = services.redactor_for(request.user, run.tenant_id,
                                              request.query_params.get("redaction"),
                                              viewing=f"an annotation of run {run.run_id} "
                                              "(API)")
            note = services.annotate_run(run, by=actor_of(request), body=data["body"],
                                         kind=data["kind"], data=data["data"],
                                         target_call_id=data["target_call_id"])
        except Run.DoesNotExist:
            raise NotFound() from None
        row = p.renamed(p.values_of(Annotation.objects.filter(pk=note.pk), p.ANNOTATION_FIELDS))[0]
        row = redaction.redact_row("annotation", row)
        row.update(kind="annotation", run_id=run.run_id, tenant=note.tenant.slug)
        return Response(row, status=status.HTTP_201_CREATED)
