"""Experiment declarations (`models/experiments/*.yml`) and the paper's three usage scenarios
(pretraining augmentation, fine-tuning replacement, fine-tuning augmentation), run on one backbone for one dataset.

Every scenario is scored on the same real test events: each individual user's `test` part of
`DS.event_splits`, predicted from the user's real history before it.

  pretraining   the population model, pretrained on real population events (+ a generator's
                synthetic weeks of population users, loss CE(real) + CE(synthetic)), scored as is
  finetune      the real-only population model fine-tuned per user on the user's real train part
  limited       ... on the user's first `limited_records` train events only
  replacement   ... on the user's synthetic weeks only (conditioned on the train part); no real
                event of the user is trained on: its real validation part only chooses when to stop
  augmentation  ... on the limited events + the synthetic weeks conditioned on them only

Every training stops early on real validation data (the population's last events, each user's
validation part), so none runs a fixed epoch count. Each is repeated for the declaration's
`seeds` training seeds (the tables' intervals cover them). How synthetic data enters a training
with real data (pretraining and augmentation) is the declaration's `synthetic`: its loss weight,
and whether it is mixed in or trained on first (SyntheticUse). A user with no
synthetic week for a generator keeps the pretrained model in the replacement and limited-only
model in the augmentation scenario (there is nothing to fine-tune on): tables pool every
individual user in scope either way, and `users_with_data` says how many had synthetic weeks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bgen_assets.config import MODELS_DIR, StrictModel, load_declarations
from bgen_assets.predictor_config import BACKBONES, PredictorConfig

if TYPE_CHECKING:  # torch and transformers load when something trains or scores, not with the graph
    from bgen_assets.predictors.core import TrainedPredictor

VALID_SHARE_OF_POPULATION = 0.1   # the last 10% of each population user's events stop pretraining early


class ExperimentScope(StrictModel):
    """What a project scope builds of an experiment (e.g. the demo: fewer users and epochs)."""

    build: bool = True
    max_pretrain_users: int | None = Field(default=None, gt=0, description="a seeded sample of population users")
    max_epochs: int | None = Field(default=None, gt=0, description="caps pretraining and fine-tuning epochs")
    seeds: int | None = Field(default=None, gt=0, description="overrides the declaration's number of training seeds")


class SyntheticUse(StrictModel):
    """How synthetic weeks enter a training together with real events (pretraining augmentation,
    fine-tuning augmentation); replacement trains on synthetic weeks alone either way."""

    weight: float = Field(1.0, ge=0, description="loss = CE(real) + weight * CE(synthetic)")
    schedule: Literal["mixed", "synthetic_first"] = Field(
        "mixed", description="mixed: one training on both; synthetic_first: train on the synthetic weeks, then "
        "continue from that model on the real events (each stage stopping early on real validation data)")


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    backbone: str
    individual_stage: Literal["finetune", "pituning", "behaviorlm"] = "finetune"
    pretrain: dict[str, Any] = Field(default_factory=dict, description="PredictorConfig fields")
    finetune: dict[str, Any] = Field(default_factory=dict, description="PredictorConfig training fields per user")
    individual_options: dict[str, Any] = Field(default_factory=dict,
                                               description="pituning: l2sp, kl, alpha; behaviorlm: per_stratum")
    anchor_share: float = Field(0.8, gt=0, le=1)
    generators: list[str]
    seeds: int = Field(1, gt=0, description="training seeds pretrain.seed, pretrain.seed + 1, ...")
    synthetic: SyntheticUse = SyntheticUse()
    real_from: str | None = Field(None, description="use this experiment's real-data predictors (its `_real` asset) "
                                  "instead of training the same ones again: for a lever that changes only `synthetic` "
                                  "or `generators`; the real-data settings must be equal")
    scope: dict[str, ExperimentScope] = Field(default_factory=dict)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        if name not in BACKBONES:
            raise ValueError(f"backbone {name!r} is not one of {sorted(BACKBONES)}")
        return name

    @property
    def real_name(self) -> str:
        """The experiment whose `_real` asset holds this one's real-data predictors."""
        return self.real_from or self.name

    def real_settings(self, scope: str) -> dict:
        """What decides the real-data predictors under a project scope: equal settings, equal predictors."""
        return {**self.model_dump(include=REAL_SETTINGS), "configs": self.seeded_configs(scope),
                "max_pretrain_users": self.scoped(scope).max_pretrain_users}

    def scoped(self, scope: str) -> ExperimentScope:
        return self.scope.get(scope, ExperimentScope())

    def configs(self, scope: str) -> tuple[PredictorConfig, PredictorConfig]:
        """(pretraining config, per-user fine-tuning config) under a project scope."""
        cap = self.scoped(scope).max_epochs
        pretrain = PredictorConfig(backbone=self.backbone, **self.pretrain)
        finetune = dataclasses.replace(pretrain, **self.finetune)
        if cap:
            pretrain = dataclasses.replace(pretrain, max_epochs=min(pretrain.max_epochs, cap))
            finetune = dataclasses.replace(finetune, max_epochs=min(finetune.max_epochs, cap))
        return pretrain, finetune

    def seeded_configs(self, scope: str) -> list[tuple[PredictorConfig, PredictorConfig]]:
        """`configs(scope)` once per training seed of the scope."""
        pretrain, finetune = self.configs(scope)
        return [(dataclasses.replace(pretrain, seed=pretrain.seed + i), dataclasses.replace(finetune, seed=pretrain.seed + i))
                for i in range(self.scoped(scope).seeds or self.seeds)]


