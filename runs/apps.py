from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Ledger"

    def ready(self) -> None:
        from .governance_log import connect

        connect()
