"""SeqGAN (Yu et al. 2017, "SeqGAN: Sequence Generative Adversarial Nets with Policy Gradient"),
small enough to train on a CPU in a minute or two.

Tokens: a week is its event count, then two tokens per event, its time-of-week slot (weekday x
slots per day + time slot) and its (location, intent) pair as seen in the population's events;
BOS opens a week and EOS closes it. The count comes first because an end-of-week decision after
every event has a near-constant hazard, which makes week lengths geometric: weeks came out short
(14.1 events against 20.7 real on all Tokyo population users). Longer training weeks are thinned
(a seeded, order-keeping sample), not cut off at their start.
Generator: embedding, GRU, linear. Conditioning per user-week: the GRU first reads the user's
conditioning real week (thinned to `max_events` events); its final state starts the generated week,
so weeks of one batch stay aligned whatever the conditioning lengths. Decoding is constrained:
after BOS a count of 1 to `max_events`, then a slot at or after the previous slot and a pair per
event, then EOS once the count is reached. So every generated week is in time order, its pairs
are pairs of the population's real events (hence of the vocabulary), and weekday and time slot
are derived from one value.

Training on the population users' (week, next week) pairs:
1. maximum likelihood (teacher forcing) for `pretrain_epochs`;
2. a CNN discriminator (filters of widths 2-5, max-pooled over time) pretrained on real next
   weeks versus generated ones;
3. `adversarial_steps` of REINFORCE: a batch of generated weeks, each event rewarded with the
   discriminator's mean probability of "real" over `rollouts` Monte-Carlo completions of the week
   from that event on (the rollout policy is the current generator), the whole week (EOS) with the
   discriminator's score of itself; after each generator step the discriminator trains on a fresh
   real and generated batch.
Deterministic under the declaration's seed (training) and each task's seed (generation, one week
at a time, so a week does not depend on what else is generated with it).
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from bgen_assets.generators.contract import GenerationContext, GeneratorKind, WeekResult, WeekTask

if TYPE_CHECKING:  # the networks load torch: declarations are validated and the graph built without it
    from bgen_assets.generators.seqgan_networks import FittedSeqGAN


@dataclass(config=ConfigDict(extra="forbid", frozen=True))
class SeqGANConfig:
    embed: int = Field(32, ge=1)
    hidden: int = Field(64, ge=1)
    max_events: int = Field(64, ge=1, description="per week (longer ones are thinned); also the conditioning events read")
    batch_size: int = Field(64, ge=1)
    learning_rate: float = 3e-3
    pretrain_epochs: int = 6
    discriminator_filters: int = 32   # per filter width
    discriminator_epochs: int = 1
    adversarial_steps: int = 10
    adversarial_batch_size: int = 32
    adversarial_learning_rate: float = 3e-4
    rollouts: int = Field(4, ge=1)
    rollout_every: int = Field(4, ge=1, description="events between Monte-Carlo reward estimates")
    threads: int = Field(1, ge=1)


def _networks():
    """The networks module, imported (with torch) on first use."""
    return import_module("bgen_assets.generators.seqgan_networks")


class SeqGAN(GeneratorKind):
    Params = SeqGANConfig

    def code_files(self) -> list[Path]:
        return [Path(__file__), Path(__file__).with_name("seqgan_networks.py")]

    def fit(self, population_events: pd.DataFrame, params: SeqGANConfig, seed: int,
            context: GenerationContext) -> pd.DataFrame:
        return _networks().fit(population_events, params, context.slot_minutes, seed)

    def from_table(self, table: pd.DataFrame) -> FittedSeqGAN:
        return _networks().from_table(table)

    def model_metadata(self, model: FittedSeqGAN) -> dict:
        return _networks().model_metadata(model)

    def generate_weeks(self, model: FittedSeqGAN, tasks: list[WeekTask], params: SeqGANConfig,
                       context: GenerationContext) -> list[WeekResult]:
        return _networks().generate_weeks(model, tasks, context.slot_minutes)


KIND = SeqGAN()
