"""ledger-portal: a governance portal over an Agent Execution Ledger."""

from .celery import app as celery_app

__all__ = ["celery_app"]
