from django.apps import AppConfig


class IncidentsConfig(AppConfig):
    name = "incidents"

    def ready(self) -> None:
        from operations.rollback import register_incident_links

        from .rollback_links import IncidentRollbackLinks

        register_incident_links(IncidentRollbackLinks())
