"""Facts of the domain that every layer shares; this module imports nothing of bgen's.

A week is named by its Monday (YYYY-MM-DD), the `week` of weekly segments and synthetic
partitions; a day is cut into time slots of the project's `slot_minutes`."""

from __future__ import annotations

import pandas as pd

# A user's profile (DS.profiles), as the paper prompts with it.
PROFILE_ATTRIBUTES = ["age_group", "education", "gender", "consumption_level", "occupation"]

MINUTES_PER_DAY = 1440


def slots_per_day(slot_minutes: int) -> int:
    return MINUTES_PER_DAY // slot_minutes


def week_of(ts: pd.Series) -> pd.Series:
    """Monday of each time's week, YYYY-MM-DD."""
    return (ts.dt.normalize() - pd.to_timedelta(ts.dt.weekday, unit="D")).dt.strftime("%Y-%m-%d")
