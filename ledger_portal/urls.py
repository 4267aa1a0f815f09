from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from approvals import views as approval_pages
from core.sso import SsoAuthenticationRequestView, SsoCallbackView, sign_out
from exports import views as export_pages
from ledger_portal.health import healthz, readyz
from ledger_portal.home import home
from ledger_portal.metrics import metrics_view
from operations import run_pages as operation_pages
from operations import views as replay_pages
from runs import views as run_pages
from runs.otlp.views import LogExport, TraceExport

urlpatterns = [
    path("", home, name="home"),
    # before the admin's own: its "Log out" also ends a single sign-on session at the provider
    path("admin/logout/", sign_out, name="sign-out"),
    path("admin/", admin.site.urls),
    # single sign-on (404 unless OIDC_ISSUER is set); the names are mozilla-django-oidc's
    path("oidc/authenticate/", SsoAuthenticationRequestView.as_view(),
         name="oidc_authentication_init"),
    path("oidc/callback/", SsoCallbackView.as_view(), name="oidc_authentication_callback"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("runs/find/", run_pages.find_run, name="find-run"),
    path("approvals/", approval_pages.approval_queue, name="approval-queue"),
    path("approvals/<id:pk>/decide/", approval_pages.decide, name="approval-decide"),
    path("runs/<slug:tenant>/replays/<id:replay_id>/", replay_pages.replay_detail,
         name="replay-detail"),
    path("runs/<slug:tenant>/replays/<id:replay_id>/divergences.json",
         replay_pages.divergence_export, name="replay-divergences"),
    path("runs/<slug:tenant>/replays/<id:replay_id>/steps/<id:seq>/follow-up/",
         replay_pages.step_follow_up, name="replay-step-follow-up"),
    path("divergences/", replay_pages.divergence_list, name="divergence-list"),
    path("runs/<slug:tenant>/<str:run_id>/replay/", replay_pages.replay_run, name="run-replay"),
    path("exports/", export_pages.export_list, name="export-list"),
    path("exports/<id:export_id>/download/", export_pages.download, name="export-download"),
    path("exports/<id:export_id>/share/", export_pages.share, name="export-share"),
    path("runs/<slug:tenant>/<str:run_id>/", run_pages.run_timeline, name="run-timeline"),
    path("runs/<slug:tenant>/<str:run_id>/calls/", run_pages.run_step_calls,
         name="run-step-calls"),
    path("runs/<slug:tenant>/<str:run_id>/rollback/", operation_pages.run_rollback,
         name="run-rollback"),
    path("runs/<slug:tenant>/<str:run_id>/annotate/", run_pages.run_annotate,
         name="run-annotate"),
    path("incidents/", include("incidents.urls")),
    path("api/v1/", include("ledger_portal.api.urls")),
    path("v1/traces", TraceExport.as_view(), name="otlp-traces"),  # OTLP/HTTP's fixed path
    path("v1/logs", LogExport.as_view(), name="otlp-logs"),  # GenAI events (event mode)
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", login_required(SpectacularSwaggerView.as_view(url_name="schema")),
         name="api-docs"),
]
