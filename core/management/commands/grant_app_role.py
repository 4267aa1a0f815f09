"""`manage.py grant_app_role ROLE`: grant the application's database role what the portal
needs (run as the tables' owner; `migrate` does it too when LEDGER_APP_DB_ROLE is set)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from core.db_roles import grant_app_role


class Command(BaseCommand):
    help = "Grant the application's PostgreSQL role what the portal needs, and no more."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("role", help="the role the portal connects as (not the owner)")

    def handle(self, *args: Any, role: str, **options: Any) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("only PostgreSQL has roles; the embedded default needs none")
        statements = grant_app_role(role)
        self.stdout.write(f"{len(statements)} grants for {role}")
