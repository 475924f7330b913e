"""Predictors trained with tiny configurations on events cut from the real Tokyo fixture."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from bgen_assets.predictors.core import PAD, EventEncoder, PredictorConfig, TrainedPredictor, fit, summed_source_loss
from bgen_assets.predictors.behaviorlm import balanced_subset, progressive_fit
from bgen_assets.predictors.metrics import anchor_intents, evaluate
from bgen_assets.predictors.pituning import fit_individual, parameter_distance

TINY = PredictorConfig(history=8, width=16, layers=1, heads=2, dropout=0.0, lr=5e-3, batch_size=64,
                       max_epochs=4, patience=2, seed=3)
VALID_FROM = pd.Timestamp("2019-03-01")


@pytest.fixture(scope="module")
def split(tokyo_events):
    """train: events before March; valid: every event, March onwards as targets."""
    before = tokyo_events.ts < VALID_FROM
    return tokyo_events[before], tokyo_events.assign(target=~before)


@pytest.mark.parametrize("backbone", ["bert4rec", "pituning"])
def test_backbones_learn_and_beat_the_uniform_ranking(split, backbone):
    train, valid = split
    predictor = fit(dataclasses.replace(TINY, backbone=backbone), train, valid)
    losses = [epoch["valid_loss"] for epoch in predictor.history]
    assert min(losses[1:]) < losses[0]
    pooled, per_user = evaluate(predictor.predict(valid), anchor_intents(train.intent, 0.8))
    uniform = np.log(len(predictor.encoder.intents))
    assert min(losses) < uniform
    assert pooled["targets"] == int(valid.target.sum())
    assert set(per_user.user_id) == set(valid[valid.target].user_id)


def test_early_stopping_stops_and_keeps_the_best_epoch(tokyo_events):
    one_user = tokyo_events[tokyo_events.user_id == "1004"].reset_index(drop=True)
    train, valid = one_user.iloc[:60], one_user.iloc[:90].assign(target=one_user.index[:90] >= 60)
    config = dataclasses.replace(TINY, lr=0.03, max_epochs=40, patience=2)   # overfits 60 events fast
    predictor = fit(config, train, valid)
    assert predictor.stopped_early
    assert len(predictor.history) == predictor.best_epoch + config.patience < config.max_epochs
    best = min(epoch["valid_loss"] for epoch in predictor.history)
    assert predictor.history[predictor.best_epoch - 1]["valid_loss"] == best
    assert predictor.target_losses(valid).mean() == pytest.approx(best, rel=1e-5)


def test_same_seed_same_scores_and_save_load_round_trip(split, tmp_path):
    train, valid = split
    config = dataclasses.replace(TINY, max_epochs=2, dropout=0.1)
    first, second = fit(config, train, valid), fit(config, train, valid)
    other_seed = fit(dataclasses.replace(config, seed=4), train, valid)
    scores = first.predict(valid).scores
    assert np.array_equal(scores, second.predict(valid).scores)
    assert not np.array_equal(scores, other_seed.predict(valid).scores)
    loaded = TrainedPredictor.load(first.save(tmp_path / "model"))
    assert np.array_equal(loaded.predict(valid).scores, scores)
    assert loaded.history == first.history and loaded.best_epoch == first.best_epoch


def test_synthetic_user_weeks_are_sequences_of_their_own(tokyo_events, split):
    train, valid = split
    weeks = tokyo_events.ts.dt.to_period("W-SUN").dt.start_time
    synthetic = tokyo_events.assign(target_week=(weeks + pd.Timedelta(days=7)).dt.strftime("%Y-%m-%d"),
                                    ts=tokyo_events.ts + pd.Timedelta(days=7))
    windows = EventEncoder.fit(train).windows(synthetic, history=TINY.history)
    # the first event of every synthetic user-week has no history: no sample
    assert len(windows) == len(synthetic) - synthetic.groupby(["user_id", "target_week"]).ngroups
    # each sample's history reaches back only to the start of its own user-week
    ordered = synthetic.sort_values(["user_id", "target_week", "ts", "location"], kind="stable")
    position_in_week = ordered.groupby(["user_id", "target_week"]).cumcount()
    history_length = (windows.ids[:, :-1, 0] != PAD).sum(1).numpy()
    assert np.array_equal(history_length, position_in_week[windows.rows.index].clip(upper=TINY.history).to_numpy())
    both = fit(dataclasses.replace(TINY, max_epochs=2), {"real": train, "synthetic": synthetic}, valid)
    assert len(both.history) == 2


def test_two_samples_of_one_target_week_are_separate_sequences(tokyo_events, split):
    train, _ = split
    week = tokyo_events[tokyo_events.user_id == "1004"].head(12).assign(target_week="2019-01-14")
    samples = pd.concat([week.assign(sample=0), week.assign(sample=1)], ignore_index=True)
    encoder = EventEncoder.fit(train)
    windows = encoder.windows(samples, history=TINY.history)
    # each sampled week's first event has no history (spliced into one sequence, only one would)
    assert len(windows) == 2 * (len(week) - 1)
    one = encoder.windows(week, history=TINY.history)
    assert torch.equal(windows.ids, torch.cat([one.ids, one.ids]))


def test_sources_losses_are_summed_not_pooled():
    # per sample: summed weighted losses / weights; source 0: (1 + 2) / 2 = 1.5, source 1: 6 / 2 = 3
    # -> 4.5 (a pooled mean would give 9 / 4)
    losses, weights, source = torch.tensor([1.0, 2.0, 6.0]), torch.tensor([1.0, 1.0, 2.0]), torch.tensor([0, 0, 1])
    assert float(summed_source_loss(losses, weights, source, torch.ones(2))) == pytest.approx(4.5)
    # a source weight scales that source's mean: 1.5 + 0.5 * 3
    assert float(summed_source_loss(losses, weights, source, torch.tensor([1.0, 0.5]))) == pytest.approx(3.0)


def test_a_source_weight_scales_what_the_model_learns_from_that_source(split):
    train, valid = split
    config = dataclasses.replace(TINY, max_epochs=2)
    constant = train["intent"].iloc[0]
    synthetic = train.assign(intent=constant)   # a source that teaches one intent only

    def mean_score_of_constant(weight: float) -> float:
        predictions = fit(config, {"real": train, "synthetic": synthetic}, valid,
                          source_weights={"synthetic": weight}).predict(valid)
        return float(predictions.scores[:, predictions.intents.index(constant)].mean())

    assert mean_score_of_constant(0.0) < mean_score_of_constant(1.0) < mean_score_of_constant(4.0)


def test_behaviorlm_runs_both_stages(split):
    train, valid = split
    anchors = anchor_intents(train.intent, 0.8)
    predictor = progressive_fit(dataclasses.replace(TINY, max_epochs=2), train, valid, anchors=anchors)
    stages = [epoch["stage"] for epoch in predictor.history]
    assert stages[0] == 1 and stages[-1] == 2 and stages == sorted(stages)
    assert [epoch["epoch"] for epoch in predictor.history] == list(range(1, len(stages) + 1))
    assert set(anchors) < set(predictor.encoder.intents)


def test_behaviorlm_subset_is_balanced_and_favours_hard_samples():
    losses = pd.Series([10.0] * 50 + [0.001] * 50 + [1.0] * 10)
    is_anchor = pd.Series([True] * 100 + [False] * 10)
    chosen = balanced_subset(losses, is_anchor, per_stratum=None, seed=0)
    assert is_anchor[chosen].sum() == 10 and (~is_anchor[chosen]).sum() == 10   # every tail sample kept
    assert (losses[chosen[is_anchor[chosen]]] == 10.0).sum() >= 9


def test_pituning_individual_stage_stays_near_the_population(split, tokyo_events):
    train, valid = split
    population = fit(dataclasses.replace(TINY, backbone="pituning", max_epochs=2), train, valid)
    user = tokyo_events[tokyo_events.user_id == "1172"]
    stage = dataclasses.replace(population.config, max_epochs=3, batch_size=8)
    regularised = fit_individual(population, user, l2sp=1.0, kl=1.0, config=stage)
    free = fit_individual(population, user, l2sp=0.0, kl=0.0, alpha=0.0, config=stage)
    assert all(epoch["regulariser"] > 0 for epoch in regularised.history)   # 0 only at the very first step
    assert parameter_distance(regularised.model, population.model) < parameter_distance(free.model, population.model)
    assert parameter_distance(population.model, population.model) == 0.0
    with pytest.raises(ValueError, match="architecture"):
        fit_individual(population, user, config=dataclasses.replace(stage, width=32))


def test_strided_training_windows_cover_every_target_once_or_more(tokyo_events):
    encoder = EventEncoder.fit(tokyo_events)
    every = encoder.windows(tokyo_events, history=8)                 # one sample per target
    strided = encoder.windows(tokyo_events, history=8, stride=4)     # ends every 4th event from the end
    sequences = tokyo_events.groupby("user_id").size()
    assert len(every) == len(tokyo_events) - len(sequences)          # min_history 1: first events skipped
    # a window ending at a sequence's first event holds no target (min_history 1): dropped
    assert len(strided) == sum(-(-n // 4) - (n % 4 == 1) for n in sequences)
    assert set(strided.rows.groupby("user_id").ts.max()) == set(tokyo_events.groupby("user_id").ts.max())
    # with overlapping windows (8 + 1 events, stride 4) each target position appears about twice
    assert float((strided.weight > 0).sum()) == pytest.approx(2.25 * len(every), rel=0.1)
