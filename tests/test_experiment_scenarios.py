"""What each per-user scenario fine-tunes on (replacement: the user's synthetic weeks and no real
data of the user; augmentation: the limited records + the weeks conditioned on them only), and a
project scope's caps on epochs and pretraining users."""

import pandas as pd

from bgen_assets.experiments import ExperimentSpec, pretraining_frames, scenario_training_data


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
    assert valid is None  # not even the user's validation part: a fixed number of epochs


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
                          scope={"demo": {"max_pretrain_users": 2, "max_epochs": 3}})
    assert [config.max_epochs for config in spec.configs("demo")] == [3, 3]
    assert [config.max_epochs for config in spec.configs("full")] == [20, 10]  # a scope that declares no caps
    population = pd.DataFrame({"user_id": [f"p{i}" for i in range(5) for _ in range(10)],
                               "ts": pd.date_range("2019-01-07", periods=50, freq="h"), "intent": "any"})
    capped_train, capped_valid = pretraining_frames(population, spec.scoped("demo").max_pretrain_users, seed=1)
    assert capped_train["user_id"].nunique() == 2 and set(capped_valid["user_id"]) == set(capped_train["user_id"])
    every_train, _ = pretraining_frames(population, spec.scoped("full").max_pretrain_users, seed=1)
    assert every_train["user_id"].nunique() == 5
