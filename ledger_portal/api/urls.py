"""Every route of the REST API under /api/v1/ (one namespace: ``api``)."""

from django.urls import path

from approvals.api import views as approvals
from core.api import views as tenancy
from exports.api.urls import urlpatterns as export_routes
from incidents.api.urls import urlpatterns as incident_routes
from operations.api.urls import urlpatterns as operation_routes
from policies.api import governance
from policies.api import views as policies
from runs.api.urls import urlpatterns as ledger_routes

app_name = "api"

urlpatterns = [
    *ledger_routes,
    *operation_routes,
    path("tenants/<slug:slug>/outage/", tenancy.TenantOutage.as_view(), name="tenant-outage"),
    *incident_routes,
    *export_routes,
    path("decisions/", policies.DecisionCreate.as_view(), name="decision-create"),
    path("policy-trail/", policies.DecisionList.as_view(), name="decision-list"),
    path("policy-versions/", governance.VersionList.as_view(), name="policy-version-list"),
    path("policy-versions/<id:version_id>/backtests/", governance.BackTestStart.as_view(),
         name="backtest-start"),
    path("backtests/", governance.BackTestList.as_view(), name="backtest-list"),
    path("backtests/<id:backtest_id>/", governance.BackTestDetail.as_view(),
         name="backtest-detail"),
    path("backtests/<id:backtest_id>/changes/", governance.BackTestChanges.as_view(),
         name="backtest-changes"),
    path("exceptions/", governance.ExceptionList.as_view(), name="exception-list"),
    path("exceptions/<id:exception_id>/grant/", governance.ExceptionGrant.as_view(),
         name="exception-grant"),
    path("exceptions/<id:exception_id>/revoke/", governance.ExceptionRevoke.as_view(),
         name="exception-revoke"),
    path("approvals/", approvals.ApprovalList.as_view(), name="approval-list"),
    path("approvals/<id:pk>/", approvals.ApprovalDetail.as_view(), name="approval-detail"),
    path("approvals/<id:pk>/decision/", approvals.ApprovalDecision.as_view(),
         name="approval-decision"),
    path("approvals/<id:pk>/withdraw/", approvals.ApprovalWithdraw.as_view(),
         name="approval-withdraw"),
]
