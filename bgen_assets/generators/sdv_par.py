"""SDV's PARSynthesizer (probabilistic autoregressive model, via deepecho): the off-the-shelf
sequential synthesizer a data team would pick, as a peer to compare against.

Fit (population users): one sequence per user-week (the sequence key), the user's five profile
attributes as context columns, and per event two sequence columns: the time-of-week slot
(weekday x slots per day + time slot, numerical) and the event (location and intent joined, one
categorical). PAR's cost grows with about the square of the number of sequences, so a seeded
sample of at most `max_training_weeks` user-weeks is trained on, each cut to a seeded, order-keeping
sample of at most `max_events_per_week` events. The fitted synthesizer is pickled into the model
table (one row), so it is written atomically with the warehouse.

Generation (one user-week): a sequence sampled with the user's profile as context, seeded per task.
Post-processing makes it schema-valid by construction rather than by filtering:
- weekday and time slot come from the one sampled time-of-week value (clipped to the week), so they
  agree with each other and with `ts` (PAR's own separate weekday/slot columns disagree), and the
  events are sorted by time;
- location and intent are one categorical, so every sampled pair is a pair of the population's real
  events, hence of the dataset's vocabulary. Sampled separately, PAR pairs them independently (about
  20% consistent on Tokyo); dropping the inconsistent events would skew the event counts, and mapping
  intent from location would discard PAR's intent. In both datasets each location has one intent,
  so the joint categorical is exactly as large as the location column.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from bgen_assets.domain import PROFILE_ATTRIBUTES, slots_per_day, week_of
from bgen_assets.generators import artifact_bytes, artifact_table, week_events
from bgen_assets.generators.contract import GenerationContext, GeneratorKind, WeekResult, WeekTask

TABLE, SEQUENCE_KEY, SEP = "weeks", "user_week", "\x1f"


class ParParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(128, ge=1)
    max_training_weeks: int = Field(300, ge=1, description="seeded sample of population user-weeks")
    max_events_per_week: int = Field(128, ge=1, description="longer training weeks are subsampled")
    threads: int = Field(1, ge=1, description="torch threads")


@dataclass
class FittedPar:
    synthesizer: object               # sdv.sequential.PARSynthesizer
    profile_values: dict[str, list]   # per attribute, the training values, most frequent first
    training_weeks: int


def metadata():
    from sdv.metadata import Metadata

    columns = {SEQUENCE_KEY: {"sdtype": "id"}, **{a: {"sdtype": "categorical"} for a in PROFILE_ATTRIBUTES},
               "slot_of_week": {"sdtype": "numerical"},
               "event": {"sdtype": "categorical"}}
    return Metadata.load_from_dict({"tables": {TABLE: {"sequence_key": SEQUENCE_KEY, "columns": columns}}})


def training_sequences(population_events: pd.DataFrame, params: ParParams, slot_minutes: int, seed: int) -> pd.DataFrame:
    """The sampled user-weeks as PAR's table: sequence key, profile context, time-of-week, event."""
    rng = np.random.default_rng(seed)
    events = population_events.assign(
        week=week_of(population_events["ts"]),
        slot_of_week=population_events["weekday"] * slots_per_day(slot_minutes) + population_events["time_slot"],
        event=population_events["location"] + SEP + population_events["intent"],
    )
    weeks = events[["user_id", "week"]].drop_duplicates().sort_values(["user_id", "week"])
    chosen = weeks.iloc[np.sort(rng.choice(len(weeks), min(params.max_training_weeks, len(weeks)), replace=False))]
    events = events.merge(chosen, on=["user_id", "week"]).sort_values(["user_id", "ts"], kind="stable")
    draw = pd.Series(rng.random(len(events)), index=events.index)
    events = events[draw.groupby([events["user_id"], events["week"]]).rank(method="first") <= params.max_events_per_week]
    return pd.DataFrame({
        SEQUENCE_KEY: events["user_id"] + "|" + events["week"],
        **{a: events[a].astype(str) for a in PROFILE_ATTRIBUTES},
        "slot_of_week": events["slot_of_week"].astype("int64"),
        "event": events["event"],
    }).reset_index(drop=True)


