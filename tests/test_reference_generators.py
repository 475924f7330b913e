"""The reference generators on the fixture project: materialised through the asset graph for one
user, schema-valid, and exactly what they claim (the shifted real week; another population
user's real week), identical on a second generation."""

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey

from bgen_assets.assets.synthetic import stable_seed
from bgen_assets.generators import WeekTask, load_generator_specs
from bgen_assets.generators import reference
from conftest import generated_weeks

COLUMNS = ["ts", "weekday", "time_slot", "location", "intent"]


def spec_named(name):
    return next(spec for spec in load_generator_specs() if spec.name == name)


def synthetic(built, name, user):
    return built.warehouse.query(
        f"SELECT * FROM tokyo.synthetic_{name} WHERE user_id = ? ORDER BY week, ts", [user])


def segments(built, user):
    return built.warehouse.query("SELECT * FROM tokyo.weekly_segments WHERE user_id = ? ORDER BY ts", [user])


@pytest.fixture(scope="module")
def population(built):
    return built.warehouse.query(
        "SELECT user_id FROM tokyo.user_split WHERE role = 'population' ORDER BY user_id")["user_id"].tolist()


def test_repeat_last_week_is_the_real_week_moved_on_by_seven_days(built):
    done = built.materialize_user("tokyo", "1004", "repeat_last_week")
    real = segments(built, "1004")
    assert done["tokyo/synthetic_repeat_last_week"] == real["week"].nunique()
    generated = synthetic(built, "repeat_last_week", "1004")
    assert (generated["generator"] == "repeat_last_week").all()
    assert (pd.to_datetime(generated["target_week"]) == pd.to_datetime(generated["week"]) + pd.Timedelta(days=7)).all()
    expected = real.assign(ts=real["ts"] + pd.Timedelta(days=7))
    pd.testing.assert_frame_equal(generated[["week", *COLUMNS]].reset_index(drop=True),
                                  expected[["week", *COLUMNS]].reset_index(drop=True), check_dtype=False)
    assert "tokyo/repeat_last_week_model" not in done  # it learns nothing, so it has no model asset
    assert not built.graph.has(AssetKey(["tokyo", "repeat_last_week_model"]))


def test_other_population_week_is_a_real_week_of_someone_else(built, population):
    user = population[0]  # a population user: their own weeks are in the model and must be skipped
    built.materialize_user("tokyo", user, "other_population_week")
    generated = synthetic(built, "other_population_week", user)
    model = reference.from_table(built.warehouse.query("SELECT * FROM tokyo.other_population_week_model"))
    assert set(model["user_id"]) == set(population)
    real_weeks = {(u, w): frame.assign(ts=frame["ts"] - pd.Timestamp(w))[COLUMNS].reset_index(drop=True)
                  for (u, w), frame in model.groupby(["user_id", "week"])}
    for week, frame in generated.groupby("week"):
        offsets = frame.assign(ts=frame["ts"] - pd.Timestamp(frame["target_week"].iloc[0]))[COLUMNS].reset_index(drop=True)
        sources = [key for key, real in real_weeks.items() if len(real) == len(offsets) and real.equals(offsets)]
        assert sources, f"week {week}: not a real population week"
        assert all(source_user != user for source_user, _ in sources)
    assert generated["week"].nunique() == segments(built, user)["week"].nunique()


def test_other_population_week_is_seeded_per_user_week(built, population):
    spec = spec_named("other_population_week")
    model = reference.from_table(built.warehouse.query("SELECT * FROM tokyo.other_population_week_model"))
    user = population[0]
    built.materialize_user("tokyo", user, "other_population_week")  # nothing to do if the test above ran
    history = segments(built, user)
    week = history["week"].iloc[0]
    task = WeekTask(user, week, history[history["week"] <= week], {}, stable_seed(spec.seed, "tokyo", user, week))
    first, again = (reference.KIND.generate_weeks(model, [task], spec.settings, None)[0].events for _ in range(2))
    pd.testing.assert_frame_equal(first, again)
    stored = synthetic(built, "other_population_week", user)
    pd.testing.assert_frame_equal(stored[stored["week"] == week][COLUMNS].reset_index(drop=True), first,
                                  check_dtype=False)
    draws = {reference.other_population_week(model, user, np.random.default_rng(seed))
             for seed in range(20)}
    assert len(draws) > 1 and all(source_user != user for source_user, _ in draws)


@pytest.mark.parametrize("name", ["repeat_last_week", "other_population_week"])
def test_a_ubiqlog_user_is_generated_too(built, name):
    generated = generated_weeks(built, "ubiqlog", name, "10_M", max_weeks=2)
    assert generated.week.nunique() == 2
