"""Admin building blocks: the tenant scope, 404s across tenants, and pages that never count.

Every tenant-owned admin goes through ``TenantScopedAdmin``: its queryset is
``for_user(user, view_role)``, its permissions are roles on tenants (not global model
permissions), and an object outside the user's tenants is a 404, exactly like the API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import JSONField, Model, Q, QuerySet, TextField
from django.http import Http404, HttpRequest
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _
from simple_history.admin import SimpleHistoryAdmin

from .db_routing import stale_ok
from .partition_keys import keys_in_side_table
from .roles import Role
from .tenancy import allowed_tenant_ids, roles_of, tenants_for

EXACT_COUNT_UP_TO = 10_000
# From this offset on, a superuser's plain list of a partitioned record table finds its page's
# keys in the table's side table of keys (core/partition_keys.py): a shallower offset costs
# the month partitions' merge little.
SIDE_TABLE_FROM_OFFSET = 10_000
# A changelist's parameters that filter nothing: the sort, the page, the search (which names
# its tenants itself: ``ExactSearchAdmin.matching_pks``), the popup and error markers.
_NOT_FILTERS = frozenset({"o", "p", "q", "e", "_to_field", "_popup", "all"})


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
    # the joins list_select_related adds change no count: plan without them
    sql, params = qs.order_by().select_related(None).query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
        if isinstance(plan, str):
            import json

            plan = json.loads(plan)
        # The planner counts at least one row for every partition it scans, empty or not
        # (next months', made ahead): not rows anybody can page to.
        cursor.execute("SELECT relname FROM pg_class WHERE relispartition AND reltuples = 0")
        empty = {name for (name,) in cursor.fetchall()}
    top = plan[0]["Plan"]
    return max(capped, int(top["Plan Rows"] - _rows_in(top, empty)))


def _rows_in(node: dict[str, Any], relations: set[str]) -> float:
    """The rows ``node``'s plan expects from scans of ``relations``."""
    own = node["Plan Rows"] if node.get("Relation Name") in relations else 0
    return own + sum(_rows_in(child, relations) for child in node.get("Plans", ()))


class EstimatedCountPaginator(Paginator[Any]):
    @cached_property
    def count(self) -> int:
        return estimated_count(self.object_list)  # type: ignore[arg-type]


class SeekPaginator(EstimatedCountPaginator):
    """Pages of a big ordered queryset whose rows are found by key.

    Every page is one statement: the rows whose keys a narrow subquery picks,
    ``WHERE id IN (SELECT id ... ORDER BY <the list's order> LIMIT n OFFSET o)``. The
    subquery reads only the index that serves the tenant scope, the filter and the order
    (an index-only scan), so an OFFSET, however deep, walks index entries, never wide rows,
    and the planner cannot prefer walking the primary key past another tenant's rows. The
    whole rows are read for the page's keys only.

    The last page, when the count is an estimate (beyond ``EXACT_COUNT_UP_TO``), is the
    keys of the reversed order: the oldest rows, read from the far end of the index, however
    far off the estimate is (a page numbered by it could otherwise be empty).

    A deep page of a whole partitioned table in key order (a superuser's plain list) takes
    its keys from the table's side table instead (``keys_in_side_table``).
    """

    def page(self, number: Any) -> Any:
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        queryset = self.object_list
        if not isinstance(queryset, QuerySet) or not connections[
                queryset.db].features.allow_sliced_subqueries_with_in:
            return self._get_page(queryset[bottom:top], number, self)  # type: ignore[attr-defined]
        if number == self.num_pages and number > 1 and self.count > EXACT_COUNT_UP_TO:
            keys = queryset.reverse().values("pk")[: self.per_page]
        elif bottom >= SIDE_TABLE_FROM_OFFSET and (
                side := keys_in_side_table(queryset, bottom, top - bottom)) is not None:
            keys = side
        else:
            keys = queryset.values("pk")[bottom:top]
        return self._get_page(  # type: ignore[attr-defined]
            queryset.filter(pk__in=keys), number, self)


class SeekChangeList(ChangeList):
    """A changelist whose ties are broken by the key in the direction of the sort: Django
    appends the admin's ``-id`` (or ``-pk``) whatever the direction, so an ascending sort
    (``started_at, -id``) could use no index; ``started_at, id`` is the (tenant, started_at,
    id) index read backwards."""

    def get_ordering(self, request: HttpRequest, queryset: QuerySet[Any]) -> list[Any]:
        ordering = list(super().get_ordering(request, queryset))
        pk = self.lookup_opts.pk
        descending_key = {"-pk", f"-{pk.name}", f"-{pk.attname}"}
        if (len(ordering) > 1 and ordering[-1] in descending_key
                and isinstance(ordering[0], str) and not ordering[0].startswith("-")):
            ordering[-1] = "pk"
        return ordering

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> Any:
        # The list never shows the big JSON and text columns it does not list (a tool call's
        # input and output, a run's goal and metadata): not read, not decoded, not redacted.
        queryset = super().get_queryset(request, exclude_parameters)
        if not getattr(self.model_admin, "lean_changelist", False):
            return queryset
        unlisted = unlisted_heavy_fields(self.model, self.list_display,
                                         self.list_select_related)
        return queryset.defer(*unlisted) if unlisted else queryset


