from django.apps import AppConfig
from django.db.models.signals import post_migrate


class LedgerPortalConfig(AppConfig):
    name = "ledger_portal"
    verbose_name = "Tenancy and access"

    def ready(self) -> None:
        from .converters import register

        register()  # before any URL module is read: they use <id:...>
        from . import celery  # noqa: F401  (the Celery app, so shared tasks bind to it)
        from .api import schema  # noqa: F401  (registers the OpenAPI extensions)
        from .db_roles import grant_after_migrate

        # after every app's migrations (the last app's signal): grants cover every table
        post_migrate.connect(grant_after_migrate, dispatch_uid="ledger_app_db_role")
