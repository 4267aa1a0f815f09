"""Admin building blocks: the tenant scope, 404s across tenants, and pages that never count.

Every tenant-owned admin goes through ``TenantScopedAdmin``: its queryset is
``for_user(user, view_role)``, its permissions are roles on tenants (not global model
permissions), and an object outside the user's tenants is a 404, exactly like the API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Model, Q, QuerySet
from django.http import Http404, HttpRequest
from django.utils.functional import cached_property
from simple_history.admin import SimpleHistoryAdmin

from .db_routing import stale_ok
from .roles import Role
from .tenancy import allowed_tenant_ids, roles_of, tenants_for

EXACT_COUNT_UP_TO = 10_000


def estimated_count(qs: QuerySet[Any]) -> int:
    """Exact up to ``EXACT_COUNT_UP_TO`` rows, the planner's estimate beyond (PostgreSQL).

    A capped count reads at most that many index entries, so a page of a 1,000,000-row table
    never pays for ``COUNT(*)`` over all of it.
    """
    capped = qs.order_by()[: EXACT_COUNT_UP_TO + 1].count()
    if capped <= EXACT_COUNT_UP_TO:
        return capped
    connection = connections[qs.db]
    if connection.vendor != "postgresql":
        return capped
    sql, params = qs.order_by().query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        import json

        plan = json.loads(plan)
    return max(capped, int(plan[0]["Plan"]["Plan Rows"]))


class EstimatedCountPaginator(Paginator[Any]):
    @cached_property
    def count(self) -> int:
        return estimated_count(self.object_list)  # type: ignore[arg-type]


def _tenant_of(obj: Model | None) -> int | None:
    return getattr(obj, "tenant_id", None) if obj is not None else None


class TenantFilter(admin.SimpleListFilter):
    """The tenants the viewer may see, never the others (Django's own related filter lists
    every tenant of the installation, naming other customers to any staff user)."""

    title = "tenant"
    parameter_name = "tenant__id__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        role = getattr(model_admin, "view_role", Role.VIEW_LEDGER)
        return [(str(pk), slug) for pk, slug in
                tenants_for(request.user, role).order_by("slug").values_list("pk", "slug")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(tenant_id=value) if value and value.isdigit() else queryset


#: How a row's content fields are redacted and its hash columns committed to for the viewing
#: person: ``presenter(request, obj, content_fields, hash_fields)`` returns ``obj`` changed
#: for display. The redaction engine is the ledger's, a layer above this module, so the ledger
#: registers it (``RunsConfig.ready``).
ContentPresenter = Callable[[HttpRequest, Any, tuple[str, ...], tuple[str, ...]], Any]
_content_presenters: list[ContentPresenter] = []


def register_content_presenter(presenter: ContentPresenter) -> None:
    _content_presenters[:] = [presenter]


class TenantScopedAdmin(admin.ModelAdmin[Any]):  # one base for every model's admin
    view_role: ClassVar[str] = Role.VIEW_LEDGER
    edit_role: ClassVar[str | None] = None  # None: read-only in the admin
    # Fields that carry agent content: every change list and read-only change page shows them
    # through the redaction engine at the viewer's level (strict), markers as their text.
    content_fields: ClassVar[tuple[str, ...]] = ()
    # Hash columns over agent content: shown as keyed commitments (runs/commitments.py), since
    # a plain hash would let a strict reader test guesses of what the redaction hides.
    hash_fields: ClassVar[tuple[str, ...]] = ()
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    # Facet counts are a COUNT per filter choice: out of the question over big tables.
    show_facets = admin.ShowFacets.NEVER

    @staticmethod
    def _roles(request: HttpRequest) -> dict[str, frozenset[int]] | None:
        """The user's roles, loaded once per request (None: a superuser, who has them all)."""
        user = request.user
        if user.is_active and user.is_superuser:
            return None
        if "_tenant_roles" not in request.__dict__:
            request.__dict__["_tenant_roles"] = roles_of(user)
        roles: dict[str, frozenset[int]] = request.__dict__["_tenant_roles"]
        return roles

    def tenant_ids(self, request: HttpRequest) -> list[int] | None:
        """The user's tenants for ``view_role`` (None: all of them), as the querysets see them
        (``allowed_tenant_ids``), from the roles read once for this request."""
        roles = self._roles(request)
        allowed = allowed_tenant_ids(request.user, self.view_role, roles=roles or {})
        return None if allowed is None else sorted(allowed)

    def get_list_filter(self, request: HttpRequest) -> Any:
        return [TenantFilter if f == "tenant" else f for f in super().get_list_filter(request)]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        ids = self.tenant_ids(request)
        return queryset if ids is None else queryset.filter(tenant_id__in=ids)

    def _has(self, request: HttpRequest, role: str | None, obj: Model | None) -> bool:
        if role is None:
            return False
        roles = self._roles(request)
        if roles is None:
            return True
        tenants = roles.get(role, frozenset())
        tenant_id = _tenant_of(obj)
        return bool(tenants) if obj is None else tenant_id in tenants

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._has(request, self.view_role, None)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._has(request, self.view_role, obj) or self.has_change_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return self._has(request, self.edit_role, None)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._has(request, self.edit_role, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def _get_obj_does_not_exist_redirect(self, request: HttpRequest, opts: Any,
                                         object_id: str) -> Any:
        # Django redirects to the index with a message; across tenants we answer 404, the
        # same as the API, so an id outside your tenants tells you nothing.
        raise Http404(f"No {opts.verbose_name} with id {object_id!r} in your tenants.")

    def present(self, request: HttpRequest, obj: Any, hashes: bool = True) -> Any:
        """``obj`` with its content fields redacted for this viewer and (``hashes``) its hash
        columns as commitments, to show and never save."""
        if obj is None or not (self.content_fields or self.hash_fields):
            return obj
        if not _content_presenters:  # never show ledger content without its redaction
            raise ImproperlyConfigured("no content presenter is registered (the runs app "
                                       "registers one)")
        return _content_presenters[0](request, obj, self.content_fields,
                                      self.hash_fields if hashes else ())

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        obj = super().get_object(request, object_id, from_field)
        if obj is None or not (self.content_fields or self.hash_fields):
            return obj
        # Only where the content is read-only for this viewer: nothing saves it back (a save
        # of an editable page must never write a marker over what was recorded).
        if (not self.has_change_permission(request, obj)
                or set(self.content_fields) <= set(self.get_readonly_fields(request, obj))):
            obj = self.present(request, obj)
        return obj

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)
        listed = set(self.get_list_display(request))
        hashes = any(name in listed for name in self.hash_fields)  # a list shows none so far
        changelist.result_list = [self.present(request, obj, hashes)
                                  for obj in changelist.result_list]
        return changelist

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest,
                                 **kwargs: Any) -> Any:
        if db_field.name == "tenant" and self.edit_role:
            kwargs["queryset"] = tenants_for(request.user, self.edit_role)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ExactSearchAdmin(TenantScopedAdmin):
    """Search by exact external ids, each resolved through its own unique index.

    Django's ``=field`` search ORs case-insensitive ``UPPER()`` matches across joins, which no
    index serves (about 1 s over 1,000,000 tool calls); here each id kind is looked up on its
    index first and only the kinds that match become conditions.
    """

    def search_conditions(self, request: HttpRequest, term: str) -> list[Q]:
        return []

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any],
                           search_term: str) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        conditions = self.search_conditions(request, term)
        if not conditions:
            return queryset.none(), False
        combined = conditions[0]
        for condition in conditions[1:]:
            combined |= condition
        return queryset.filter(combined), False

    def matching_pks(self, request: HttpRequest, model: type[Model], **lookup: Any) -> list[int]:
        found = model._default_manager.filter(**lookup)
        ids = self.tenant_ids(request)
        if ids is not None:
            found = found.filter(tenant_id__in=ids)
        return list(found.values_list("pk", flat=True)[:1000])


