"""BehaviorGPT on the fixture project: trained as the `behavior_gpt_model` asset, one user's weeks
materialised through the graph, every event valid against what training saw, the same rows from
a direct generation under the same seeds, and a tiny training that is reproducible."""

import pandas as pd
import pytest

from bgen_assets.assets.synthetic import stable_seed
from bgen_assets.generators import GenerationContext, WeekTask, load_generator_specs
from bgen_assets.generators import behavior_gpt
from bgen_assets.generators.behavior_gpt import BehaviorGPTConfig
from conftest import generated_weeks

USER = "1004"
TINY = {"n_layer": 1, "n_head": 2, "n_embd": 16, "epochs": 2, "min_steps": 0, "max_events_per_week": 12}


@pytest.fixture(scope="module")
def spec():
    return next(s for s in load_generator_specs() if s.name == "behavior_gpt")


@pytest.fixture(scope="module")
def population(built):
    return built.warehouse.query(
        "SELECT e.*, p.age_group, p.education, p.gender, p.consumption_level, p.occupation FROM tokyo.events e "
        "JOIN tokyo.user_split s USING (user_id) JOIN tokyo.profiles p USING (user_id) "
        "WHERE s.role = 'population' ORDER BY user_id, ts")


@pytest.fixture(scope="module")
def materialised(built):
    generated = generated_weeks(built, "tokyo", "behavior_gpt", USER)
    fitted = behavior_gpt.from_table(built.warehouse.query("SELECT * FROM tokyo.behavior_gpt_model"))
    return generated, fitted


def test_every_generated_event_is_valid(materialised, population):
    generated, fitted = materialised
    assert generated.groupby("week").size().between(1, fitted.config.max_events_per_week).all()
    trained_pairs = {(loc, i) for loc, intents in fitted.vocabulary.intents_by_location.items() for i in intents}
    assert trained_pairs == set(zip(population["location"], population["intent"]))
    assert set(zip(generated["location"], generated["intent"])) <= trained_pairs
    # the week's length is drawn first, so generated weeks are about as long as real ones
    real_lengths = population.groupby(["user_id", population["ts"].dt.to_period("W")]).size()
    real_mean = real_lengths.clip(upper=fitted.config.max_events_per_week).mean()
    assert 0.5 <= generated.groupby("week").size().mean() / real_mean <= 2


def test_direct_generation_under_the_same_seeds_gives_the_stored_rows(built, materialised, spec):
    generated, fitted = materialised
    history = built.warehouse.query(f"SELECT * FROM tokyo.weekly_segments WHERE user_id = '{USER}' ORDER BY ts")
    profile = built.warehouse.query(f"SELECT * FROM tokyo.profiles WHERE user_id = '{USER}'").iloc[0].to_dict()
    weeks = sorted(generated["week"].unique())
    tasks = [WeekTask(USER, week, history[history["week"] <= week], profile, stable_seed(spec.seed, "tokyo", USER, week))
             for week in weeks]
    context = GenerationContext("tokyo", "", 30, None, built.project.home, built.project.model_cache)
    again = pd.concat([r.events.assign(week=t.week) for t, r in zip(tasks, behavior_gpt.generate_weeks(fitted, tasks, context.slot_minutes))])
    columns = ["week", "ts", "weekday", "time_slot", "location", "intent"]
    pd.testing.assert_frame_equal(again[columns].reset_index(drop=True), generated[columns].reset_index(drop=True),
                                  check_dtype=False)


def test_tiny_training_is_reproducible(population):
    first, second = (behavior_gpt.fit(population, BehaviorGPTConfig(**TINY), 30, 0) for _ in range(2))
    pd.testing.assert_frame_equal(first, second)
    fitted = behavior_gpt.from_table(first)
    metadata = behavior_gpt.model_metadata(fitted)
    assert metadata["parameters"] > 0 and metadata["epochs"] == 2 and metadata["training_pairs"] > 0
    tokens = set(fitted.vocabulary.tokens)
    assert {f"loc:{loc}" for loc in population["location"]} <= tokens
    assert {f"occupation={v}" for v in population["occupation"]} <= tokens
    other = behavior_gpt.fit(population, BehaviorGPTConfig(**TINY), 30, 1)
    assert not other["payload"].equals(first["payload"])


def test_unknown_params_are_refused():
    with pytest.raises(ValueError):
        behavior_gpt.KIND.validate({"layers": 2})


def test_a_ubiqlog_user_is_generated_with_a_model_fitted_on_ubiqlog(built):
    generated = generated_weeks(built, "ubiqlog", "behavior_gpt", "10_M", max_weeks=2)
    assert generated.week.nunique() == 2
    fitted = behavior_gpt.from_table(built.warehouse.query("SELECT * FROM ubiqlog.behavior_gpt_model"))
    intents = set(built.warehouse.query("SELECT DISTINCT intent FROM ubiqlog.events")["intent"])
    assert {t.removeprefix("intent:") for t in fitted.vocabulary.tokens if t.startswith("intent:")} <= intents
