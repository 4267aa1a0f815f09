"""The auditor's exports page: request an export, watch it, download it, share it."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from core.actors import Viewer, actor_of
from core.models import Tenant
from core.roles import Role

from . import services
from .models import ExportFormat, ExportStatus, RedactionLevel

SHOWN = 100


class ExportRequestForm(forms.Form):
    tenant = forms.ModelChoiceField(queryset=Tenant.objects.none(), to_field_name="slug")
    window_from = forms.DateTimeField(label="From", help_text="inclusive, UTC",
                                      widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    window_to = forms.DateTimeField(label="To", help_text="exclusive, UTC",
                                    widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    redaction_level = forms.ChoiceField(choices=RedactionLevel.choices,
                                        initial=RedactionLevel.STRICT)
    format = forms.ChoiceField(choices=ExportFormat.choices, initial=ExportFormat.JSONL)
    justification = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}),
                                    help_text="Required for an unredacted export.")

    def __init__(self, *args: object, user: Viewer, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["tenant"].queryset = Tenant.objects.for_user(user, Role.EXPORT)  # type: ignore[attr-defined]


@login_required
def export_list(request: HttpRequest) -> HttpResponse:
    form = ExportRequestForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            export = services.request_export(
                data["tenant"], data["window_from"], data["window_to"], by=actor_of(request),
                redaction_level=data["redaction_level"],
                fmt=data["format"], justification=data["justification"])
        except (PermissionDenied, ValidationError) as exc:
            text = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            messages.error(request, f"Export not requested: {text}")
        else:
            messages.success(request, f"Export {export.pk} requested; it is produced in the "
                             "background.")
            return redirect("export-list")
    exports = list(services.visible_exports(request.user).select_related("tenant")[:SHOWN])
    working = any(e.status in (ExportStatus.QUEUED, ExportStatus.RUNNING) for e in exports)
    return render(request, "exports/list.html", {
        **admin.site.each_context(request), "title": "Audit exports", "form": form,
        "exports": exports, "refresh": working,
        "can_request": form.fields["tenant"].queryset.exists()})  # type: ignore[attr-defined]


@login_required
def download(request: HttpRequest, export_id: int) -> HttpResponse | FileResponse:
    export = services.visible_exports(request.user).filter(pk=export_id).first()
    if export is None:
        raise Http404("No such export among yours.")
    try:
        handle = services.open_for_download(export, by=actor_of(request),
                                            ip=request.META.get("REMOTE_ADDR"),
                                            user_agent=request.META.get("HTTP_USER_AGENT", ""))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("export-list")
    response = FileResponse(handle, as_attachment=True, filename=export.download_name,
                            content_type="application/x-tar")
    # a bundle streamed from a bucket cannot be measured by seeking: its size was recorded
    response.headers.setdefault("Content-Length", str(export.size))
    return response


@login_required
@require_POST
def share(request: HttpRequest, export_id: int) -> HttpResponse:
    export = services.visible_exports(request.user).filter(pk=export_id).first()
    if export is None:
        raise Http404("No such export among yours.")
    user = get_user_model().objects.filter(username=request.POST.get("username", ""),
                                           is_active=True).first()
    if user is None:
        messages.error(request, "No such active user.")
        return redirect("export-list")
    try:
        services.share_export(export, user, by=actor_of(request))
    except PermissionDenied as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Export {export.pk} shared with {user}.")
    return redirect("export-list")
