"""Next-intent predictors: given a user's last N events and the weekday and time slot of the
next event, rank all intents (the BehaviorGen paper's next-intent task and its predictors).

Frames in, frames out. Every function takes pandas frames of events with the columns of
`DS.events` (user_id, ts, weekday, time_slot, location, intent). Two optional columns:

  target  bool, default True: the rows whose intent is a training / evaluation target; the
          other rows only serve as history (e.g. a user's train period before the test rows).
  weight  float, default 1: the row's weight in the loss when it is a target.

Rows are grouped into sequences by `sequence_keys(frame)`: user_id, and also target_week and
sample when the frame has them (a synthetic user-week is a sequence of its own, never spliced
into the real one, nor into another sample of the same week). Within a sequence rows are
ordered by ts (then location).

API:

    from bgen_assets.predictors.core import PredictorConfig, fit, TrainedPredictor
    from bgen_assets.predictors import metrics, pituning, behaviorlm

    config = PredictorConfig(backbone="bert4rec")              # or "pituning"
    population = fit(config, train={"real": real, "synthetic": synthetic}, valid=valid,
                     intents=all_intents, on_epoch=run.log_epoch)
        # train: one frame, or {source: frame}: loss = sum over sources of each source's
        # weighted mean cross-entropy (the paper's CE(real) + CE(synthetic)).
    user_model = fit(config, user_train, user_valid, init=population)   # plain fine-tune
    user_model = pituning.fit_individual(population, user_train, user_valid)  # PITuning stage 2
    user_model = behaviorlm.progressive_fit(config, user_train, user_valid, init=population)

    predictions = user_model.predict(user_events_with_test_targets)    # Predictions
    predictions.frame     # one row per target: user_id, ts, intent (true), predicted
    predictions.scores    # [targets, intents] log-probabilities; predictions.intents names the columns
    predictions.ranked()  # per target, the intents best first
    user_model.target_losses(frame)    # cross-entropy per target row (index: the frame's)
    pooled, per_user = metrics.evaluate(predictions, anchors=metrics.anchor_intents(counts, 0.8))

    user_model.save(directory); TrainedPredictor.load(directory)
    user_model.history    # per epoch: train_loss, valid_loss, regulariser, seconds; .best_epoch, .stopped_early

Backbones are modules named in BACKBONES, each with a `Model(config, encoder)` (nn.Module)
whose forward(batch) returns (logits of the last position [B, intents], and in training the
other supervised positions as (logits [B, K, intents], labels [B, K], weights [B, K]) or None).
Training (`fit`) is shared: AdamW, seeded and deterministic (torch deterministic algorithms,
seeded shuffling), early stopping on validation loss with the best epoch's weights restored,
an optional `regulariser(model, batch, logits) -> scalar` added to every step's loss.
Training samples are windows of N + 1 events ending every `stride` events; every target
position in them is supervised (Bert4Rec: the masked ones; PITuning: all, causally), so an
epoch costs one sample per `stride` events instead of one per event. Validation and
prediction use one sample per target row, the target in the last position.
Tracking these trainings in MLflow: bgen_assets/tracking.py.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import import_module
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from bgen_assets.predictor_config import BACKBONES, PredictorConfig  # noqa: F401  (re-exported: the API)

EVENT_FIELDS = ("weekday", "time_slot", "location", "intent")
PAD, MASK, UNKNOWN = 0, 1, 2          # reserved ids of every vocabulary
SPECIAL = ("<pad>", "<mask>", "<unk>")


def sequence_keys(frame: pd.DataFrame) -> list[str]:
    """The columns that identify a sequence: a synthetic user-week's sample is its own sequence."""
    return ["user_id", *(key for key in ("target_week", "sample") if key in frame.columns)]


@dataclass
class Vocabulary:
    values: list                      # the known values; value i has id i + len(SPECIAL)

    def __post_init__(self):
        self.index = {value: i + len(SPECIAL) for i, value in enumerate(self.values)}

    def __len__(self) -> int:
        return len(self.values) + len(SPECIAL)

    def encode(self, column: pd.Series) -> np.ndarray:
        return column.map(self.index).fillna(UNKNOWN).to_numpy(dtype=np.int64)


