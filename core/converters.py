"""URL converters. A row id in a path is 1 to 18 digits: every such number fits the 64-bit
primary keys, so a longer one is a plain 404 instead of a database overflow (a 500)."""

from __future__ import annotations

from django.urls import register_converter


class RowId:
    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int | str) -> str:
        return str(value)


def register() -> None:
    register_converter(RowId, "id")
