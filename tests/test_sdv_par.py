"""SDV PAR on real fixture events (a few epochs), through its assets: the fitted model is one table
row, one user's partitions are schema-valid, in-vocabulary weeks whose weekday and time slot agree
with their times, and generation is deterministic under the seed."""

import pandas as pd
import pytest

from bgen_assets.assets.synthetic import generation_context, stable_seed
from bgen_assets.domain import PROFILE_ATTRIBUTES
from bgen_assets.generators import WeekTask, load_generator_specs, sdv_par
from conftest import built_with_generator, generated_weeks, population_events

TINY = {"epochs": 2, "max_training_weeks": 20, "max_events_per_week": 40}


@pytest.fixture(scope="module")
def runner(tmp_path_factory, fixture_data):
    with built_with_generator(tmp_path_factory.mktemp("sdv_par"), fixture_data, "sdv_par", TINY) as runner:
        yield runner


@pytest.fixture(scope="module")
def population(runner):
    return population_events(runner, with_profiles=True)


def test_training_set_is_the_declared_sample_of_user_weeks(population):
    params = sdv_par.ParParams(**TINY)
    sequences = sdv_par.training_sequences(population, params, 30, 0)
    assert sequences[sdv_par.SEQUENCE_KEY].nunique() == TINY["max_training_weeks"]
    assert sequences.groupby(sdv_par.SEQUENCE_KEY).size().max() <= TINY["max_events_per_week"]
    assert (sequences.groupby(sdv_par.SEQUENCE_KEY)[PROFILE_ATTRIBUTES].nunique() == 1).all().all()  # constant context
    pd.testing.assert_frame_equal(sequences, sdv_par.training_sequences(population, params, 30, 0))


def test_one_users_partitions_are_valid_and_reproducible(runner, population):
    model_table = runner.warehouse.query("SELECT * FROM tokyo.sdv_par_model")
    assert list(model_table.columns) == ["payload"] and len(model_table) == 1
    model = sdv_par.from_table(model_table)
    assert sdv_par.model_metadata(model)["training_weeks"] == TINY["max_training_weeks"]

    generated = generated_weeks(runner, "tokyo", "sdv_par", "1004", max_weeks=3)
    assert set(generated.week) == set(runner.user_weeks("tokyo", "1004")[:3])

    # a refit gives the same model, and the kind's functions the same weeks in any order
    spec = next(s for s in load_generator_specs() if s.name == "sdv_par")
    refitted = sdv_par.from_table(sdv_par.fit(population, sdv_par.ParParams(**TINY), 30, spec.seed))  # the asset fits with the declaration's seed
    history = runner.warehouse.query("SELECT * FROM tokyo.weekly_segments WHERE user_id = '1004' ORDER BY ts")
    profile = runner.warehouse.query("SELECT * FROM tokyo.profiles WHERE user_id = '1004'").iloc[0][PROFILE_ATTRIBUTES].to_dict()
    weeks = sorted(set(generated.week))[::-1]
    tasks = [WeekTask("1004", w, history[history.week <= w], profile, stable_seed(spec.seed, "tokyo", "1004", w)) for w in weeks]
    again = sdv_par.KIND.generate_weeks(refitted, tasks, spec.settings, generation_context(runner.project, "tokyo", runner.warehouse))
    for week, result in zip(weeks, again):
        stored = generated[generated.week == week][list(result.events.columns)].reset_index(drop=True)
        pd.testing.assert_frame_equal(result.events, stored, check_dtype=False)


def test_unseen_profile_values_fall_back_to_known_ones(runner):
    model = sdv_par.from_table(runner.warehouse.query("SELECT * FROM tokyo.sdv_par_model"))
    week = sdv_par.generate(model, {attribute: "never seen" for attribute in PROFILE_ATTRIBUTES}, "2019-01-07", [1], 30)
    assert week.weekday.between(0, 6).all()


def test_a_ubiqlog_user_is_generated_with_a_model_fitted_on_ubiqlog(runner):
    generated = generated_weeks(runner, "ubiqlog", "sdv_par", "10_M", max_weeks=2)
    assert generated.week.nunique() == 2
    assert runner.warehouse.query("SELECT count(*) AS n FROM ubiqlog.sdv_par_model")["n"].item() == 1
