"""The one way portal pages show a moment: "2026-12-06 13:40:05 UTC", in the portal's time zone
(``TIME_ZONE``), to the second, always naming the zone."""

from __future__ import annotations

from datetime import datetime, tzinfo

from django.utils import timezone


def shown_time(value: datetime | None, zone: tzinfo | None = None) -> str:
    """``value`` as pages show it; "" for no value. ``zone``: the current time zone, when the
    caller shows many moments (looking it up costs more than the formatting: a fifth of the
    2,000-record timeline's rows, bench/timeline_page.py)."""
    if value is None:
        return ""
    if timezone.is_aware(value):
        value = value.astimezone(zone or timezone.get_current_timezone())
    return f"{value:%Y-%m-%d %H:%M:%S} {value.tzname() or timezone.get_current_timezone_name()}"
