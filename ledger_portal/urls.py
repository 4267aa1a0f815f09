from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from approvals import views as approval_pages
from exports import views as export_pages
from runs import views as run_pages

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),
    path("admin/", admin.site.urls),
    path("runs/find/", run_pages.find_run, name="find-run"),
    path("approvals/", approval_pages.approval_queue, name="approval-queue"),
    path("approvals/<int:pk>/decide/", approval_pages.decide, name="approval-decide"),
    path("exports/", export_pages.export_list, name="export-list"),
    path("exports/<int:export_id>/download/", export_pages.download, name="export-download"),
    path("exports/<int:export_id>/share/", export_pages.share, name="export-share"),
    path("runs/<slug:tenant>/<str:run_id>/", run_pages.run_timeline, name="run-timeline"),
    path("api/v1/", include("ledger_portal.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]