def _heavy(model: type[Model]) -> list[str]:
    return [f.name for f in model._meta.concrete_fields
            if isinstance(f, JSONField | TextField)]


def unlisted_heavy_fields(model: type[Model], list_display: Any,
                          select_related: Any) -> list[str]:
    """The JSON and text columns of ``model`` (and of the rows it selects along, one level)
    that the list does not display. ``classifications`` stays when a listed column is
    content, since redacting it reads the labels."""
    listed = {name for name in list_display if isinstance(name, str)}
    names = [name for name in _heavy(model) if name not in listed
             and not (name == "classifications" and listed & set(_heavy(model)))]
    for relation in select_related if isinstance(select_related, list | tuple) else ():
        if "__" in relation:
            continue
        related = model._meta.get_field(relation).related_model
        if isinstance(related, type):
            names += [f"{relation}__{name}" for name in _heavy(related)]
    return names


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


def _present_required() -> ContentPresenter:
    if not _content_presenters:  # never show ledger content without its redaction
        raise ImproperlyConfigured("no content presenter is registered (the runs app "
                                   "registers one)")
    return _content_presenters[0]


class TenantScopedAdmin(admin.ModelAdmin[Any]):  # one base for every model's admin
    view_role: ClassVar[str] = Role.VIEW_LEDGER
    edit_role: ClassVar[str | None] = None  # None: read-only in the admin
    # Fields that carry agent content: every change list and read-only change page shows them
    # through the redaction engine at the viewer's level (strict), markers as their text.
    content_fields: ClassVar[tuple[str, ...]] = ()
    # Hash columns over agent content: shown as keyed commitments (runs/commitments.py), since
    # a plain hash would let a strict reader test guesses of what the redaction hides.
    hash_fields: ClassVar[tuple[str, ...]] = ()
    paginator = SeekPaginator
    # The changelist reads and redacts only the columns it lists (its methods read no content
    # field): the big ledger lists set it, after checking their list_display.
    lean_changelist: ClassVar[bool] = False
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

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return SeekChangeList

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        filtered = self.name_every_tenant and not request.GET.keys() <= _NOT_FILTERS
        ids = self.named_tenant_ids(request) if filtered else self.tenant_ids(request)
        return queryset if ids is None else queryset.filter(tenant_id__in=ids)

    #: Filtered lists of a reader of every tenant name each tenant (``named_tenant_ids``): for
    #: the big tables, whose filters' indexes lead with the tenant. Unfiltered lists do not:
    #: their order is served by an index without the tenant, which the named tenants would
    #: make the planner leave (a middle page of 10,000,000 tool calls: 318 ms -> 1.8 s).
    name_every_tenant = False

    def named_tenant_ids(self, request: HttpRequest) -> list[int]:
        """``tenant_ids``, with every tenant named for a reader of all of them. An index that
        leads with the tenant (an external id's unique index, a status's) serves a condition
        on its second column only with the tenants named, one probe a tenant; without them it
        is read whole (a call_id, or a status no call has, among 10,000,000 tool calls: 400 and
        480 ms)."""
        ids = self.tenant_ids(request)
        if ids is not None:
            return ids
        from .models import Tenant

        return sorted(Tenant.objects.values_list("pk", flat=True))

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
        return _present_required()(request, obj, self.content_fields,
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
        if not self.lean_changelist:
            changelist.result_list = [self.present(request, obj, hashes)
                                      for obj in changelist.result_list]
            return changelist
        content = tuple(name for name in self.content_fields if name in listed)
        shown_hashes = tuple(name for name in self.hash_fields if name in listed)
        if content or shown_hashes:  # only what the list shows: the rest is not even loaded
            presenter = _present_required()
            changelist.result_list = [presenter(request, obj, content, shown_hashes)
                                      for obj in changelist.result_list]
        return changelist

    @admin.display(description=mark_safe('<input type="checkbox" id="action-toggle">'))
    def action_checkbox(self, obj: Any) -> SafeString:
        # Django renders a CheckboxInput widget through the form renderer for every row
        # (about 0.5 ms each, 46 ms for a page of 100); the same markup, formatted directly.
        label = format_html(_("Select this object for an action - {}"), obj)
        return format_html('<input type="checkbox" name="{}" value="{}" class="action-select" '
                           'aria-label="{}">', helpers.ACTION_CHECKBOX_NAME, str(obj.pk), label)

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
        found = model._default_manager.filter(tenant_id__in=self.named_tenant_ids(request),
                                              **lookup)
        return list(found.order_by("-pk").values_list("pk", flat=True)[:1000])


class LedgerRecordAdmin(ExactSearchAdmin):
    """Ledger rows: viewable in the user's tenants, never editable.

    Newest first by primary key, and sortable only by indexed columns, so every page is an
    index scan however big the table.
    """

    ordering = ["-id"]
    sortable_by = ["started_at", "recorded_at"]
    name_every_tenant = True
    list_max_show_all = 0  # "show all" of a million rows: never
    lean_changelist = True  # their list_display methods read ids only (runs/admin.py)
    change_list_template = "admin/lean_change_list.html"  # rows by core/admin_rows.py
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
