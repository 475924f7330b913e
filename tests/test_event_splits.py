"""The experiment split of every real event, and the guarantee that no generator sees an
individual user's validation or test period."""

from dagster import AssetKey

from bgen_assets.config import load_project
from bgen_assets.generators import markov
from bgen_assets.runs import Runner
from conftest import project_instance, write_project


def test_parts_follow_time_order_and_declared_shares(built):
    splits = built.warehouse.query("SELECT * FROM tokyo.event_splits ORDER BY user_id, event_number")
    split = built.project.split
    assert set(splits.loc[splits.role == "population", "part"]) == {"pretrain"}
    individual = splits[splits.role == "individual"]
    assert individual.user_id.nunique() > 0
    order = {"train": 0, "valid": 1, "test": 2}
    for user, events in individual.groupby("user_id"):
        assert events["ts"].is_monotonic_increasing
        assert events["part"].map(order).is_monotonic_increasing, user  # train, then valid, then test
        n = len(events)
        assert (events.part == "train").sum() == int(n * split.train_share)
        assert (events.part == "valid").sum() == int(n * (split.train_share + split.valid_share)) - int(n * split.train_share)
        assert events["limited"].sum() == min(split.limited_records, int(n * split.train_share))
        assert events.loc[events.limited, "part"].eq("train").all()
    assert not splits.loc[splits.role == "population", "limited"].any()


def test_generators_never_condition_on_validation_or_test_weeks(built):
    roles = built.warehouse.query("SELECT user_id, role FROM tokyo.user_split")
    user = roles.loc[roles.role == "individual", "user_id"].sort_values().iloc[0]
    built.materialize_user("tokyo", user, "markov")
    segments = built.warehouse.query("SELECT week, part FROM tokyo.weekly_segments WHERE user_id = ?", [user])
    first_unseen = segments.loc[segments.part.isin(["valid", "test"]), "week"].min()
    generated = built.warehouse.query("SELECT DISTINCT week FROM tokyo.synthetic_markov WHERE user_id = ?", [user])
    logged = built.warehouse.query("SELECT week FROM tokyo.synthetic_markov_log WHERE user_id = ?", [user])
    assert len(generated) > 0
    assert (generated.week < first_unseen).all() and (logged.week < first_unseen).all()
    train_weeks = set(segments.week) - set(segments.loc[segments.part != "train", "week"])
    assert set(logged.week) == train_weeks  # every fully-train week generated, nothing after
    unseen = set(segments.week) - train_weeks
    materialised = built.instance.get_materialized_partitions(AssetKey(["tokyo", "synthetic_markov"]))
    assert unseen and not {f"{user}|{week}" for week in unseen} & materialised  # not even empty partitions


def test_the_synthetic_asset_gives_a_generator_only_the_history_up_to_its_week(built, monkeypatch):
    roles = built.warehouse.query("SELECT user_id, role FROM tokyo.user_split")
    user = roles.loc[roles.role == "individual", "user_id"].sort_values().iloc[0]
    built.materialize_user("tokyo", user, "markov")  # its weekly segments
    segments = built.warehouse.query("SELECT * FROM tokyo.weekly_segments WHERE user_id = ? ORDER BY ts", [user])
    week = sorted(segments.week.unique())[1]  # later weeks exist, train and valid/test
    given = []

    def recording(kind, model, tasks, params, context):
        given.extend(tasks)
        return generate_weeks(kind, model, tasks, params, context)

    generate_weeks = markov.Markov.generate_weeks
    monkeypatch.setattr(markov.Markov, "generate_weeks", recording)
    built._materialize([AssetKey(["tokyo", "synthetic_markov"])], partition_key=f"{user}|{week}")  # even if built
    assert [(task.user, task.week) for task in given] == [(user, week)]
    history = given[0].history
    assert history["week"].max() == week
    assert len(history) == (segments.week <= week).sum()  # the whole past, nothing after


def test_a_user_without_a_training_week_is_told_why_nothing_was_generated(tmp_path, fixture_data, built):
    def one_percent_training(raw):  # every individual user's first week then also holds validation events
        raw["split"]["train_share"] = 0.01
        raw["datasets"].pop("ubiqlog")
        raw["scopes"]["demo"].pop("ubiqlog")

    project = load_project(write_project(tmp_path, fixture_data, one_percent_training))
    with project_instance(tmp_path / "dagster") as instance:
        runner = Runner.for_project(project, instance)
        runner.build_shared()
        roles = runner.warehouse.query("SELECT user_id, role FROM tokyo.user_split ORDER BY user_id")
        user = roles.loc[roles.role == "individual", "user_id"].iloc[0]
        done = runner.materialize_user("tokyo", user, "markov")
        assert done["tokyo/weekly_segments"] == 1 and done["tokyo/synthetic_markov"] == 0
        reason = runner.why_no_synthetic_weeks("tokyo", user)
        assert "is all training data" in reason and "split.train_share" in reason
    population_user = built.warehouse.query("SELECT user_id FROM tokyo.user_split WHERE role = 'population' LIMIT 1")
    built.build_segments("tokyo", list(population_user["user_id"]))
    assert built.why_no_synthetic_weeks("tokyo", population_user["user_id"].iloc[0]) is None
