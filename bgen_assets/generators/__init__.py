"""Generator declarations (`models/generators/*.yml`) and the generator kinds that run them.

A kind is a module with:
  code_files() -> the files whose content decides its output (part of the asset's code version);
  NEEDS_FIT: bool, and when true `fit(population_events, params, slot_minutes, seed) -> table`
             (seed: the declaration's) and `from_table(table) -> model` (the fitted model is the
             asset `DS/NAME_model`); a kind whose need depends on its params defines
             `needs_fit(params) -> bool` instead;
  validate_params(params) -> params, raising ValueError on a bad declaration;
  generate_weeks(model, tasks, spec, context) -> one WeekResult per WeekTask;
optionally NEEDS_PROFILES: bool (fit's population events then carry the users' profile columns)
and model_metadata(model) -> dict (e.g. its number of parameters).
A task's history holds only the user's real events up to and including its week, so no
generator can see a user's later (validation or test) data.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bgen_assets.domain import slots_per_day
from bgen_assets.config import MODELS_DIR, ScopeSelection, load_declarations
from bgen_assets.llm import EventVocabulary

KINDS = {"markov": "bgen_assets.generators.markov", "llm": "bgen_assets.generators.behaviorgen",
         "reference": "bgen_assets.generators.reference",
         "behavior_gpt": "bgen_assets.generators.behavior_gpt",
         "behavior_lora": "bgen_assets.generators.behavior_lora",
         "sdv_par": "bgen_assets.generators.sdv_par", "seqgan": "bgen_assets.generators.seqgan"}


def generator_kind(kind: str):
    return import_module(KINDS[kind])


class GeneratorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: str
    description: str = ""
    seed: int = 0
    params: dict[str, Any] = Field(default_factory=dict)
    on_request: bool = Field(False, description="built only in the scopes and datasets `scope` names, or when "
                             "a command names it (GPU-only kinds, LLM ablations, slow baselines)")
    scope: dict[str, dict[str, ScopeSelection]] = Field(
        default_factory=dict, description="per project scope and dataset: the users/weeks this variant generates")

    @model_validator(mode="after")
    def _known_kind_and_params(self) -> GeneratorSpec:
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r} is not one of {sorted(KINDS)}")
        generator_kind(self.kind).validate_params(self.params)
        return self

    @property
    def needs_fit(self) -> bool:
        kind = generator_kind(self.kind)
        return kind.needs_fit(self.params) if hasattr(kind, "needs_fit") else kind.NEEDS_FIT

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


# A generated week's accounting (a row of DS.synthetic_NAME_log); generators without an LLM keep these.
LOG_DEFAULTS = {"pass_at_1": False, "attempts": 0, "llm_calls": 0, "cache_hits": 0, "prompt_tokens": 0,
                "completion_tokens": 0, "billed_prompt_tokens": 0, "billed_completion_tokens": 0,
                "latency_s": 0.0, "transport_retries": 0, "errors": ""}


@dataclass
class WeekTask:
    user: str
    week: str                  # the conditioning real week (its Monday, YYYY-MM-DD)
    history: pd.DataFrame      # the user's real events up to and including `week`
    profile: dict[str, str]
    seed: list[int]


@dataclass
class WeekResult:
    events: pd.DataFrame       # ts, weekday, time_slot, location, intent of the generated week
    status: str = "ok"         # ok | failed (kept out of the events table, recorded in the log)
    log: dict = field(default_factory=dict)


@dataclass
class GenerationContext:
    dataset: str
    description: str
    slot_minutes: int
    vocabulary: EventVocabulary
    state_dir: Path
    model_dir: Path                # where local models are converted and kept
