"""BehaviorGPT: a compact GPT-2 trained from scratch on event tokens, the fine-tuned alternative
to prompting ("Beyond Believability": a model trained on real behaviour beats prompt-only).

A training example is one population user's consecutive real weeks (w, w + 1):

    <bos> profile tokens <sep> week w <sep> week w+1 <eos>

a week being its event count, then four tokens per event (days after the previous event's day,
time slot, location, intent); the loss covers only the week w+1 part. Two choices keep generated
weeks as long as real ones (an end-of-week token after any event and absolute weekdays gave 4.9
events per week against 19.4 real on 7 Tokyo users):
- the count comes first, so the length is one categorical draw learned from the data rather than
  a stop decision after every event, whose near-constant hazard makes lengths geometric;
- the day is relative because decoding may only move forward in time: with absolute weekdays any
  spread in the model's weekday distribution is cut to the days still ahead, so each event jumps
  on average halfway to Sunday.
Generation feeds a user's profile and conditioning real week and samples the next
week under constraints, so every event is valid: days and slots never go back in time, the
location is one seen in training and the intent one seen with that location. Sampling draws from
a per-task numpy generator, so a task's week does not depend on the rest of its batch.

The fitted model (weights as safetensors, config and vocabulary) is one row of
`DS.NAME_model`, so it is versioned by content with the warehouse.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from bgen_assets.domain import PROFILE_ATTRIBUTES, slots_per_day, week_of
from bgen_assets.generators import artifact_bytes, artifact_table, thin, week_events
from bgen_assets.generators.contract import GenerationContext, GeneratorKind, WeekResult, WeekTask

PAD, BOS, SEP, EOS, UNK = "<pad>", "<bos>", "<sep>", "<eos>", "<unk>"
IGNORE = -100  # label of positions without loss (prompt, padding)


@dataclass(config=ConfigDict(extra="forbid", frozen=True))
class BehaviorGPTConfig:
    """Sized so that all Tokyo population users (~64k events, ~2,900 week pairs) train in about
    2 CPU-minutes and 7 of them (254 week pairs) in about 22 s (one thread: on a busy 2-core machine
    two threads were 3x slower). Width 96 took 1.6x as long with no better intent JSD or week lengths."""

    n_layer: int = Field(2, ge=1)
    n_head: int = Field(4, ge=1)
    n_embd: int = Field(64, ge=8)
    max_events_per_week: int = Field(64, ge=1, description="longer weeks are thinned (seeded) to this many events")
    epochs: int = Field(6, ge=1)
    min_steps: int = Field(100, ge=0, description="more epochs when the population is small: a model of a few "
                           "dozen optimizer steps has not learned even the distribution of week lengths")
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    temperature: float = Field(1.0, gt=0)
    generation_batch_size: int = Field(64, ge=1)
    threads: int = Field(1, ge=1, description="torch CPU threads")

    @property
    def context_length(self) -> int:
        return len(PROFILE_ATTRIBUTES) + 6 + 8 * self.max_events_per_week   # <bos> <sep> <sep> <eos>, two counts


class Vocabulary:
    """Token ids: specials, event counts (0 to `max_events`), day gaps (days after the previous
    event's day, the first event's counted from Monday), time slots, locations, intents, profile values (`attr=value`).
    `intents_by_location` holds the (location, intent) pairs seen in training."""

    def __init__(self, tokens: list[str], intents_by_location: dict[str, list[str]], slots_per_day: int):
        self.tokens, self.intents_by_location, self.slots_per_day = tokens, intents_by_location, slots_per_day
        self.id = {token: i for i, token in enumerate(tokens)}
        self.counts = np.array([i for i, token in enumerate(tokens) if token.startswith("count:")])  # of 0, 1, ...
        self.day_gaps = np.array([self.id[f"gap:{d}"] for d in range(7)])
        self.slots = np.array([self.id[f"slot:{s}"] for s in range(slots_per_day)])
        self.locations = np.array([self.id[f"loc:{loc}"] for loc in intents_by_location])
        self.intents_of = {self.id[f"loc:{loc}"]: np.array([self.id[f"intent:{i}"] for i in intents])
                           for loc, intents in intents_by_location.items()}

    @classmethod
    def build(cls, events: pd.DataFrame, slots_per_day: int, max_events: int) -> Vocabulary:
        pairs = events.groupby("location")["intent"].unique()
        intents_by_location = {loc: sorted(intents) for loc, intents in sorted(pairs.items())}
        tokens = [PAD, BOS, SEP, EOS, UNK, *(f"count:{n}" for n in range(max_events + 1)),
                  *(f"gap:{d}" for d in range(7)), *(f"slot:{s}" for s in range(slots_per_day)),
                  *(f"loc:{loc}" for loc in intents_by_location), *(f"intent:{i}" for i in sorted(events["intent"].unique())),
                  *sorted({f"{a}={v}" for a in PROFILE_ATTRIBUTES for v in events[a].unique()})]
        return cls(tokens, intents_by_location, slots_per_day)

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "intents_by_location": self.intents_by_location, "slots_per_day": self.slots_per_day}

    def profile(self, profile: dict[str, str]) -> list[int]:
        return [self.id.get(f"{a}={profile.get(a)}", self.id[UNK]) for a in PROFILE_ATTRIBUTES]

    def week(self, events: pd.DataFrame) -> list[int]:
        """The event count, then four tokens per event (events in time order, at most `max_events`);
        an event outside the training vocabulary becomes <unk> tokens."""
        ids = [int(self.counts[len(events)])]
        gaps = np.diff(events["weekday"].to_numpy(), prepend=0)
        for e, gap in zip(events.itertuples(), gaps):
            ids += [self.id[f"gap:{gap}"], self.id[f"slot:{e.time_slot}"],
                    self.id.get(f"loc:{e.location}", self.id[UNK]), self.id.get(f"intent:{e.intent}", self.id[UNK])]
        return ids

    def prompt(self, profile: dict[str, str], week: pd.DataFrame) -> list[int]:
        return [self.id[BOS], *self.profile(profile), self.id[SEP], *self.week(week), self.id[SEP]]


def training_pairs(events: pd.DataFrame, vocabulary: Vocabulary, config: BehaviorGPTConfig,
                   rng: np.random.Generator) -> list[tuple[list, list]]:
    """(prompt ids, answer ids) for every population user-week followed by a week with events."""
    events = events.assign(week=week_of(events["ts"]))
    pairs = []
    for _, user_events in events.groupby("user_id", sort=True):
        weeks = {week: thin(frame, config.max_events_per_week, rng) for week, frame in user_events.groupby("week")}
        profile = user_events.iloc[0][PROFILE_ATTRIBUTES].to_dict()
        for week, frame in weeks.items():
            following = (pd.Timestamp(week) + pd.Timedelta(days=7)).strftime("%Y-%m-%d")
            if following in weeks:
                pairs.append((vocabulary.prompt(profile, frame), vocabulary.week(weeks[following]) + [vocabulary.id[EOS]]))
    return pairs


def new_model(config: BehaviorGPTConfig, vocab_size: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(
        vocab_size=vocab_size, n_positions=config.context_length, n_embd=config.n_embd, n_layer=config.n_layer,
        n_head=config.n_head, resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
        bos_token_id=1, eos_token_id=3, pad_token_id=0))


def batches(pairs: list, config: BehaviorGPTConfig, rng: np.random.Generator) -> list[list[int]]:
    """Shuffled batches of similar length (sorted within chunks of 8 batches), so padding is small."""
    order, size = rng.permutation(len(pairs)), config.batch_size
    chunked = []
    for start in range(0, len(order), 8 * size):
        chunk = sorted(order[start:start + 8 * size], key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        chunked += [chunk[i:i + size] for i in range(0, len(chunk), size)]
    return [chunked[i] for i in rng.permutation(len(chunked))]


def collate(pairs: list, indices: list[int]):
    import torch

    sequences = [pairs[i][0] + pairs[i][1] for i in indices]
    width = max(map(len, sequences))
    input_ids = torch.zeros(len(indices), width, dtype=torch.long)
    labels = torch.full((len(indices), width), IGNORE, dtype=torch.long)
    attention = torch.zeros(len(indices), width, dtype=torch.long)
    for row, i in enumerate(indices):
        prompt, answer = pairs[i]
        n = len(prompt) + len(answer)
        input_ids[row, :n] = torch.tensor(prompt + answer)
        labels[row, len(prompt):n] = torch.tensor(answer)
        attention[row, :n] = 1
    return input_ids, attention, labels


def fit(population_events: pd.DataFrame, config: BehaviorGPTConfig, slot_minutes: int, seed: int) -> pd.DataFrame:
    """Train from scratch on the population users' consecutive real weeks; one-row model table."""
    import torch
    from safetensors.torch import save
    from transformers import get_cosine_schedule_with_warmup

    torch.set_num_threads(config.threads)
    torch.manual_seed(seed)
    vocabulary = Vocabulary.build(population_events, slots_per_day(slot_minutes), config.max_events_per_week)
    rng = np.random.default_rng(seed)
    pairs = training_pairs(population_events, vocabulary, config, rng)
    if not pairs:
        raise ValueError("no population user has two consecutive weeks with events to train on")
    model = new_model(config, len(vocabulary.tokens))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    batches_per_epoch = math.ceil(len(pairs) / config.batch_size)
    epochs = max(config.epochs, math.ceil(config.min_steps / batches_per_epoch))
    steps = epochs * batches_per_epoch
    schedule = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=max(1, steps // 20), num_training_steps=steps)
    model.train()
    losses = []
    for _ in range(epochs):
        epoch_loss = []
        for indices in batches(pairs, config, rng):
            input_ids, attention, labels = collate(pairs, indices)
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            epoch_loss.append(loss.item())
        losses.append(round(float(np.mean(epoch_loss)), 4))
    settings = {"config": asdict(config), "vocabulary": vocabulary.to_dict(), "training_pairs": len(pairs),
                "epoch_losses": losses}
    weights = save({name: tensor.clone() for name, tensor in model.state_dict().items()})  # clone: tied embeddings
    return artifact_table(weights).assign(settings=json.dumps(settings))


class Fitted:
    """The trained model with its config and vocabulary."""

    def __init__(self, table: pd.DataFrame):
        from safetensors.torch import load

        settings = json.loads(table["settings"].iloc[0])
        self.config = BehaviorGPTConfig(**settings["config"])
        self.vocabulary = Vocabulary(**settings["vocabulary"])
        self.epoch_losses = settings["epoch_losses"]
        self.training_pairs = settings["training_pairs"]
        self.model = new_model(self.config, len(self.vocabulary.tokens))
        self.model.load_state_dict(load(artifact_bytes(table)))
        self.model.eval()


def from_table(table: pd.DataFrame) -> Fitted:
    return Fitted(table)


def model_metadata(fitted: Fitted) -> dict:
    return {"parameters": sum(p.numel() for p in fitted.model.parameters()), "training_pairs": fitted.training_pairs,
            "final_loss": fitted.epoch_losses[-1], "epochs": len(fitted.epoch_losses)}


class WeekDecoder:
    """One generated week's state: which token comes next and what it may be."""

    def __init__(self, vocabulary: Vocabulary, max_events: int, rng: np.random.Generator):
        self.vocabulary, self.max_events, self.rng = vocabulary, max_events, rng
        self.events: list[tuple[int, int, str, str]] = []   # weekday, slot, location, intent
        self.partial: list[int] = []                          # token ids of the event being written
        self.count: int | None = None                         # events the week will have, drawn first
        self.done = False

    def allowed(self) -> np.ndarray:
        v = self.vocabulary
        if self.count is None:
            return v.counts[1:self.max_events + 1]
        if len(self.partial) == 0:
            if len(self.events) == self.count:
                return np.array([v.id[EOS]])
            return v.day_gaps[:7 - (self.events[-1][0] if self.events else 0)]
        if len(self.partial) == 1:
            same_day = self.events and self.partial[0] == v.day_gaps[0]
            return v.slots[self.events[-1][1]:] if same_day else v.slots
        if len(self.partial) == 2:
            return v.locations
        return v.intents_of[self.partial[2]]

    def choose(self, logits: np.ndarray, temperature: float) -> int:
        """Sample among the allowed tokens from this week's own random stream."""
        ids = self.allowed()
        scores = logits[ids] / temperature
        probabilities = np.exp(scores - scores.max())
        token = int(ids[np.searchsorted(np.cumsum(probabilities), self.rng.random() * probabilities.sum())])
        self.advance(token)
        return token

    def advance(self, token: int) -> None:
        v = self.vocabulary
        if token == v.id[EOS]:
            self.done = True
            return
        if self.count is None:
            self.count = int(np.searchsorted(v.counts, token))
            return
        self.partial.append(token)
        if len(self.partial) == 4:
            gap, slot, location, intent = (v.tokens[t].split(":", 1)[1] for t in self.partial)
            day = (self.events[-1][0] if self.events else 0) + int(gap)
            self.events.append((day, int(slot), location, intent))
            self.partial = []


def sample_weeks(fitted: Fitted, prompts: list[list[int]], rngs: list[np.random.Generator]) -> list[WeekDecoder]:
    """Constrained sampling for a batch of prompts (left-padded, one forward step per token)."""
    import torch

    config, vocabulary = fitted.config, fitted.vocabulary
    decoders = [WeekDecoder(vocabulary, config.max_events_per_week, rng) for rng in rngs]
    width = max(map(len, prompts))
    input_ids = torch.zeros(len(prompts), width, dtype=torch.long)
    attention = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt):] = torch.tensor(prompt)
        attention[row, width - len(prompt):] = 1
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    cache = None
    with torch.inference_mode():
        for _ in range(4 * config.max_events_per_week + 2):
            output = fitted.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                                  past_key_values=cache, use_cache=True)
            cache, logits = output.past_key_values, output.logits[:, -1].double().numpy()
            tokens = [decoder.choose(row_logits, config.temperature) if not decoder.done else vocabulary.id[PAD]
                      for decoder, row_logits in zip(decoders, logits)]
            if all(decoder.done for decoder in decoders):
                break
            input_ids = torch.tensor(tokens).unsqueeze(1)
            attention = torch.cat([attention, torch.ones(len(prompts), 1, dtype=torch.long)], dim=1)
            positions = positions[:, -1:] + 1
    return decoders