def fit(population_events: pd.DataFrame, params: ParParams, slot_minutes: int, seed: int) -> pd.DataFrame:
    import torch
    from sdv.sequential import PARSynthesizer

    torch.set_num_threads(params.threads)
    torch.manual_seed(seed)
    np.random.seed(seed)  # SDV's transformers draw from numpy's global state
    synthesizer = PARSynthesizer(metadata(), context_columns=PROFILE_ATTRIBUTES,
                                 epochs=params.epochs, cuda=False, verbose=False)
    sequences = training_sequences(population_events, params, slot_minutes, seed)
    synthesizer.fit({TABLE: sequences})
    contexts = sequences.drop_duplicates(SEQUENCE_KEY)
    values = {a: contexts[a].value_counts().index.tolist() for a in PROFILE_ATTRIBUTES}
    return artifact_table(pickle.dumps(FittedPar(synthesizer, values, len(contexts))))


def from_table(table: pd.DataFrame) -> FittedPar:
    return pickle.loads(artifact_bytes(table))


def model_metadata(model: FittedPar) -> dict:
    network = model.synthesizer._model._model  # deepecho's PARNet (a torch module)
    return {"parameters": int(sum(p.numel() for p in network.parameters())),
            "epochs": model.synthesizer._model.epochs, "training_weeks": model.training_weeks}


def generate(model: FittedPar, profile: dict[str, str], week: str, seed: list[int], slot_minutes: int) -> pd.DataFrame:
    """The week after `week` for a user with this profile, deterministic given the seed. A profile
    value PAR never saw in training (it has no encoding for it) is replaced by the most frequent one."""
    import torch

    state = np.random.SeedSequence(seed).generate_state(2)
    torch.manual_seed(int(state[0]))
    np.random.seed(int(state[1]))
    known = {a: str(profile.get(a)) if str(profile.get(a)) in values else values[0]
             for a, values in model.profile_values.items()}
    context = pd.DataFrame([{SEQUENCE_KEY: "generated", **known}])
    synthesizer = model.synthesizer
    # sample_sequential_columns first samples the context columns not given from its copula, and
    # fails when all are given (nothing left to sample): transform the given context and sample PAR.
    sampled = synthesizer._sample(synthesizer._process_context_columns(context))
    slots_per_week = 7 * slots_per_day(slot_minutes)
    slot_of_week = np.clip(sampled["slot_of_week"].to_numpy(dtype=float).round(), 0, slots_per_week - 1)
    location, intent = zip(*sampled["event"].str.split(SEP)) if len(sampled) else ((), ())
    return week_events(week, slot_of_week, location, intent, np.random.default_rng(seed), slot_minutes)


def generate_weeks(model: FittedPar, tasks: list[WeekTask], params: ParParams, slot_minutes: int) -> list[WeekResult]:
    import torch

    torch.set_num_threads(params.threads)
    return [WeekResult(generate(model, task.profile, task.week, task.seed, slot_minutes)) for task in tasks]


class SdvPar(GeneratorKind):
    Params = ParParams
    needs_profiles = True

    def fit(self, population_events: pd.DataFrame, params: ParParams, seed: int,
            context: GenerationContext) -> pd.DataFrame:
        return fit(population_events, params, context.slot_minutes, seed)

    def from_table(self, table: pd.DataFrame) -> FittedPar:
        return from_table(table)

    def model_metadata(self, model: FittedPar) -> dict:
        return model_metadata(model)

    def generate_weeks(self, model: FittedPar, tasks: list[WeekTask], params: ParParams,
                       context: GenerationContext) -> list[WeekResult]:
        return generate_weeks(model, tasks, params, context.slot_minutes)


KIND = SdvPar()
