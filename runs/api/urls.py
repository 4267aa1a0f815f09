from django.urls import path

from . import annotations, deferred, views

urlpatterns = [
    path("tenants/", views.TenantList.as_view(), name="tenant-list"),
    path("signing-key/", views.SigningKey.as_view(), name="signing-key"),
    path("integrity-alarms/", views.IntegrityAlarmList.as_view(), name="integrity-alarm-list"),
    path("batches/", views.BatchIngest.as_view(), name="batch-ingest"),
    path("agents/", views.AgentList.as_view(), name="agent-list"),
    path("agents/<str:agent_id>/", views.AgentDetail.as_view(), name="agent-detail"),
    path("runs/", views.RunList.as_view(), name="run-list"),
    path("runs/<str:run_id>/", views.RunDetail.as_view(), name="run-detail"),
    path("runs/<str:run_id>/records/", views.RunRecords.as_view(), name="run-records"),
    path("runs/<str:run_id>/annotations/", annotations.RunAnnotations.as_view(),
         name="run-annotations"),
    path("tool-calls/", views.ToolCallList.as_view(), name="toolcall-list"),
    path("tool-calls/<str:call_id>/", views.ToolCallDetail.as_view(), name="toolcall-detail"),
    path("deferred/", deferred.DeferredItemList.as_view(), name="deferred-list"),
    path("deferred/<int:deferred_id>/", deferred.DeferredItemDetail.as_view(),
         name="deferred-detail"),
    path("deferred/<int:deferred_id>/dismiss/", deferred.DeferredItemDismiss.as_view(),
         name="deferred-dismiss"),
    path("deferred/<int:deferred_id>/apply/", deferred.DeferredItemApply.as_view(),
         name="deferred-apply"),
]
