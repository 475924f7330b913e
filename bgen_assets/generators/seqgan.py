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

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

NEEDS_VOCABULARY = False
NEEDS_FIT = True
# The generator interface lives with torch in seqgan_networks.py, loaded on first use: declarations
# are validated and the asset graph is built without torch.
NETWORK_INTERFACE = ("fit", "from_table", "model_metadata", "generate", "generate_weeks")


@dataclass(frozen=True)
class SeqGANConfig:
    embed: int = 32
    hidden: int = 64
    max_events: int = 64              # per week (longer ones are thinned); also the conditioning events read
    batch_size: int = 64
    learning_rate: float = 3e-3
    pretrain_epochs: int = 6
    discriminator_filters: int = 32   # per filter width
    discriminator_epochs: int = 1
    adversarial_steps: int = 10
    adversarial_batch_size: int = 32
    adversarial_learning_rate: float = 3e-4
    rollouts: int = 4
    rollout_every: int = 4            # events between Monte-Carlo reward estimates
    threads: int = 1


def code_files() -> list[Path]:
    return [Path(__file__), Path(__file__).with_name("seqgan_networks.py")]


def validate_params(params: dict) -> SeqGANConfig:
    try:
        config = SeqGANConfig(**params)
    except TypeError as error:
        raise ValueError(f"seqgan params: {error}") from None
    if min(config.embed, config.hidden, config.max_events, config.batch_size, config.rollouts, config.rollout_every,
           config.threads) < 1:
        raise ValueError("seqgan sizes must be >= 1")
    return config


def __getattr__(name: str):
    if name in NETWORK_INTERFACE:
        return getattr(import_module("bgen_assets.generators.seqgan_networks"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