@dataclass
class Windows:
    """Samples of N + 1 consecutive events of one sequence; the last position is the predicted
    event (its location and intent masked in `ids`)."""

    ids: torch.Tensor                 # [S, N + 1, 4] weekday, time_slot, location, intent ids
    label: torch.Tensor               # [S, N + 1] intent class per position, -100 for padding / unknown
    weight: torch.Tensor              # [S, N + 1] loss weight per position, 0 where not a target
    source: torch.Tensor              # [S] index of the training source
    rows: pd.DataFrame                # the rows at the last positions (user_id, ts, intent, ...)

    def __len__(self) -> int:
        return len(self.source)

    def batch(self, index: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        ids = self.ids[index].to(device)
        return {"weekday": ids[..., 0], "time_slot": ids[..., 1], "location": ids[..., 2],
                "intent": ids[..., 3], "label": self.label[index].to(device),
                "weight": self.weight[index].to(device), "source": self.source[index].to(device)}


@dataclass
class EventEncoder:
    """Vocabularies of the four event fields; intents are also the classes ranked."""

    vocabularies: dict[str, Vocabulary]

    @classmethod
    def fit(cls, frame: pd.DataFrame, intents: list[str] | None = None,
            locations: list[str] | None = None) -> EventEncoder:
        """Vocabularies from a training frame; `intents` / `locations` (e.g. the dataset's
        vocabulary) fix the lists instead, so every intent gets a score."""
        declared = {"intent": intents, "location": locations}
        return cls({name: Vocabulary(sorted(declared.get(name) or frame[name].dropna().unique().tolist()))
                    for name in EVENT_FIELDS})

    @property
    def intents(self) -> list[str]:
        return self.vocabularies["intent"].values

    def to_json(self) -> dict:
        return {name: [v.item() if hasattr(v, "item") else v for v in vocab.values]
                for name, vocab in self.vocabularies.items()}

    @classmethod
    def from_json(cls, raw: dict) -> EventEncoder:
        return cls({name: Vocabulary(values) for name, values in raw.items()})

    def windows(self, frame: pd.DataFrame, history: int, min_history: int = 1, source: int = 0,
                stride: int = 1) -> Windows:
        """Samples of `history` + 1 consecutive events of a sequence (left-padded).

        stride 1: one sample ending at every target row (what is predicted and evaluated).
        stride s: samples ending at every s-th row counted back from each sequence's end, kept
        when they hold a target (training: the backbones learn from every position of a sample).
        A position's weight is the row's `weight` when the row is a target with at least
        `min_history` earlier events in its sequence, else 0."""
        keys = sequence_keys(frame)
        frame = frame.sort_values([*keys, "ts", "location"], kind="stable")
        ids = np.stack([self.vocabularies[name].encode(frame[name]) for name in EVENT_FIELDS], axis=1)
        position = np.arange(len(frame))
        first = frame[keys].ne(frame[keys].shift()).any(axis=1).to_numpy()
        start = np.maximum.accumulate(np.where(first, position, 0))
        last = np.append(first[1:], True)
        end = np.minimum.accumulate(np.where(last, position, len(frame))[::-1])[::-1]
        target = frame["target"].to_numpy(bool) if "target" in frame else np.ones(len(frame), bool)
        given = frame["weight"].to_numpy(np.float32) if "weight" in frame else np.ones(len(frame), np.float32)
        weight = np.where(target & (position - start >= min_history), given, 0).astype(np.float32)
        label = np.where(ids[:, 3] >= len(SPECIAL), ids[:, 3] - len(SPECIAL), -100)
        if stride == 1:
            chosen = np.flatnonzero(weight > 0)
        else:
            chosen = np.flatnonzero((end - position) % stride == 0)
        span = chosen[:, None] + np.arange(-history, 1)[None, :]
        inside = span >= start[chosen, None]
        span = np.where(inside, span, 0)
        window_weight = np.where(inside, weight[span], 0)
        if stride != 1:
            keep = window_weight.sum(1) > 0
            chosen, span, inside, window_weight = chosen[keep], span[keep], inside[keep], window_weight[keep]
        window = np.where(inside[..., None], ids[span], PAD)
        window[:, -1, 2:] = MASK
        return Windows(torch.from_numpy(window), torch.from_numpy(np.where(inside, label[span], -100)),
                       torch.from_numpy(window_weight), torch.full((len(chosen),), source, dtype=torch.long),
                       frame.iloc[chosen])


def backbone(name: str):
    return import_module(BACKBONES[name])


@dataclass
class Predictions:
    frame: pd.DataFrame               # user_id, ts, intent (true), predicted; one row per target
    scores: np.ndarray                # [targets, len(intents)]
    intents: list[str]

    def ranked(self) -> list[list[str]]:
        """Intents per target, best first; equal scores keep the intents' vocabulary order."""
        order = np.argsort(-self.scores, axis=1, kind="stable")
        return [[self.intents[i] for i in row] for row in order]


@dataclass
class TrainedPredictor:
    config: PredictorConfig
    encoder: EventEncoder
    model: nn.Module
    history: list[dict] = field(default_factory=list)   # per epoch: epoch, train_loss, valid_loss, seconds
    best_epoch: int | None = None
    stopped_early: bool = False

    def windows(self, frame: pd.DataFrame, source: int = 0, stride: int = 1) -> Windows:
        return self.encoder.windows(frame, self.config.history, self.config.min_history, source, stride)

    @torch.no_grad()
    def logits(self, windows: Windows) -> torch.Tensor:
        device = self.config.resolved_device()
        self.model.to(device).eval()
        parts = [self.model(windows.batch(index, device))[0].float().cpu()
                 for index in torch.arange(len(windows)).split(max(self.config.batch_size, 1024))]
        return torch.cat(parts) if parts else torch.empty(0, len(self.encoder.intents))

    def predict(self, frame: pd.DataFrame) -> Predictions:
        """Scores (log-probabilities) of every intent for each target row of the frame."""
        windows = self.windows(frame)
        with _torch_settings(self.config):
            scores = torch.log_softmax(self.logits(windows), dim=-1).numpy()
        rows = windows.rows[[c for c in ("user_id", "ts", "intent") if c in windows.rows]].reset_index(drop=True)
        rows["predicted"] = [self.encoder.intents[i] for i in scores.argmax(axis=1)] if len(rows) else []
        return Predictions(rows, scores, list(self.encoder.intents))

    def target_losses(self, frame: pd.DataFrame) -> pd.Series:
        """Cross-entropy of each target row (index: the frame's index); NaN for unknown intents."""
        windows = self.windows(frame)
        with _torch_settings(self.config):
            losses = nn.functional.cross_entropy(self.logits(windows), windows.label[:, -1], reduction="none",
                                                 ignore_index=-100)
        losses[windows.label[:, -1] < 0] = float("nan")
        return pd.Series(losses.numpy(), index=windows.rows.index, name="loss")

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), directory / "model.pt")
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        (directory / "vocabulary.json").write_text(json.dumps(self.encoder.to_json()))
        (directory / "history.json").write_text(json.dumps(
            {"epochs": self.history, "best_epoch": self.best_epoch, "stopped_early": self.stopped_early}, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> TrainedPredictor:
        directory = Path(directory)
        config = PredictorConfig(**json.loads((directory / "config.json").read_text()))
        encoder = EventEncoder.from_json(json.loads((directory / "vocabulary.json").read_text()))
        model = backbone(config.backbone).Model(config, encoder)
        model.load_state_dict(torch.load(directory / "model.pt", map_location="cpu", weights_only=True))
        history = json.loads((directory / "history.json").read_text())
        return cls(config, encoder, model, history["epochs"], history["best_epoch"], history["stopped_early"])


@contextmanager
def _torch_settings(config: PredictorConfig) -> Iterator[None]:
    """Thread count and deterministic algorithms for one training, restored afterwards."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # needed for deterministic CUDA matmuls
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _sources(train: pd.DataFrame | Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return dict(train) if isinstance(train, Mapping) else {"train": train}


def _concat(windows: list[Windows]) -> Windows:
    return Windows(torch.cat([w.ids for w in windows]), torch.cat([w.label for w in windows]),
                   torch.cat([w.weight for w in windows]), torch.cat([w.source for w in windows]),
                   pd.concat([w.rows for w in windows]))


def sample_losses(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sample: the weighted sum of cross-entropies over its supervised positions (the last
    one, plus those the backbone returns: cloze or causal positions), the sum of their weights,
    and the last position's logits."""
    logits, positions = model(batch)
    label, weight = batch["label"][:, -1], batch["weight"][:, -1] * (batch["label"][:, -1] >= 0)
    numerator = nn.functional.cross_entropy(logits, label.clamp(min=0), reduction="none") * weight
    denominator = weight
    if positions is not None:
        position_logits, position_label, position_weight = positions
        position_weight = position_weight * (position_label >= 0)
        position_losses = nn.functional.cross_entropy(position_logits.transpose(1, 2), position_label.clamp(min=0),
                                                      reduction="none")
        numerator = numerator + (position_losses * position_weight).sum(1)
        denominator = denominator + position_weight.sum(1)
    return numerator, denominator, logits


def summed_source_loss(numerator: torch.Tensor, denominator: torch.Tensor, source: torch.Tensor,
                       source_weights: torch.Tensor) -> torch.Tensor:
    """Sum over sources of each source's weighted mean loss in the batch, times the source's weight."""
    n_sources = len(source_weights)
    per_source_loss = torch.zeros(n_sources, device=numerator.device).index_add(0, source, numerator)
    per_source_weight = torch.zeros(n_sources, device=numerator.device).index_add(0, source, denominator)
    return (source_weights * per_source_loss / per_source_weight.clamp(min=1e-12)).sum()


def fit(config: PredictorConfig, train: pd.DataFrame | Mapping[str, pd.DataFrame],
        valid: pd.DataFrame | None = None, *, init: TrainedPredictor | None = None,
        intents: list[str] | None = None, locations: list[str] | None = None,
        regulariser: Callable[[nn.Module, dict, torch.Tensor], torch.Tensor] | None = None,
        source_weights: Mapping[str, float] | None = None,
        on_epoch: Callable[[int, dict], None] | None = None) -> TrainedPredictor:
    """Train `config.backbone` on the target rows of `train` (one frame or {source: frame}).

    init: start from this predictor's weights and vocabularies (fine-tuning); otherwise the
    vocabularies come from the training frames (or the given intents / locations lists).
    valid: target rows scored each epoch; training stops after `patience` epochs without a lower
    validation loss and the best epoch's weights are kept. Without it all max_epochs run.
    regulariser(model, batch, target_logits) -> scalar is added to every step's loss (its epoch
    mean is recorded as "regulariser"; train_loss includes it).
    source_weights: {source: weight} multiplies that source's mean loss (default 1), e.g. a
    synthetic source's weight against the real one's (a per-row `weight` cannot: each source's
    loss is a weighted mean).
    on_epoch(epoch, {"train_loss", "valid_loss", "regulariser", "seconds"}) follows every epoch.
    """
    sources = _sources(train)
    device = config.resolved_device()
    with _torch_settings(config):
        torch.manual_seed(config.seed)
        if init is not None:
            encoder, model = init.encoder, copy.deepcopy(init.model)
        else:
            encoder = EventEncoder.fit(pd.concat(sources.values()), intents, locations)
            model = backbone(config.backbone).Model(config, encoder)
        predictor = TrainedPredictor(config, encoder, model.to(device))
        samples = _concat([predictor.windows(frame, source=i, stride=config.training_stride)
                           for i, frame in enumerate(sources.values())])
        valid_samples = predictor.windows(valid) if valid is not None else None
        if len(samples) == 0:
            raise ValueError("no training samples: no target row has enough history")
        weights = torch.tensor([(source_weights or {}).get(name, 1.0) for name in sources], device=device)
        optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        shuffler = torch.Generator().manual_seed(config.seed)
        best_loss, best_state, stale = float("inf"), None, 0
        for epoch in range(1, config.max_epochs + 1):
            started = time.perf_counter()
            model.train()
            total = penalty_total = 0.0
            count = 0
            for index in torch.randperm(len(samples), generator=shuffler).split(config.batch_size):
                batch = samples.batch(index, device)
                numerator, denominator, logits = sample_losses(model, batch)
                loss = summed_source_loss(numerator, denominator, batch["source"], weights)
                if regulariser is not None:
                    penalty = regulariser(model, batch, logits)
                    loss = loss + penalty
                    penalty_total += penalty.item() * len(index)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total, count = total + loss.item() * len(index), count + len(index)
            record = {"epoch": epoch, "train_loss": total / count}
            if regulariser is not None:
                record["regulariser"] = penalty_total / count
            if valid_samples is not None and len(valid_samples):
                record["valid_loss"] = _mean_loss(model, valid_samples, device, config.batch_size)
            record["seconds"] = time.perf_counter() - started
            predictor.history.append(record)
            if on_epoch is not None:
                on_epoch(epoch, {k: v for k, v in record.items() if k != "epoch"})
            if "valid_loss" not in record:
                continue
            if record["valid_loss"] < best_loss:
                best_loss, stale, predictor.best_epoch = record["valid_loss"], 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                if stale >= config.patience:
                    predictor.stopped_early = True
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
        else:
            predictor.best_epoch = len(predictor.history)
    model.eval()
    return predictor


@torch.no_grad()
def _mean_loss(model: nn.Module, windows: Windows, device: torch.device, batch_size: int) -> float:
    """Weighted mean target cross-entropy (no auxiliary loss, no dropout)."""
    model.eval()
    total = weight_sum = 0.0
    for index in torch.arange(len(windows)).split(max(batch_size, 1024)):
        batch = windows.batch(index, device)
        logits, _ = model(batch)
        label = batch["label"][:, -1]
        losses = nn.functional.cross_entropy(logits, label.clamp(min=0), reduction="none")
        weight = batch["weight"][:, -1] * (label >= 0)
        total += float((losses * weight).sum())
        weight_sum += float(weight.sum())
    model.train()
    return total / max(weight_sum, 1e-12)


class EventEmbedding(nn.Module):
    """An event's embedding: the sum of its weekday, time slot, location and intent embeddings."""

    def __init__(self, encoder: EventEncoder, width: int, fields: tuple[str, ...] = EVENT_FIELDS):
        super().__init__()
        self.tables = nn.ModuleDict({name: nn.Embedding(len(encoder.vocabularies[name]), width, padding_idx=PAD)
                                     for name in fields})

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(table(batch[name]) for name, table in self.tables.items())
