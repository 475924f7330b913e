"""Generator declarations (`models/generators/*.yml`), the kinds that run them (one module per
kind, implementing bgen_assets/generators/contract.py) and helpers the kinds share."""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bgen_assets.config import MODELS_DIR, ScopeSelection, load_declarations
from bgen_assets.domain import slots_per_day
from bgen_assets.generators.contract import (LOG_DEFAULTS, GenerationContext, GeneratorKind,  # noqa: F401  (the API)
                                             WeekResult, WeekTask)

KINDS = ("markov", "behaviorgen", "reference", "behavior_gpt", "behavior_lora", "sdv_par", "seqgan")


def generator_kind(kind: str) -> GeneratorKind:
    """The kind `bgen_assets/generators/KIND.py` implements."""
    return import_module(f"bgen_assets.generators.{kind}").KIND


@lru_cache(maxsize=None)
def _validated_params(kind: str, params_json: str) -> Any:
    return generator_kind(kind).validate(json.loads(params_json))


class GeneratorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: str
    description: str = ""
    seed: int = 0
    params: dict[str, Any] = Field(default_factory=dict)
    samples_per_week: int = Field(1, ge=1, description="independently sampled weeks per partition (user, week), each "
                                  "conditioned on the same real week (issue 12: synthetic weeks per real week)")
    on_request: bool = Field(False, description="built only in the scopes and datasets `scope` names, or when "
                             "a command names it (GPU-only kinds, LLM ablations, slow baselines)")
    scope: dict[str, dict[str, ScopeSelection]] = Field(
        default_factory=dict, description="per project scope and dataset: the users/weeks this variant generates")

    @model_validator(mode="after")
    def _known_kind_and_params(self) -> GeneratorSpec:
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r} is not one of {sorted(KINDS)}")
        _ = self.settings
        return self

    @property
    def settings(self) -> Any:
        """The params as the kind's `Params`, validated once per distinct declaration."""
        return _validated_params(self.kind, json.dumps(self.params, sort_keys=True, default=str))

    @property
    def needs_fit(self) -> bool:
        return generator_kind(self.kind).needs_fit(self.settings)

    def selection(self, scope: str, dataset: str, project_selection: ScopeSelection) -> ScopeSelection:
        """This variant's users and weeks: its own declaration narrowed to the project's scope."""
        own = self.scope.get(scope, {}).get(dataset)
        if own is None:
            return ScopeSelection(users=[]) if self.on_request else project_selection
        users = own.users if own.users is not None else project_selection.users
        if users is not None and project_selection.users is not None:
            users = [user for user in users if user in project_selection.users]
        weeks = [w for w in (own.max_weeks_per_user, project_selection.max_weeks_per_user) if w is not None]
        return ScopeSelection(users=users, max_weeks_per_user=min(weeks) if weeks else None)


def load_generator_specs(folder: Path = MODELS_DIR / "generators") -> list[GeneratorSpec]:
    return load_declarations(folder, GeneratorSpec)


def artifact_table(payload: bytes) -> pd.DataFrame:
    """A fitted model that is one serialised object, as a one-row table. Base64 text keeps it a
    plain string column that the warehouse, the schema check and the data-version hash all handle."""
    return pd.DataFrame({"payload": [base64.b64encode(payload).decode("ascii")]})


def artifact_bytes(table: pd.DataFrame) -> bytes:
    return base64.b64decode(table["payload"].iloc[0])



def week_events(week: str, slot_of_week: np.ndarray, locations, intents, rng: np.random.Generator,
                slot_minutes: int) -> pd.DataFrame:
    """Events of the week after `week` at the given time-of-week slots (weekday x slots per day +
    time slot), each at a random minute inside its slot, sorted by time. Weekday and time slot are
    both derived from that one value, so they always agree with `ts`."""
    per_day = slots_per_day(slot_minutes)
    slot_of_week = np.asarray(slot_of_week, dtype="int64")
    minutes = slot_of_week * slot_minutes + rng.integers(0, slot_minutes, len(slot_of_week))
    order = np.argsort(minutes, kind="stable")
    return pd.DataFrame({
        "ts": pd.Timestamp(week) + pd.Timedelta(days=7) + pd.to_timedelta(minutes[order], unit="min"),
        "weekday": slot_of_week[order] // per_day,
        "time_slot": slot_of_week[order] % per_day,
        "location": np.asarray(locations, dtype=object)[order],
        "intent": np.asarray(intents, dtype=object)[order],
    })


def thin(events: pd.DataFrame, limit: int, rng: np.random.Generator) -> pd.DataFrame:
    """At most `limit` events, a uniform sample kept in time order."""
    if len(events) <= limit:
        return events
    return events.iloc[np.sort(rng.choice(len(events), size=limit, replace=False))]
