"""The one clock of the project: naive Europe/Paris wall time, the legacy timestamps' own clock."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")


def parse_as_of(text: str) -> datetime:
    """An ISO-8601 date or date-time as naive Europe/Paris wall time.

    With an offset (or `Z`) the instant is converted to Europe/Paris and the zone dropped;
    without one it already is Europe/Paris wall time; a date alone means its midnight.
    Raises ValueError, naming the value, when the text is not ISO-8601.
    """
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO-8601 date or date-time (e.g. 2024-11-14, 2024-11-14T08:00:00, "
            "2024-11-14T07:00:00Z, 2024-11-14T08:00:00+01:00)"
        ) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(PARIS).replace(tzinfo=None)
    return parsed


def paris_now() -> datetime:
    """Now, as naive Europe/Paris wall time, to the second."""
    return datetime.now(PARIS).replace(tzinfo=None, microsecond=0)