class LedgerRecordAdmin(ExactSearchAdmin):
    """Ledger rows: viewable in the user's tenants, never editable.

    Newest first by primary key, and sortable only by indexed columns, so every page is an
    index scan however big the table.
    """

    ordering = ["-id"]
    sortable_by = ["started_at", "recorded_at"]
    hash_fields = ("content_hash", "chain_hash", "head_hash")

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        # Agents write these rows, not the reader: a list seconds behind is fine, and may come
        # from the read replica (core/db_routing.py). A POST (an action) is a write: primary.
        if request.method != "GET":
            return super().changelist_view(request, extra_context)
        return stale_ok(super().changelist_view)(request, extra_context)

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        return [f.name for f in self.model._meta.fields]


class ScopedHistoryAdmin(SimpleHistoryAdmin):  # type: ignore[misc]  # untyped library
    """simple-history's views, limited to objects in the user's scope.

    Its history view falls back to the historical rows of objects it cannot find, which would
    answer 403 (and so confirm existence) for another tenant's object; we answer 404 first.
    """

    def _in_scope_or_404(self, request: HttpRequest, object_id: str) -> None:
        if not self.get_queryset(request).filter(pk=unquote(object_id)).exists():
            raise Http404("Not found among your tenants.")

    def history_view(self, request: HttpRequest, object_id: str,
                     extra_context: Any = None) -> Any:
        self._in_scope_or_404(request, object_id)
        return super().history_view(request, object_id, extra_context)

    def get_history_queryset(self, request: HttpRequest, history_manager: Any, pk_name: str,
                             object_id: Any) -> QuerySet[Any]:
        # The object is in scope (checked first); its history is read in the same scope, so the
        # page never depends on that check alone.
        queryset: QuerySet[Any] = super().get_history_queryset(request, history_manager,
                                                               pk_name, object_id)
        ids = self.tenant_ids(request) if hasattr(self, "tenant_ids") else None
        has_tenant = any(f.attname == "tenant_id" for f in queryset.model._meta.fields)
        return queryset.filter(tenant_id__in=ids) if ids is not None and has_tenant else queryset

    def revert_allowed(self, obj: Any) -> bool:
        """Whether the object, as it is now, may be reverted to an earlier version. Immutable
        and state-machine objects say no: their changes go through their services only."""
        return True

    def _current(self, request: HttpRequest, obj: Model | None) -> Model | None:
        # simple-history hands us the historical instance; what counts is the object now, as
        # the user's scope has it.
        if obj is None or obj.pk is None:
            return obj
        return self.get_queryset(request).filter(pk=obj.pk).first() or obj

    def revert_disabled(self, request: HttpRequest, obj: Model | None = None) -> bool:
        current = self._current(request, obj)
        if current is not None and not self.revert_allowed(current):
            return True
        return bool(super().revert_disabled(request, obj))

    def history_form_view(self, request: HttpRequest, object_id: str, version_id: str,
                          extra_context: Any = None) -> Any:
        self._in_scope_or_404(request, object_id)
        if request.method == "POST":
            current = self.get_queryset(request).get(pk=unquote(object_id))
            if not self.revert_allowed(current):
                raise PermissionDenied(f"{current} cannot be reverted: it is immutable or "
                                       "changes only through its own actions.")
        return super().history_form_view(request, object_id, version_id, extra_context)
