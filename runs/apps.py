from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Ledger"

    def ready(self) -> None:
        from core import admin_base
        from core.governance_record import register_recorder

        from .admin_present import present_for_viewer
        from .annotations import annotate
        from .governance_log import connect

        connect()
        # the core's services write the governance log through this
        register_recorder(annotate)
        # the core's admin base shows ledger content redacted through this
        admin_base.register_content_presenter(present_for_viewer)
