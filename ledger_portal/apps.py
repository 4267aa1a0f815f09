from django.apps import AppConfig


class LedgerPortalConfig(AppConfig):
    name = "ledger_portal"
    verbose_name = "Tenancy and access"
