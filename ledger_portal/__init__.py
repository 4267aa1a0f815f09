"""ledger-portal: a governance portal over an Agent Execution Ledger."""

from typing import Any

__all__ = ["celery_app"]


def __getattr__(name: str) -> Any:
    # The Celery app is created when Django starts (LedgerPortalConfig.ready) or on first use,
    # not on ``import ledger_portal``: the agent-side client (``ledger_portal.client``) lives in
    # this package and must import without Celery or Django.
    if name == "celery_app":
        from .celery import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
