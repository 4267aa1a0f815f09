"""The tenant scope, as API views use it.

Lists and details share one queryset, so another tenant's id is a 404. A person with several
tenants may narrow any route with ``?tenant=<slug>``; an external id found in more than one of
their tenants is a 400 that asks for it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import Model, QuerySet
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import GenericAPIView


class TenantScopedViewMixin(GenericAPIView[Any]):  # one mixin for every model's views
    role: ClassVar[str]
    scoped_model: ClassVar[type[Model]]

    def scoped_queryset(self) -> QuerySet[Any]:
        qs: QuerySet[Any] = self.scoped_model.objects.for_user(  # type: ignore[attr-defined]
            self.request.user, self.role)
        slug = self.request.query_params.get("tenant")
        if slug:
            qs = qs.filter(tenant__slug=slug)
        return qs

    def get_object(self) -> Any:
        lookup = self.lookup_url_kwarg or self.lookup_field
        queryset = self.get_queryset()
        matches = list(queryset.filter(**{self.lookup_field: self.kwargs[lookup]})[:2])
        if not matches:
            raise NotFound()
        if len(matches) > 1:
            raise ValidationError({"tenant": f"{self.kwargs[lookup]!r} exists in several of "
                                   "your tenants; pass ?tenant=<slug>."})
        self.check_object_permissions(self.request, matches[0])
        return matches[0]
