from django.urls import path

from . import views

ONE = "incidents/<id:incident_id>/"

urlpatterns = [
    path("incidents/", views.IncidentList.as_view(), name="incident-list"),
    path(ONE, views.IncidentDetail.as_view(), name="incident-detail"),
    path(f"{ONE}links/", views.IncidentLink.as_view(), name="incident-link"),
    path(f"{ONE}notes/", views.IncidentNote.as_view(), name="incident-note"),
    path(f"{ONE}freezes/", views.IncidentFreeze.as_view(), name="incident-freeze"),
    path(f"{ONE}mitigate/", views.IncidentMitigate.as_view(), name="incident-mitigate"),
    path(f"{ONE}close/", views.IncidentClose.as_view(), name="incident-close"),
]
