"""The admin shows moments as the portal pages do (``core.dates``): ISO date, 24-hour time to
the second, the zone named; never "Dec. 6, 2026, 2:12 p.m." beside "2026-12-06 14:12:00 UTC"."""

DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
