from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The project shell: settings, URLs, the CLI dispatcher and Celery's app. No models."""

    name = "ledger_portal"
    label = "portal"
    verbose_name = "ledger-portal"

    def ready(self) -> None:
        from . import celery  # noqa: F401  (the Celery app, so shared tasks bind to it)
