"""The generator contract: what every kind of generator implements.

A kind lives in `bgen_assets/generators/KIND.py` (the `kind:` of a declaration in
models/generators/NAME.yml is its module's name), which defines one `GeneratorKind` subclass
and `KIND`, its instance. A declaration's params are validated once, into the kind's `Params`,
when the declaration loads (`GeneratorSpec.settings`); every method gets them typed.

A task's history holds only the user's real events up to and including its week, so no
generator can see a user's later (validation or test) data.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
from pydantic import TypeAdapter

from bgen_assets.llm import EventVocabulary

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


class GeneratorKind(ABC):
    """One kind of generator. Subclasses set `Params` (a pydantic model or dataclass of the
    declaration's params) and implement `generate_weeks`; fitted kinds also `fit` and `from_table`."""

    Params: ClassVar[Any]
    needs_vocabulary: ClassVar[bool] = False  # generation reads the dataset's (location, intent) pairs (DS/vocabulary)
    needs_profiles: ClassVar[bool] = False    # fit's population events carry the users' profile columns

    def validate(self, params: dict) -> Any:
        """The declaration's params as `Params`; a bad declaration raises pydantic's ValidationError (a ValueError)."""
        return TypeAdapter(self.Params).validate_python(params)

    def code_files(self) -> list[Path]:
        """The files whose content decides the kind's output (part of its assets' code version)."""
        return [Path(inspect.getfile(type(self)))]

    def needs_fit(self, params: Any) -> bool:
        """Whether the kind is fitted on the population users first (the model is the asset `DS/NAME_model`)."""
        return True

    def fit(self, population_events: pd.DataFrame, params: Any, seed: int, context: GenerationContext) -> pd.DataFrame:
        """The fitted model as a table (seed: the declaration's); population events carry the users'
        profile columns when `needs_profiles`."""
        raise NotImplementedError(f"{type(self).__name__} is not fitted")

    def from_table(self, table: pd.DataFrame) -> Any:
        """The model `fit` stored as a table."""
        raise NotImplementedError(f"{type(self).__name__} is not fitted")

    def model_metadata(self, model: Any) -> dict:
        """What the UI shows about a fitted model (e.g. its number of parameters)."""
        return {}

    def token_prices(self, params: Any) -> tuple[float, float]:
        """USD per million billed (prompt, completion) tokens, for a run's estimated cost."""
        return 0.0, 0.0

    @abstractmethod
    def generate_weeks(self, model: Any, tasks: list[WeekTask], params: Any,
                       context: GenerationContext) -> list[WeekResult]:
        """One WeekResult per task: the week after the task's week (model: None when not fitted)."""
