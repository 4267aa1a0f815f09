"""ledger-portal: a governance portal over an Agent Execution Ledger."""

from typing import Any

__all__ = ["celery_app"]


def __getattr__(name: str) -> Any:
    # The Celery app is created when Django starts (LedgerPortalConfig.ready) or on first use,
    # not on ``import ledger_portal``: creating it imports Celery, binds it to Django's settings
    # and sets DJANGO_SETTINGS_MODULE, which a process that imports the package but never
    # starts Django (the ``ledger`` command's offline verify-export) has no use for.
    if name == "celery_app":
        from .celery import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
