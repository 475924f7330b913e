"""SeqGAN's networks, training and decoding (the method: bgen_assets/generators/seqgan.py)."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

from bgen_assets import domain
from bgen_assets.domain import week_of
from bgen_assets.generators import artifact_bytes, artifact_table, thin, week_events
from bgen_assets.generators.contract import WeekResult, WeekTask
from bgen_assets.generators.seqgan import SeqGANConfig

PAD, BOS, EOS, COUNT0 = 0, 1, 2, 3   # count tokens (1 to max_events events) follow, then slots, then pairs
SEP = "\x1f"


class Vocabulary:
    """Token ids of event counts, slots and (location, intent) pairs."""

    def __init__(self, slots_per_week: int, pairs: list[str], max_events: int):
        self.slots_per_week, self.pairs, self.max_events = slots_per_week, pairs, max_events
        self.slot0 = COUNT0 + max_events
        self.pair0 = self.slot0 + slots_per_week
        self.size = self.pair0 + len(pairs)
        self.pair_id = {pair: self.pair0 + i for i, pair in enumerate(pairs)}
        self.ids = torch.arange(self.size)
        # what may follow, by state: 0 after BOS, 1 wants a slot, 2 after a slot, 3 count reached, 4 after EOS
        self.grammar = torch.stack([self.is_count(self.ids), self.is_slot(self.ids), self.is_pair(self.ids),
                                    self.ids == EOS, self.ids == PAD])

    @classmethod
    def of_events(cls, events: pd.DataFrame, slots_per_day: int, max_events: int) -> Vocabulary:
        """The vocabulary of these (population) events: every (location, intent) pair they hold."""
        return cls(7 * slots_per_day, sorted(set(events["location"] + SEP + events["intent"])), max_events)

    def is_count(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens >= COUNT0) & (tokens < self.slot0)

    def is_slot(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens >= self.slot0) & (tokens < self.pair0)

    def is_pair(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens >= self.pair0

    def count_token(self, events: int) -> int:
        return COUNT0 + events - 1

    @staticmethod
    def count_of(tokens: torch.Tensor) -> torch.Tensor:
        """The number of events a count token stands for."""
        return tokens - COUNT0 + 1

    def tokens(self, events: pd.DataFrame, slots_per_day: int) -> np.ndarray:
        """(slot token, pair token) per event (rows in the events' order); pair 0 where unknown."""
        pairs = (events["location"] + SEP + events["intent"]).map(self.pair_id).fillna(0).to_numpy("int64")
        return np.column_stack([self.slot0 + events["weekday"].to_numpy("int64") * slots_per_day
                                + events["time_slot"].to_numpy("int64"), pairs])

    def allowed(self, last: torch.Tensor, floor: torch.Tensor, remaining: torch.Tensor) -> torch.Tensor:
        """Which tokens may follow `last` (any shape), given the latest slot token `floor` and the
        events still to write: the grammar of a week, as a boolean mask."""
        state = torch.where(last == BOS, 0, 1)
        state = torch.where(self.is_slot(last), 2, state)
        state = torch.where(self.is_pair(last) & (remaining <= 0), 3, state)
        state = torch.where((last == EOS) | (last == PAD), 4, state)
        return self.grammar[state] & ((self.ids >= floor[..., None]) | ~self.is_slot(self.ids))

    def progress(self, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The latest slot token and the events still to write after each week prefix (B, L >= 1)."""
        floor = torch.where(self.is_slot(prefix), prefix, self.slot0).amax(1)
        return floor, self.count_of(prefix[:, 0]) - self.is_pair(prefix).sum(1)


class Generator(nn.Module):
    def __init__(self, vocabulary: Vocabulary, config: SeqGANConfig):
        super().__init__()
        self.vocabulary, self.length = vocabulary, 2 * config.max_events + 2   # count, events, EOS
        self.embed = nn.Embedding(vocabulary.size, config.embed, padding_idx=PAD)
        self.gru = nn.GRU(config.embed, config.hidden, batch_first=True)
        self.head = nn.Linear(config.hidden, vocabulary.size)

    def encode(self, conditions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The state after reading each conditioning week (BOS + its tokens)."""
        packed = pack_padded_sequence(self.embed(conditions), lengths, batch_first=True, enforce_sorted=False)
        return self.gru(packed)[1]

    def masks(self, weeks: torch.Tensor) -> torch.Tensor:
        """The grammar mask at every position of teacher-forced weeks (B, L) -> (B, L, V)."""
        v = self.vocabulary
        previous = F.pad(weeks[:, :-1], (1, 0), value=BOS)
        floor = torch.where(v.is_slot(previous), previous, v.slot0).cummax(dim=1).values
        remaining = v.count_of(weeks[:, :1]) - v.is_pair(previous).long().cumsum(1)
        return v.allowed(previous, floor, remaining)

    def log_probs(self, state: torch.Tensor, weeks: torch.Tensor) -> torch.Tensor:
        """Log-probability of each token of the weeks (B, L), under the grammar."""
        inputs = F.pad(weeks[:, :-1], (1, 0), value=BOS)
        logits = self.head(self.gru(self.embed(inputs), state)[0]).masked_fill(~self.masks(weeks), -torch.inf)
        return logits.log_softmax(-1).gather(-1, weeks[..., None]).squeeze(-1).masked_fill(weeks == PAD, 0.0)

    @torch.no_grad()
    def sample(self, state, last, floor, remaining, start: int, rng: torch.Generator | None = None) -> torch.Tensor:
        """Continue weeks from position `start` (after token `last`, latest slot `floor`, `remaining`
        events still to write) to the end."""
        v = self.vocabulary
        tokens = []
        for _ in range(start, self.length):
            output, state = self.gru(self.embed(last[:, None]), state)
            logits = self.head(output[:, 0]).masked_fill(~v.allowed(last, floor, remaining), -torch.inf)
            last = torch.multinomial(logits.softmax(-1), 1, generator=rng)[:, 0]
            floor = torch.where(v.is_slot(last), last, floor)
            remaining = torch.where(v.is_count(last), v.count_of(last), remaining - v.is_pair(last).long())
            tokens.append(last)
            if ((last == EOS) | (last == PAD)).all():
                break
        return F.pad(torch.stack(tokens, 1), (0, self.length - start - len(tokens)), value=PAD)

    def generate(self, state: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        batch = state.shape[1]
        return self.sample(state, torch.full((batch,), BOS), torch.full((batch,), self.vocabulary.slot0),
                           torch.zeros(batch, dtype=torch.long), 0, rng)


class Discriminator(nn.Module):
    """A CNN over token embeddings: the logit of a week being real."""

    def __init__(self, vocabulary: Vocabulary, config: SeqGANConfig):
        super().__init__()
        self.embed = nn.Embedding(vocabulary.size, config.embed, padding_idx=PAD)
        self.convolutions = nn.ModuleList(nn.Conv1d(config.embed, config.discriminator_filters, width) for width in (2, 3, 4, 5))
        self.dropout = nn.Dropout(0.25)
        self.out = nn.Linear(4 * config.discriminator_filters, 1)

    def forward(self, weeks: torch.Tensor) -> torch.Tensor:
        x = self.embed(weeks).transpose(1, 2)
        features = torch.cat([conv(x).relu().amax(-1) for conv in self.convolutions], 1)
        return self.out(self.dropout(features)).squeeze(-1)


@dataclass
class FittedSeqGAN:
    generator: Generator
    config: SeqGANConfig
    training_pairs: int


def training_pairs(events: pd.DataFrame, vocabulary: Vocabulary, config: SeqGANConfig, slots_per_day: int,
                   rng: np.random.Generator):
    """(conditioning week, next week) token tensors of every user with events in both weeks; weeks
    longer than `max_events` thinned."""
    events = events.assign(week=week_of(events["ts"])).sort_values(["user_id", "ts"], kind="stable")
    weeks = {key: vocabulary.tokens(thin(frame, config.max_events, rng), slots_per_day)
             for key, frame in events.groupby(["user_id", "week"], sort=True)}
    conditions, targets = [], []
    for (user, week), week_tokens in weeks.items():
        following = weeks.get((user, (pd.Timestamp(week) + pd.Timedelta(days=7)).strftime("%Y-%m-%d")))
        if following is not None:
            conditions.append(torch.tensor([BOS, *week_tokens.ravel()]))
            targets.append(torch.tensor([vocabulary.count_token(len(following)), *following.ravel(), EOS]))
    weeks = torch.full((len(targets), 2 * config.max_events + 2), PAD)
    for row, target in enumerate(targets):
        weeks[row, :len(target)] = target
    return pad_sequence(conditions, batch_first=True), torch.tensor([len(c) for c in conditions]), weeks


def rewards(generator: Generator, discriminator: Discriminator, state, weeks, rollouts: int, every: int) -> torch.Tensor:
    """Per token: the discriminator's mean P(real) over Monte-Carlo completions from the end of
    every `every`-th event (tokens in between share it); tokens after the last such event, EOS
    and after get the score of the week itself."""
    batch, length = weeks.shape
    with torch.no_grad():
        states = generator.gru(generator.embed(F.pad(weeks, (1, 0), value=BOS)), state)[0]
        reward = torch.sigmoid(discriminator(weeks))[:, None].repeat(1, length)
        start = 0
        for end in range(2 * every, length - 1, 2 * every):   # the pair token that ends an event
            running = generator.vocabulary.is_pair(weeks[:, end])
            if not running.any():
                break
            prefix = weeks[:, :end + 1].repeat(rollouts, 1)
            completed = torch.cat([prefix, generator.sample(
                states[:, end + 1].repeat(rollouts, 1)[None], prefix[:, -1], *generator.vocabulary.progress(prefix),
                end + 1)], 1)
            score = torch.sigmoid(discriminator(completed)).view(rollouts, batch).mean(0)
            reward[:, start:end + 1] = torch.where(running, score, reward[:, end])[:, None]
            start = end + 1
    return reward


def train_discriminator(discriminator, optimizer, generator, conditions, lengths, real) -> float:
    with torch.no_grad():
        fake = generator.generate(generator.encode(conditions, lengths))
    logits = discriminator(torch.cat([real, fake]))
    labels = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))])
    loss = F.binary_cross_entropy_with_logits(logits, labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def fit(population_events: pd.DataFrame, config: SeqGANConfig, slot_minutes: int, seed: int) -> pd.DataFrame:
    torch.set_num_threads(config.threads)
    torch.manual_seed(seed)
    slots_per_day = domain.slots_per_day(slot_minutes)
    vocabulary = Vocabulary.of_events(population_events, slots_per_day, config.max_events)
    conditions, lengths, weeks = training_pairs(population_events, vocabulary, config, slots_per_day,
                                                np.random.default_rng(seed))
    generator, discriminator = Generator(vocabulary, config), Discriminator(vocabulary, config)

    def batches(size: int):
        order = torch.randperm(len(weeks))
        return [order[i:i + size] for i in range(0, len(weeks), size)]

    optimizer = torch.optim.Adam(generator.parameters(), lr=config.learning_rate)
    for _ in range(config.pretrain_epochs):
        for batch in batches(config.batch_size):
            target = weeks[batch][:, :int((weeks[batch] != PAD).sum(1).max())]   # no all-padding columns
            loss = -generator.log_probs(generator.encode(conditions[batch], lengths[batch]), target).sum() / (target != PAD).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
    for _ in range(config.discriminator_epochs):
        for batch in batches(config.batch_size):
            train_discriminator(discriminator, d_optimizer, generator, conditions[batch], lengths[batch], weeks[batch])

    optimizer = torch.optim.Adam(generator.parameters(), lr=config.adversarial_learning_rate)
    for _ in range(config.adversarial_steps):
        batch = torch.randperm(len(weeks))[:config.adversarial_batch_size]
        state = generator.encode(conditions[batch], lengths[batch])
        generated = generator.generate(state.detach())
        reward = rewards(generator, discriminator, state.detach(), generated, config.rollouts, config.rollout_every)
        loss = -(generator.log_probs(state, generated) * reward).sum() / len(batch)   # REINFORCE
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        batch = torch.randperm(len(weeks))[:config.adversarial_batch_size]
        train_discriminator(discriminator, d_optimizer, generator, conditions[batch], lengths[batch], weeks[batch])

    buffer = io.BytesIO()
    torch.save({"config": asdict(config), "slots_per_week": vocabulary.slots_per_week, "pairs": vocabulary.pairs,
                "training_pairs": len(weeks), "generator": generator.state_dict()}, buffer)
    return artifact_table(buffer.getvalue())


def from_table(table: pd.DataFrame) -> FittedSeqGAN:
    checkpoint = torch.load(io.BytesIO(artifact_bytes(table)), weights_only=True)
    config = SeqGANConfig(**checkpoint["config"])
    generator = Generator(Vocabulary(checkpoint["slots_per_week"], checkpoint["pairs"], config.max_events), config)
    generator.load_state_dict(checkpoint["generator"])
    return FittedSeqGAN(generator.eval(), config, checkpoint["training_pairs"])


def model_metadata(model: FittedSeqGAN) -> dict:
    return {"parameters": sum(p.numel() for p in model.generator.parameters()),
            "training_pairs": model.training_pairs, "event_pairs": len(model.generator.vocabulary.pairs)}


def generate(model: FittedSeqGAN, history: pd.DataFrame, week: str, seed: list[int], slot_minutes: int) -> pd.DataFrame:
    """The week after `week`, conditioned on the user's real events of `week`."""
    generator, vocabulary = model.generator, model.generator.vocabulary
    slots_per_day = domain.slots_per_day(slot_minutes)
    shown = thin(history[history["week"] == week].sort_values("ts", kind="stable"), model.config.max_events,
                 np.random.default_rng([*seed, 0]))
    tokens = vocabulary.tokens(shown, slots_per_day)
    condition = [BOS, *tokens[tokens[:, 1] > 0].ravel()]   # known pairs only
    rng = torch.Generator().manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))
    with torch.no_grad():
        tokens = generator.generate(generator.encode(torch.tensor([condition]), torch.tensor([len(condition)])), rng)[0]
    tokens = tokens[1:int((tokens == EOS).nonzero()[0])].view(-1, 2).numpy()   # (slot, pair) per event after the count
    location, intent = zip(*(vocabulary.pairs[p - vocabulary.pair0].split(SEP) for p in tokens[:, 1])) if len(tokens) else ((), ())
    return week_events(week, tokens[:, 0] - vocabulary.slot0, location, intent, np.random.default_rng(seed), slot_minutes)


def generate_weeks(model: FittedSeqGAN, tasks: list[WeekTask], slot_minutes: int) -> list[WeekResult]:
    torch.set_num_threads(model.config.threads)
    return [WeekResult(generate(model, task.history, task.week, task.seed, slot_minutes)) for task in tasks]