def generate_weeks(fitted: Fitted, tasks: list[WeekTask], slot_minutes: int) -> list[WeekResult]:
    import torch

    config, vocabulary = fitted.config, fitted.vocabulary
    torch.set_num_threads(config.threads)
    prompts = []
    for task in tasks:
        shown = thin(task.history[task.history["week"] == task.week], config.max_events_per_week,
                     np.random.default_rng([*task.seed, 0]))
        prompts.append(vocabulary.prompt(task.profile, shown))
    order = sorted(range(len(tasks)), key=lambda i: len(prompts[i]))  # less padding per batch
    results: list[WeekResult | None] = [None] * len(tasks)
    for start in range(0, len(order), config.generation_batch_size):
        batch = order[start:start + config.generation_batch_size]
        decoders = sample_weeks(fitted, [prompts[i] for i in batch],
                                [np.random.default_rng([*tasks[i].seed, 1]) for i in batch])
        for i, decoder in zip(batch, decoders):
            day, slot, location, intent = zip(*decoder.events)
            slot_of_week = np.array(day) * vocabulary.slots_per_day + np.array(slot)
            week = week_events(tasks[i].week, slot_of_week, location, intent,
                               np.random.default_rng([*tasks[i].seed, 2]), slot_minutes)
            results[i] = WeekResult(week)
    return results


class BehaviorGPT(GeneratorKind):
    Params = BehaviorGPTConfig
    needs_profiles = True

    def fit(self, population_events: pd.DataFrame, params: BehaviorGPTConfig, seed: int,
            context: GenerationContext) -> pd.DataFrame:
        return fit(population_events, params, context.slot_minutes, seed)

    def from_table(self, table: pd.DataFrame) -> Fitted:
        return from_table(table)

    def model_metadata(self, model: Fitted) -> dict:
        return model_metadata(model)

    def generate_weeks(self, model: Fitted, tasks: list[WeekTask], params: BehaviorGPTConfig,
                       context: GenerationContext) -> list[WeekResult]:
        return generate_weeks(model, tasks, context.slot_minutes)


KIND = BehaviorGPT()