REAL_SETTINGS = {"backbone", "individual_stage", "individual_options", "anchor_share"}


def load_experiment_specs(folder=MODELS_DIR / "experiments") -> list[ExperimentSpec]:
    specs = load_declarations(folder, ExperimentSpec)
    by_name = {spec.name: spec for spec in specs}
    for spec in specs:
        if spec.real_from is None:
            continue
        shared = by_name.get(spec.real_from)
        if shared is None or shared.real_from is not None:
            raise ValueError(f"{folder}/{spec.name}.yml: real_from {spec.real_from!r} is not an experiment "
                             "that trains its own real-data predictors")
        differing = [scope for scope in {*spec.scope, *shared.scope, "default"}
                     if spec.scoped(scope).build and shared.real_settings(scope) != spec.real_settings(scope)]
        if differing:
            raise ValueError(f"{folder}/{spec.name}.yml: real_from {spec.real_from!r}, but their real-data settings "
                             f"(predictor configs and seeds, {', '.join(sorted(REAL_SETTINGS))}, pretraining users) "
                             f"differ in scope(s) {', '.join(sorted(differing))}")
    return specs


def pretraining_frames(population: pd.DataFrame, users: int | None, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, valid) over population users (a seeded sample of `users` of them when given): the
    last share of each user's events are validation targets, the rest training targets."""
    chosen = pd.Series(sorted(population["user_id"].unique()))
    if users is not None and users < len(chosen):
        chosen = chosen.sample(users, random_state=seed).sort_values()
    frame = population[population["user_id"].isin(chosen)].sort_values(["user_id", "ts"], ignore_index=True)
    position = frame.groupby("user_id").cumcount() / frame.groupby("user_id")["ts"].transform("size")
    is_valid = position >= 1 - VALID_SHARE_OF_POPULATION
    return frame[~is_valid].assign(target=True), frame.assign(target=is_valid)


def test_frame(individual: pd.DataFrame) -> pd.DataFrame:
    """Individual users' real events, the `test` part as targets, everything before as history."""
    return individual.assign(target=individual["part"] == "test")


def valid_frame(user_events: pd.DataFrame) -> pd.DataFrame:
    """One user's train and validation parts, validation as targets."""
    frame = user_events[user_events["part"].isin(["train", "valid"])]
    return frame.assign(target=frame["part"] == "valid")


