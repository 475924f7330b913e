"""PITuning (Gong et al., KDD 2024): population-to-individual tuning of a GPT-2 model for
next-intent prediction. The paper's code is not public; this is a reimplementation.

Follows the paper:
- GPT-2 architecture (transformers GPT2Config / GPT2Model, trained here from scratch: no
  weights are downloaded) over event embeddings, with a next-intent head.
- Two stages: a population stage on the population users' data, then an individual stage that
  adapts the population model to each user while keeping its knowledge, handling the user's
  long-tailed intent preferences.

Our reading (the parts the paper text does not pin down):
- Dynamic transition modelling = each token is an event plus the weekday and time slot of the
  event that follows it, so the causal model learns event -> next-intent transitions at the
  time they happen; every token is trained to predict the next intent (causal), and the
  predicted intent is read from the last history token. Population stage =
  `fit(PredictorConfig(backbone="pituning"), ...)`, the shared training loop.
- Individual stage (`fit_individual`): fine-tune a copy of the population model on the user's
  data with loss = weighted CE + l2sp * ||theta - theta_population||^2 (L2-SP: stay near the
  population weights) + kl * KL(p_population || p_user) on each batch (keep the population's
  predictions where the user's data says little).
- Adaptive unlearning of the user's dominant intents: each target is weighted by
  (share of its intent among the user's targets)^-alpha, normalised to mean 1, so frequent
  intents are partly "unlearned" in favour of the user's tail; alpha = 0 turns it off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import pandas as pd
import torch
from torch import nn
from transformers import GPT2Config, GPT2Model

from bgen_assets.predictors.core import PAD, EventEmbedding, EventEncoder, PredictorConfig, TrainedPredictor, fit


class Model(nn.Module):
    def __init__(self, config: PredictorConfig, encoder: EventEncoder):
        super().__init__()
        self.events = EventEmbedding(encoder, config.width)
        self.next_time = EventEmbedding(encoder, config.width, fields=("weekday", "time_slot"))
        self.gpt = GPT2Model(GPT2Config(vocab_size=1, n_positions=config.history, n_embd=config.width,
                                        n_layer=config.layers, n_head=config.heads, resid_pdrop=config.dropout,
                                        embd_pdrop=config.dropout, attn_pdrop=config.dropout, use_cache=False,
                                        bos_token_id=None, eos_token_id=None))
        self.head = nn.Linear(config.width, len(encoder.intents))

    def forward(self, batch: dict[str, torch.Tensor]):
        history = {name: batch[name][:, :-1] for name in ("weekday", "time_slot", "location", "intent")}
        following = {name: batch[name][:, 1:] for name in ("weekday", "time_slot")}
        attention = (history["weekday"] != PAD).long()
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        hidden = self.gpt(inputs_embeds=self.events(history) + self.next_time(following),
                          attention_mask=attention, position_ids=positions).last_hidden_state
        if not self.training:
            return self.head(hidden[:, -1]), None
        logits = self.head(hidden)          # token j predicts the intent of event j + 1
        return logits[:, -1], (logits[:, :-1], batch["label"][:, 1:-1], batch["weight"][:, 1:-1])


def parameter_distance(model: nn.Module, reference: nn.Module) -> float:
    """Euclidean distance between two models' parameters."""
    return float(sum((a.detach() - b.detach()).pow(2).sum() for a, b in
                     zip(model.parameters(), reference.parameters(), strict=True)) ** 0.5)


class PopulationAnchor:
    """The individual stage's regulariser: L2-SP toward the population weights + KL to the
    population model's predictions."""

    def __init__(self, population: nn.Module, l2sp: float, kl: float):
        self.population = population.eval()
        self.reference = [p.detach().clone() for p in population.parameters()]
        self.l2sp, self.kl = l2sp, kl

    def __call__(self, model: nn.Module, batch: dict, logits: torch.Tensor) -> torch.Tensor:
        penalty = self.l2sp * sum((p - r.to(p.device)).pow(2).sum()
                                  for p, r in zip(model.parameters(), self.reference, strict=True))
        if self.kl > 0:
            with torch.no_grad():
                target = torch.log_softmax(self.population.to(logits.device)(batch)[0], dim=-1)
            penalty = penalty + self.kl * nn.functional.kl_div(torch.log_softmax(logits, dim=-1), target,
                                                               log_target=True, reduction="batchmean")
        return penalty


def unlearning_weights(frame: pd.DataFrame, alpha: float) -> pd.Series:
    """Per-row weight (share of the row's intent among the frame's targets)^-alpha, mean 1 over targets."""
    targets = frame["target"] if "target" in frame else pd.Series(True, index=frame.index)
    share = frame.loc[targets, "intent"].value_counts(normalize=True)
    weight = frame["intent"].map(share).fillna(1.0).pow(-alpha)
    return weight / weight[targets].mean()


def fit_individual(population: TrainedPredictor, train: pd.DataFrame | Mapping[str, pd.DataFrame],
                   valid: pd.DataFrame | None = None, *, l2sp: float = 1e-3, kl: float = 0.1,
                   alpha: float = 0.5, config: PredictorConfig | None = None,
                   on_epoch: Callable[[int, dict], None] | None = None, **fit_options) -> TrainedPredictor:
    """The individual stage for one user: fine-tune a copy of `population` on the user's data
    with the PopulationAnchor regulariser and adaptive unlearning weights (see module docstring);
    its history records each epoch's mean penalty as "regulariser".
    config: training settings for this stage (default: the population's, same architecture);
    `fit_options` (source_weights) go to `fit`."""
    config = config or population.config
    if dataclasses.replace(config, **_training_only(population.config)) != population.config:
        raise ValueError("the individual stage must keep the population model's architecture")
    sources = dict(train) if isinstance(train, Mapping) else {"train": train}
    if alpha:
        sources = {name: frame.assign(weight=unlearning_weights(frame, alpha) * frame.get("weight", 1.0))
                   for name, frame in sources.items()}
    return fit(config, sources, valid, init=population, regulariser=PopulationAnchor(population.model, l2sp, kl),
               on_epoch=on_epoch, **fit_options)


def _training_only(config: PredictorConfig) -> dict:
    """The fields the individual stage may change (everything but the architecture)."""
    architecture = {"backbone", "history", "width", "layers", "heads", "min_history"}
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in architecture}
