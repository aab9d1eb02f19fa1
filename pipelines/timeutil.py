"""The one clock of the project: naive Europe/Paris wall time, the legacy timestamps' own clock."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

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


Days = npt.NDArray[np.int64]


def civil_dates(days: Days) -> tuple[Days, Days, Days]:
    """Year, month, day of day numbers counted from 1970-01-01, vectorised (H. Hinnant's
    civil_from_days: integer arithmetic only, exact for any day number)."""
    shifted = days + 719_468
    era = shifted // 146_097
    day_of_era = shifted - era * 146_097
    year_of_era = (day_of_era - day_of_era // 1_460 + day_of_era // 36_524 - day_of_era // 146_096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = np.where(shifted_month < 10, shifted_month + 3, shifted_month - 9)
    return year_of_era + era * 400 + (month <= 2), month, day