@dataclasses.dataclass
class Scorer:
    """Scores predictors on the individual users' test events with fixed anchor intents."""

    individual: pd.DataFrame
    anchors: list[str]

    def score(self, models: dict[str, TrainedPredictor] | TrainedPredictor) -> tuple[dict, pd.DataFrame]:
        """(pooled figures, per-user figures) of one predictor for everyone, or of one per user
        (then only those users are scored)."""
        from bgen_assets.predictors import metrics
        from bgen_assets.predictors.core import Predictions

        frame = test_frame(self.individual)
        if not isinstance(models, dict):
            models = dict.fromkeys(frame["user_id"].unique(), models)
        parts = [models[user].predict(events) for user, events in frame.groupby("user_id", sort=True) if user in models]
        if not parts:  # the scope selects no individual user
            return metrics.score([], [], np.empty((0, 0)), [], self.anchors), pd.DataFrame(columns=["user_id", *metrics.METRICS, *metrics.COUNTS, "intent_counts"])
        predictions = Predictions(pd.concat([p.frame for p in parts], ignore_index=True),
                                  np.concatenate([p.scores for p in parts]), parts[0].intents)
        return metrics.evaluate(predictions, self.anchors)


def with_synthetic(use: SyntheticUse, sources: dict[str, pd.DataFrame], init: TrainedPredictor | None,
                   train: Callable[..., TrainedPredictor]) -> TrainedPredictor:
    """`train(sources, init, source_weights)` as `use` declares: one training on all sources with
    the synthetic loss weighted, or (synthetic_first) one on the synthetic source and then one on
    the others starting from its model."""
    weights = {"synthetic": use.weight}
    if use.schedule == "synthetic_first" and "synthetic" in sources and len(sources) > 1:
        first = train({"synthetic": sources["synthetic"]}, init, weights)
        return train({name: frame for name, frame in sources.items() if name != "synthetic"}, first, weights)
    return train(sources, init, weights)


def fine_tune(spec: ExperimentSpec, config: PredictorConfig, population: TrainedPredictor,
              train: dict[str, pd.DataFrame], valid: pd.DataFrame | None, anchors: list[str],
              on_epoch: Callable | None = None) -> TrainedPredictor:
    """The declared individual stage for one user, synthetic data used as declared (a
    synthetic_first PITuning stage is anchored to the model of the synthetic stage)."""
    from bgen_assets.predictors import behaviorlm, pituning
    from bgen_assets.predictors.core import fit

    def stage(sources: dict[str, pd.DataFrame], init: TrainedPredictor, source_weights: dict) -> TrainedPredictor:
        if spec.individual_stage == "pituning":
            return pituning.fit_individual(init, sources, valid, config=config, on_epoch=on_epoch,
                                           source_weights=source_weights, **spec.individual_options)
        if spec.individual_stage == "behaviorlm":
            return behaviorlm.progressive_fit(config, sources, valid, init=init, anchors=anchors, on_epoch=on_epoch,
                                              source_weights=source_weights, **spec.individual_options)
        return fit(config, sources, valid, init=init, on_epoch=on_epoch, source_weights=source_weights)

    return with_synthetic(spec.synthetic, train, population, stage)


def scenario_training_data(scenario: str, user_events: pd.DataFrame, synthetic: pd.DataFrame
                           ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame | None]:
    """(training sources, validation frame) of one user's fine-tune in a scenario; empty sources
    are left out."""
    real_train = user_events[user_events["part"] == "train"].assign(target=True)
    limited = user_events[user_events["limited"]].assign(target=True)
    valid = valid_frame(user_events)
    if scenario == "finetune":
        sources, valid_rows = {"real": real_train}, valid
    elif scenario == "limited":
        sources, valid_rows = {"real": limited}, valid
    elif scenario == "replacement":
        sources, valid_rows = {"synthetic": synthetic[synthetic["use"] == "finetune"].assign(target=True)}, valid
    elif scenario == "augmentation":
        weeks = synthetic[synthetic["limited"]].assign(target=True)
        sources, valid_rows = ({"real": limited, "synthetic": weeks} if len(weeks) else {}), valid
    else:
        raise ValueError(f"not a per-user scenario: {scenario}")
    return {name: frame for name, frame in sources.items() if len(frame)}, valid_rows


def score_rows(pooled: dict, per_user: pd.DataFrame, **labels) -> pd.DataFrame:
    """Tidy score rows: one `all` row and one per user, with the given label columns."""
    rows = pd.concat([pd.DataFrame([{"user_id": "all", **pooled}]), per_user], ignore_index=True)
    for name, value in reversed(labels.items()):
        rows.insert(0, name, value)
    return rows
