"""Every route of the REST API under /api/v1/ (one namespace: ``api``)."""

from django.urls import path

from approvals.api import views as approvals
from core.api import views as tenancy
from exports.api.urls import urlpatterns as export_routes
from incidents.api.urls import urlpatterns as incident_routes
from operations.api.urls import urlpatterns as operation_routes
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
    path("approvals/", approvals.ApprovalList.as_view(), name="approval-list"),
    path("approvals/<id:pk>/", approvals.ApprovalDetail.as_view(), name="approval-detail"),
    path("approvals/<id:pk>/decision/", approvals.ApprovalDecision.as_view(),
         name="approval-decision"),
    path("approvals/<id:pk>/withdraw/", approvals.ApprovalWithdraw.as_view(),
         name="approval-withdraw"),
]
