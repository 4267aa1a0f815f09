from django.apps import AppConfig


class ExportsConfig(AppConfig):
    name = "exports"

    def ready(self) -> None:
        from runs.retention import register_hold_source

        from .review import runs_in_exports_under_review

        register_hold_source("export under review", runs_in_exports_under_review)
