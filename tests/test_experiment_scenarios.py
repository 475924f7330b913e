"""What each per-user scenario fine-tunes on (replacement: the user's synthetic weeks and no real
data of the user; augmentation: the limited records + the weeks conditioned on them only), a
project scope's caps on epochs, pretraining users and seeds, and how synthetic data is scheduled."""

import pandas as pd
import pytest

from bgen_assets.experiments import ExperimentSpec, SyntheticUse, pretraining_frames, scenario_training_data, with_synthetic


def user_events() -> pd.DataFrame:
    """One individual user's 10 real events: 6 train (the first 3 limited), 2 valid, 2 test."""
    parts = ["train"] * 6 + ["valid"] * 2 + ["test"] * 2
    return pd.DataFrame({"user_id": "u", "ts": pd.date_range("2019-01-07", periods=10, freq="D"), "part": parts,
                         "limited": [True] * 3 + [False] * 7, "intent": [f"real{i}" for i in range(10)]})


def synthetic_weeks() -> pd.DataFrame:
    """The user's synthetic weeks as the training set holds them: one conditioned on the limited
    records only, one on more of the train part."""
    return pd.DataFrame({"user_id": "u", "week": ["2019-01-07", "2019-01-07", "2019-01-14"],
                         "ts": pd.to_datetime(["2019-01-14 08:00", "2019-01-15 08:00", "2019-01-21 08:00"]),
                         "use": "finetune", "limited": [True, True, False], "intent": ["syn0", "syn1", "syn2"]})


def intents(frame: pd.DataFrame) -> list[str]:
    assert frame["target"].all()  # every training event is a target
    return frame["intent"].tolist()


def test_replacement_fine_tunes_on_the_users_synthetic_weeks_and_no_real_data():
    sources, valid = scenario_training_data("replacement", user_events(), synthetic_weeks())
    assert list(sources) == ["synthetic"] and intents(sources["synthetic"]) == ["syn0", "syn1", "syn2"]
    # the user's real validation part only decides when to stop; the test part is never seen
    assert valid.loc[valid["target"], "part"].eq("valid").all() and valid["part"].ne("test").all()


def test_augmentation_fine_tunes_on_the_limited_records_and_the_weeks_conditioned_on_them():
    sources, valid = scenario_training_data("augmentation", user_events(), synthetic_weeks())
    assert list(sources) == ["real", "synthetic"]
    assert intents(sources["real"]) == ["real0", "real1", "real2"]
    assert intents(sources["synthetic"]) == ["syn0", "syn1"]
    assert valid.loc[valid["target"], "part"].eq("valid").all() and valid["part"].ne("test").all()
    # no week conditioned on the limited records only: nothing to fine-tune on (the limited-only model is kept)
    sources, _ = scenario_training_data("augmentation", user_events(), synthetic_weeks().assign(limited=False))
    assert sources == {}


def test_a_scope_caps_epochs_and_samples_pretraining_users():
    spec = ExperimentSpec(name="capped", backbone="bert4rec", generators=[],
                          pretrain={"max_epochs": 20}, finetune={"max_epochs": 10},
                          seeds=3, scope={"demo": {"max_pretrain_users": 2, "max_epochs": 3, "seeds": 1}})
    assert [config.max_epochs for config in spec.configs("demo")] == [3, 3]
    assert [(p.seed, f.seed) for p, f in spec.seeded_configs("full")] == [(0, 0), (1, 1), (2, 2)]
    assert [(p.seed, p.max_epochs) for p, _ in spec.seeded_configs("demo")] == [(0, 3)]
    assert [config.max_epochs for config in spec.configs("full")] == [20, 10]  # a scope that declares no caps
    population = pd.DataFrame({"user_id": [f"p{i}" for i in range(5) for _ in range(10)],
                               "ts": pd.date_range("2019-01-07", periods=50, freq="h"), "intent": "any"})
    capped_train, capped_valid = pretraining_frames(population, spec.scoped("demo").max_pretrain_users, seed=1)
    assert capped_train["user_id"].nunique() == 2 and set(capped_valid["user_id"]) == set(capped_train["user_id"])
    every_train, _ = pretraining_frames(population, spec.scoped("full").max_pretrain_users, seed=1)
    assert every_train["user_id"].nunique() == 5


def test_synthetic_first_trains_on_the_synthetic_weeks_then_on_the_rest_from_that_model():
    calls = []

    def train(sources, init, weights):
        calls.append((sorted(sources), init, weights))
        return f"model {len(calls)}"

    sources = {"real": "R", "synthetic": "S"}
    assert with_synthetic(SyntheticUse(weight=0.5), sources, "population", train) == "model 1"
    assert calls == [(["real", "synthetic"], "population", {"synthetic": 0.5})]
    calls.clear()
    assert with_synthetic(SyntheticUse(schedule="synthetic_first"), sources, "population", train) == "model 2"
    assert calls == [(["synthetic"], "population", {"synthetic": 1.0}), (["real"], "model 1", {"synthetic": 1.0})]
    calls.clear()
    with_synthetic(SyntheticUse(schedule="synthetic_first"), {"real": "R"}, None, train)  # nothing synthetic: one training
    assert calls == [(["real"], None, {"synthetic": 1.0})]


def test_a_lever_shares_the_real_data_predictors_only_when_their_settings_are_equal(tmp_path):
    from bgen_assets.assets.training import with_shared_real_rows
    from bgen_assets.experiments import load_experiment_specs

    (tmp_path / "base.yml").write_text("backbone: bert4rec\npretrain: {width: 16}\ngenerators: [markov]\nseeds: 2\n")
    (tmp_path / "lever.yml").write_text("extends: base\nreal_from: base\nsynthetic: {weight: 4.0}\n")
    (tmp_path / "unbuilt.yml").write_text("extends: base\nreal_from: base\nsynthetic: {weight: 0.5}\n")
    specs = {spec.name: spec for spec in load_experiment_specs(tmp_path)}
    assert specs["lever"].real_name == "base" and specs["base"].real_name == "base"
    scores = pd.DataFrame({"experiment": ["base", "base", "lever"], "generator": ["real", "markov", "markov"]})
    shared = with_shared_real_rows(scores, list(specs.values()))
    assert sorted(zip(shared["experiment"], shared["generator"])) == [
        ("base", "markov"), ("base", "real"), ("lever", "markov"), ("lever", "real")]

    (tmp_path / "lever.yml").write_text("extends: base\nreal_from: base\nseeds: 3\n")
    with pytest.raises(ValueError, match="real-data settings"):
        load_experiment_specs(tmp_path)
