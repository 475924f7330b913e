"""SeqGAN on real fixture events (a tiny configuration), through its assets: the fitted model is one
table row, one user's partitions are schema-valid, in-vocabulary, time-ordered weeks, generation is
deterministic under the seed, and the grammar holds at every position."""

import numpy as np
import pandas as pd
import pytest
import torch

from bgen_assets.assets.synthetic import stable_seed
from bgen_assets.generators import WeekTask, load_generator_specs, seqgan, seqgan_networks
from conftest import built_with_generator, generated_weeks, population_events

TINY = {"embed": 8, "hidden": 16, "max_events": 12, "pretrain_epochs": 2, "discriminator_epochs": 1,
        "adversarial_steps": 2, "adversarial_batch_size": 8, "rollouts": 2, "rollout_every": 2}


@pytest.fixture(scope="module")
def runner(tmp_path_factory, fixture_data):
    with built_with_generator(tmp_path_factory.mktemp("seqgan"), fixture_data, "seqgan", TINY) as runner:
        yield runner


@pytest.fixture(scope="module")
def population(runner):
    return population_events(runner)


def test_training_pairs_are_counted_thinned_weeks_in_grammar(population):
    config = seqgan.SeqGANConfig(**TINY)
    vocabulary = seqgan_networks.Vocabulary.of_events(population, 48, TINY["max_events"])
    conditions, lengths, weeks = seqgan_networks.training_pairs(population, vocabulary, config, 48, np.random.default_rng(0))
    assert len(weeks) > 0 and weeks.shape[1] == 2 * TINY["max_events"] + 2
    assert (conditions[:, 0] == seqgan_networks.BOS).all() and (lengths <= 2 * TINY["max_events"] + 1).all()
    generator = seqgan_networks.Generator(vocabulary, config)
    assert generator.masks(weeks).gather(-1, weeks[..., None]).all()  # every real token is allowed
    assert ((weeks == seqgan_networks.EOS).sum(1) == 1).all()
    events = vocabulary.is_pair(weeks).sum(1)
    assert (weeks[:, 0] == seqgan_networks.COUNT0 + events - 1).all()  # the count token opens each week
    assert events.max() == TINY["max_events"]  # long weeks are thinned to the limit, not dropped


def test_sampled_weeks_have_the_count_they_drew(population):
    config = seqgan.SeqGANConfig(**TINY)
    generator = seqgan_networks.Generator(seqgan_networks.Vocabulary.of_events(population, 48, TINY["max_events"]), config)  # untrained
    weeks = generator.generate(torch.zeros(1, 64, TINY["hidden"]), torch.Generator().manual_seed(0))
    assert generator.masks(weeks).gather(-1, weeks[..., None]).all()
    counts = generator.vocabulary.count_of(weeks[:, 0])
    assert (generator.vocabulary.is_pair(weeks).sum(1) == counts).all()
    assert counts.unique().numel() > 5


def test_one_users_partitions_are_valid_and_reproducible(runner, population):
    model_table = runner.warehouse.query("SELECT * FROM tokyo.seqgan_model")
    assert list(model_table.columns) == ["payload"] and len(model_table) == 1
    model = seqgan_networks.from_table(model_table)
    assert seqgan_networks.model_metadata(model)["parameters"] > 0

    generated = generated_weeks(runner, "tokyo", "seqgan", "1004", max_weeks=3)
    assert set(generated.week) == set(runner.user_weeks("tokyo", "1004")[:3])
    assert generated.groupby("week").size().max() <= TINY["max_events"]

    # a refit gives the same model, and the kind's functions the same weeks in any order
    spec = next(s for s in load_generator_specs() if s.name == "seqgan")
    refitted = seqgan_networks.from_table(seqgan_networks.fit(population, seqgan.SeqGANConfig(**TINY), 30, spec.seed))  # the asset fits with the declaration's seed
    for name, weights in model.generator.state_dict().items():
        assert torch.equal(weights, refitted.generator.state_dict()[name]), name
    history = runner.warehouse.query("SELECT * FROM tokyo.weekly_segments WHERE user_id = '1004' ORDER BY ts")
    weeks = sorted(set(generated.week))[::-1]
    tasks = [WeekTask("1004", w, history[history.week <= w], {}, stable_seed(spec.seed, "tokyo", "1004", w)) for w in weeks]
    again = seqgan_networks.generate_weeks(refitted, tasks, 30)
    for week, result in zip(weeks, again):
        stored = generated[generated.week == week][list(result.events.columns)].reset_index(drop=True)
        pd.testing.assert_frame_equal(result.events, stored, check_dtype=False)
    other = seqgan_networks.generate(refitted, history, weeks[0], [12345], 30)
    assert not other.equals(again[0].events)


def test_a_ubiqlog_user_is_generated_with_a_model_fitted_on_ubiqlog(runner):
    generated = generated_weeks(runner, "ubiqlog", "seqgan", "10_M", max_weeks=2)
    assert generated.week.nunique() == 2
    assert runner.warehouse.query("SELECT count(*) AS n FROM ubiqlog.seqgan_model")["n"].item() == 1
