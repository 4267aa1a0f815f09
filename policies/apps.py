from django.apps import AppConfig


class PoliciesConfig(AppConfig):
    name = "policies"

    def ready(self) -> None:
        # What governance adds to the ledger below it, through hooks the ledger owns.
        from runs.api.presenters import register_decision_source
        from runs.retention import register_hold_source

        from .holds import runs_under_governed_exceptions
        from .trail import decisions_by_call

        register_decision_source(decisions_by_call)
        register_hold_source("governed exception", runs_under_governed_exceptions)
