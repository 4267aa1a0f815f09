from django.urls import path

from . import views

urlpatterns = [
    path("", views.incident_list, name="incident-list"),
    path("<slug:tenant>/<id:pk>/", views.incident_page, name="incident-page"),
    path("<slug:tenant>/<id:pk>/act/", views.incident_act, name="incident-act"),
]
