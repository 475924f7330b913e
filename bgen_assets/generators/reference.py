"""Reference generators that every comparison shows beside the others (no learning at all).

`repeat_last_week`: the generated week is the user's conditioning real week itself, moved on by
seven days. A strong fidelity reference and a deliberate privacy leak (the privacy gate must
catch it).

`other_population_week`: a real week of another population user, drawn at random (seeded per
user-week) and moved onto the target week: what real-vs-real closeness looks like. The fitted
model is the population users' events labelled with their week; `repeat_last_week` needs no
population data, so it has no model asset.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from bgen_assets.domain import week_of
from bgen_assets.generators.contract import GenerationContext, GeneratorKind, WeekResult, WeekTask

EVENT_COLUMNS = ["ts", "weekday", "time_slot", "location", "intent"]
MODEL_COLUMNS = ["user_id", "week", *EVENT_COLUMNS]


class ReferenceParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["repeat_last_week", "other_population_week"]


def fit(population_events: pd.DataFrame) -> pd.DataFrame:
    """The population users' events with their week (Monday, as in `weekly_segments`)."""
    weeks = population_events.assign(week=week_of(population_events["ts"]))
    return weeks[MODEL_COLUMNS].astype({"weekday": "int64", "time_slot": "int64"}).reset_index(drop=True)


def from_table(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values(["user_id", "week", "ts"], kind="stable", ignore_index=True)


def model_metadata(model: pd.DataFrame) -> dict:
    return {"population_weeks": int(model[["user_id", "week"]].drop_duplicates().shape[0])}


def shifted(week_events: pd.DataFrame, from_monday: pd.Timestamp, to_monday: pd.Timestamp) -> pd.DataFrame:
    """A week's events moved onto another week (weekday and time of day unchanged)."""
    moved = week_events[EVENT_COLUMNS].reset_index(drop=True)
    return moved.assign(ts=moved["ts"] - from_monday + to_monday)


def other_population_week(population: pd.DataFrame, user: str, rng: np.random.Generator) -> tuple[str, str]:
    """(user, week) of a real population week that is not `user`'s."""
    candidates = population.loc[population["user_id"] != user, ["user_id", "week"]].drop_duplicates()
    if candidates.empty:
        raise ValueError(f"no population week of a user other than {user!r} to draw from")
    chosen = candidates.iloc[int(rng.integers(len(candidates)))]
    return chosen["user_id"], chosen["week"]


def generate_weeks(model: pd.DataFrame | None, tasks: list[WeekTask], method: str) -> list[WeekResult]:
    grouped = model.groupby(["user_id", "week"], sort=False) if model is not None else None
    results = []
    for task in tasks:
        target = pd.Timestamp(task.week) + pd.Timedelta(days=7)
        if method == "repeat_last_week":
            source_week, events = task.week, task.history[task.history["week"] == task.week]
        else:
            source_user, source_week = other_population_week(model, task.user, np.random.default_rng(task.seed))
            events = grouped.get_group((source_user, source_week))
        results.append(WeekResult(shifted(events, pd.Timestamp(source_week), target)))
    return results


class Reference(GeneratorKind):
    Params = ReferenceParams

    def needs_fit(self, params: ReferenceParams) -> bool:
        return params.method == "other_population_week"

    def fit(self, population_events: pd.DataFrame, params: ReferenceParams, seed: int,
            context: GenerationContext) -> pd.DataFrame:
        return fit(population_events)

    def from_table(self, table: pd.DataFrame) -> pd.DataFrame:
        return from_table(table)

    def model_metadata(self, model: pd.DataFrame) -> dict:
        return model_metadata(model)

    def generate_weeks(self, model: pd.DataFrame | None, tasks: list[WeekTask], params: ReferenceParams,
                       context: GenerationContext) -> list[WeekResult]:
        return generate_weeks(model, tasks, params.method)


KIND = Reference()
