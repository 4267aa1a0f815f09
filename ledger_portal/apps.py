from django.apps import AppConfig


class LedgerPortalConfig(AppConfig):
    name = "ledger_portal"
    verbose_name = "Tenancy and access"

    def ready(self) -> None:
        from .converters import register

        register()  # before any URL module is read: they use <id:...>
        from . import celery  # noqa: F401  (the Celery app, so shared tasks bind to it)
        from .api import schema  # noqa: F401  (registers the OpenAPI extensions)
