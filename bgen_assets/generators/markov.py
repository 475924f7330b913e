"""Order-k Markov baseline over (time slot, location, intent), adapted per user.

Fit (population users): counts of the next event token (location, intent) after each
context of the previous 0..k tokens, counts per 4-hour time-of-day bucket, and a
time-of-week histogram. Generation (one user, one week): the event count is drawn from
the user's past weekly counts, times from the population histogram mixed with the user's,
tokens from the highest-order context seen (population + user_weight x user counts),
reweighted by how typical each token is for the time of day.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from bgen_assets import domain
from bgen_assets.generators.contract import GenerationContext, GeneratorKind, WeekResult, WeekTask

TOKEN_SEP, CONTEXT_SEP = "\x1f", "\x1e"
BUCKET_MINUTES = 240


@dataclass
class Counts:
    transitions: dict[str, Counter]  # context (tokens joined by CONTEXT_SEP; "" = order 0) -> next-token counts
    buckets: dict[str, Counter]      # time-of-day bucket -> token counts
    time_of_week: Counter            # weekday * slots_per_day + time_slot -> count


class MarkovParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    order: int = Field(2, ge=0, description="tokens of context")
    user_weight: float = Field(4.0, ge=0, description="weight of the user's own counts against the population's")


def tokens_of(events: pd.DataFrame) -> list[str]:
    return (events["location"] + TOKEN_SEP + events["intent"]).tolist()


def _bucket(time_slot: int, slot_minutes: int) -> str:
    return str(time_slot * slot_minutes // BUCKET_MINUTES)


def count(events: pd.DataFrame, order: int, slot_minutes: int) -> Counts:
    transitions: dict[str, Counter] = defaultdict(Counter)
    buckets: dict[str, Counter] = defaultdict(Counter)
    slots_per_day = domain.slots_per_day(slot_minutes)
    for _, user_events in events.sort_values(["user_id", "ts"]).groupby("user_id", sort=False):
        tokens = tokens_of(user_events)
        for i, token in enumerate(tokens):
            for j in range(min(order, i) + 1):
                transitions[CONTEXT_SEP.join(tokens[i - j:i])][token] += 1
        for slot, token in zip(user_events["time_slot"], tokens):
            buckets[_bucket(slot, slot_minutes)][token] += 1
    time_of_week = Counter((events["weekday"] * slots_per_day + events["time_slot"]).astype(int).tolist())
    return Counts(dict(transitions), dict(buckets), time_of_week)


def fit(population_events: pd.DataFrame, params: MarkovParams, slot_minutes: int) -> pd.DataFrame:
    """The population counts as a long table (kind, context, token, count)."""
    counts = count(population_events, params.order, slot_minutes)
    rows = [("transition", ctx, tok, n) for ctx, counter in counts.transitions.items() for tok, n in counter.items()]
    rows += [("bucket", b, tok, n) for b, counter in counts.buckets.items() for tok, n in counter.items()]
    rows += [("time_of_week", "", str(slot), n) for slot, n in counts.time_of_week.items()]
    return pd.DataFrame(rows, columns=["kind", "context", "token", "count"]).astype({"count": "int64"})


def from_table(table: pd.DataFrame) -> Counts:
    transitions: dict[str, Counter] = defaultdict(Counter)
    buckets: dict[str, Counter] = defaultdict(Counter)
    time_of_week: Counter = Counter()
    for kind, context, token, n in table.itertuples(index=False):
        if kind == "transition":
            transitions[context][token] = n
        elif kind == "bucket":
            buckets[context][token] = n
        else:
            time_of_week[int(token)] = n
    return Counts(dict(transitions), dict(buckets), time_of_week)


def _vector(counter: Counter | None, index: dict[str, int]) -> np.ndarray:
    vector = np.zeros(len(index))
    for token, n in (counter or {}).items():
        vector[index[token]] += n
    return vector


def generate(
    model: Counts, history: pd.DataFrame, week: str, params: MarkovParams, rng: np.random.Generator, slot_minutes: int
) -> pd.DataFrame:
    """Events of the week after `week` for one user whose real history (up to `week`) is given."""
    order, user_weight = params.order, params.user_weight
    slots_per_day = domain.slots_per_day(slot_minutes)
    past = history[history["week"] <= week]
    user = count(past, order, slot_minutes)

    n_events = int(rng.choice(past.groupby("week").size().to_numpy()))
    week_slots = 7 * slots_per_day
    population_time = np.array([model.time_of_week.get(s, 0) for s in range(week_slots)], float) + 1e-3
    user_time = np.array([user.time_of_week.get(s, 0) for s in range(week_slots)], float)
    time_weights = population_time / population_time.sum() + user_weight * user_time / max(user_time.sum(), 1)
    slots = np.sort(rng.choice(week_slots, size=n_events, p=time_weights / time_weights.sum()))

    vocabulary = sorted(set(model.transitions.get("", {})) | set(user.transitions.get("", {})))
    index = {token: i for i, token in enumerate(vocabulary)}
    unigram = _vector(model.transitions.get(""), index) + user_weight * _vector(user.transitions.get(""), index) + 1e-3
    unigram /= unigram.sum()

    context = tokens_of(past[past["week"] == week])[-order:] if order else []
    generated = []
    for slot in slots:
        for j in range(len(context), -1, -1):
            key = CONTEXT_SEP.join(context[len(context) - j:])
            scores = _vector(model.transitions.get(key), index) + user_weight * _vector(user.transitions.get(key), index)
            if scores.sum() > 0:
                break
        probabilities = scores / scores.sum() + 0.05 * unigram
        bucket = _bucket(int(slot % slots_per_day), slot_minutes)
        in_bucket = _vector(model.buckets.get(bucket), index) + user_weight * _vector(user.buckets.get(bucket), index) + 1.0
        probabilities *= (in_bucket / in_bucket.sum()) / unigram
        token = vocabulary[rng.choice(len(vocabulary), p=probabilities / probabilities.sum())]
        generated.append(token)
        context = (context + [token])[-order:] if order else []

    target_monday = pd.Timestamp(week) + pd.Timedelta(days=7)
    weekday, time_slot = slots // slots_per_day, slots % slots_per_day
    # sorting keeps each event inside its slot, so times increase in generation order
    minutes = np.sort(weekday * domain.MINUTES_PER_DAY + time_slot * slot_minutes + rng.integers(0, slot_minutes, n_events))
    offsets = pd.to_timedelta(minutes, unit="min")
    location, intent = zip(*(token.split(TOKEN_SEP) for token in generated)) if generated else ((), ())
    return pd.DataFrame({
        "ts": target_monday + offsets,
        "weekday": weekday.astype("int64"),
        "time_slot": time_slot.astype("int64"),
        "location": list(location),
        "intent": list(intent),
    })


class Markov(GeneratorKind):
    Params = MarkovParams

    def fit(self, population_events: pd.DataFrame, params: MarkovParams, seed: int,
            context: GenerationContext) -> pd.DataFrame:
        return fit(population_events, params, context.slot_minutes)

    def from_table(self, table: pd.DataFrame) -> Counts:
        return from_table(table)

    def generate_weeks(self, model: Counts, tasks: list[WeekTask], params: MarkovParams,
                       context: GenerationContext) -> list[WeekResult]:
        return [WeekResult(generate(model, task.history, task.week, params, np.random.default_rng(task.seed),
                                    context.slot_minutes))
                for task in tasks]


KIND = Markov()
