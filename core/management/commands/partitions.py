"""`manage.py partitions`: list the partitioned tables' partitions (PostgreSQL); with
`--ensure`, first create the coming months' ones (what the beat task ensure-partitions does);
with `--drop-empty`, first drop past months' partitions retention emptied (as its beat task
does after each pass)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection

from core.partitions import drop_empty_partitions, ensure_partitions, partitions


class Command(BaseCommand):
    help = "List (and with --ensure create ahead) the monthly partitions of the big tables."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--ensure", action="store_true",
                            help="create the partitions of the coming months first")
        parser.add_argument("--drop-empty", action="store_true",
                            help="drop past months' partitions that hold no row any more")
        parser.add_argument("--months-ahead", type=int,
                            default=settings.LEDGER_PARTITION_MONTHS_AHEAD)

    def handle(self, *args: Any, ensure: bool, drop_empty: bool, months_ahead: int,
               **options: Any) -> None:
        if connection.vendor != "postgresql":
            self.stdout.write("SQLite keeps plain tables: nothing is partitioned")
            return
        if drop_empty:
            for name in drop_empty_partitions():
                self.stdout.write(f"dropped {name}")
        if ensure:
            for name in ensure_partitions(months_ahead):
                self.stdout.write(f"created {name}")
        for part in partitions():
            rows = "?" if part.rows < 0 else f"~{part.rows:,}"
            self.stdout.write(f"{part.table:24} {part.name:32} {rows:>12} rows  {part.bounds}")
