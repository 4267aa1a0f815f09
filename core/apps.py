from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CoreConfig(AppConfig):
    name = "core"
    # The label these models had when they lived in the project package: it names their
    # tables, permissions, content types and migration history, so an existing database
    # upgrades with nothing to migrate.
    label = "ledger_portal"
    verbose_name = "Tenancy and access"

    def ready(self) -> None:
        from .converters import register

        register()  # before any URL module is read: they use <id:...>
        from . import checks  # noqa: F401  (registers the tenancy system checks)
        from .api import schema  # noqa: F401  (registers the OpenAPI extensions)
        from .db_roles import grant_after_migrate
        from .metrics import time_celery_jobs

        time_celery_jobs()

        # sent once per app after the whole migrate: for this app alone, so once
        post_migrate.connect(grant_after_migrate, sender=self, dispatch_uid="ledger_app_db_role")
        from django.conf import settings

        from . import login_audit
        from .sso_roles import checked_role_map

        login_audit.connect()
        checked_role_map(settings.LEDGER_OIDC_ROLE_MAP)  # a bad map stops the start
