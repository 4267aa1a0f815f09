from django.urls import path

from . import views

urlpatterns = [
    path("exports/", views.ExportListCreate.as_view(), name="export-list"),
    path("exports/<id:export_id>/", views.ExportDetail.as_view(), name="export-detail"),
    path("exports/<id:export_id>/download/", views.ExportDownload.as_view(),
         name="export-download"),
]
