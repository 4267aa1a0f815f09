from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "operations"
    verbose_name = "Operations"

    def ready(self) -> None:
        from runs.timeline_panels import register_timeline_panel

        from .run_pages import timeline_panel

        register_timeline_panel(timeline_panel)
