"""The utility tables' intervals (bgen_assets/intervals.py): the point figures equal the pooled
scores of the predictions they summarise, a paired change of identical arms is exactly zero, a
change every user shares is told from zero, seeds average, and a replacement rate is shown only
against a real fine-tuning gain told from zero."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bgen_assets.experiments import score_rows
from bgen_assets.intervals import Estimate, PairedBootstrap
from bgen_assets.predictors import metrics
from bgen_assets.predictors.core import Predictions
from bgen_assets.results import (
    NOTE_NO_REAL_GAIN,
    NOTES,
    as_is,
    best_generators,
    percent_change,
    utility_tables,
)

INTENTS = [f"intent {i}" for i in range(6)]


def predictions(seed: int, skill: float, users: int = 12, targets: int = 40) -> Predictions:
    """Random targets; scores favour the true intent by `skill`."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, len(INTENTS), users * targets)
    scores = rng.normal(size=(len(true), len(INTENTS)))
    scores[np.arange(len(true)), true] += skill
    frame = pd.DataFrame({"user_id": np.repeat([f"u{u:02d}" for u in range(users)], targets),
                          "intent": [INTENTS[i] for i in true],
                          "predicted": [INTENTS[i] for i in scores.argmax(axis=1)]})
    return Predictions(frame, scores, INTENTS)


def arm_rows(scenario: str, generator: str, seed: int, skill: float, data_seed: int = 0) -> pd.DataFrame:
    pooled, per_user = metrics.evaluate(predictions(data_seed + seed, skill), anchors=INTENTS[:3])
    return score_rows(pooled, per_user, experiment="e", generator=generator, scenario=scenario, seed=seed)


def per_user(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["user_id"] != "all"]


def test_point_figures_are_the_pooled_scores_averaged_over_seeds():
    rows = pd.concat([arm_rows("pretraining", "real", seed, 1.0) for seed in (1, 2)])
    estimates = PairedBootstrap(per_user(rows), replicates=200).estimate(as_is, ("pretraining", "real"))
    pooled = rows[rows["user_id"] == "all"]
    for name, estimate in estimates.items():
        assert estimate.point == pytest.approx(pooled[name].mean())
        assert estimate.low <= estimate.point <= estimate.high
        assert estimate.low < estimate.high   # users and seeds differ, so the replicates do


def test_identical_arms_change_by_exactly_zero_and_a_shared_gain_is_distinguishable():
    real = arm_rows("pretraining", "real", 1, 1.0)
    same = real.assign(generator="copy")
    better = arm_rows("pretraining", "better", 1, 3.0).assign(user_id=real["user_id"].to_numpy())
    bootstrap = PairedBootstrap(per_user(pd.concat([real, same, better])), replicates=300)
    unchanged = bootstrap.estimate(percent_change, ("pretraining", "copy"), ("pretraining", "real"))
    assert all((e.point, e.low, e.high) == (0, 0, 0) and not e.excludes_zero for e in unchanged.values())
    gained = bootstrap.estimate(percent_change, ("pretraining", "better"), ("pretraining", "real"))
    assert all(e.point > 0 and e.excludes_zero for e in gained.values())


def test_seeds_every_arm_shares_are_the_ones_drawn():
    rows = pd.concat([arm_rows("pretraining", "real", 1, 1.0), arm_rows("pretraining", "real", 2, 1.0),
                      arm_rows("pretraining", "markov", 1, 1.0)])
    bootstrap = PairedBootstrap(per_user(rows), replicates=50)
    assert bootstrap.seeds == [1]


def test_a_replacement_rate_is_left_empty_where_the_real_fine_tunes_gain_may_be_zero():
    """A rate divides by real-finetuned - pretrained: where that gain's interval includes zero the
    ratio's interval is unbounded, so Table 2 shows the gain and leaves the rate out, with a note."""
    def arm(scenario: str, generator: str, skill: float, data_seed: int) -> pd.DataFrame:
        return arm_rows(scenario, generator, 1, skill, data_seed).assign(users_with_data=12)

    rows = pd.concat([arm("pretraining", "real", 1.0, 0), arm("limited", "real", 1.0, 5),
                      arm("replacement", "markov", 3.0, 7)])
    noise_only = utility_tables(pd.concat([rows, arm("finetune", "real", 1.0, 3)]))["finetuning_replacement"]
    gain, rate = (noise_only[noise_only["row"] == label].iloc[0] for label in ("change vs pretrained", "replacement rate"))
    assert not Estimate(gain["ndcg@5"], gain["ndcg@5_low"], gain["ndcg@5_high"]).excludes_zero
    assert np.isnan(rate["ndcg@5"]) and rate["note"] == NOTE_NO_REAL_GAIN and NOTE_NO_REAL_GAIN in NOTES

    learned = utility_tables(pd.concat([rows, arm("finetune", "real", 2.0, 3)]))["finetuning_replacement"]
    rate = learned[learned["row"] == "replacement rate"].iloc[0]
    assert rate["ndcg@5"] > 100 and rate["note"] == ""   # markov's fine-tune beats the real one: a bounded rate
    assert best_generators({"finetuning_replacement": learned})["finetuning_replacement"]["e"]["generator"] == "markov"
