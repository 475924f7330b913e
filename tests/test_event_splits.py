"""The experiment split of every real event, and the guarantee that no generator sees an
individual user's validation or test period."""

from dagster import AssetKey

from bgen_assets.generators import markov


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

    def recording(model, tasks, spec, context):
        given.extend(tasks)
        return generate_weeks(model, tasks, spec, context)

    generate_weeks = markov.generate_weeks
    monkeypatch.setattr(markov, "generate_weeks", recording)
    built._materialize([AssetKey(["tokyo", "synthetic_markov"])], partition_key=f"{user}|{week}")  # even if built
    assert [(task.user, task.week) for task in given] == [(user, week)]
    history = given[0].history
    assert history["week"].max() == week
    assert len(history) == (segments.week <= week).sum()  # the whole past, nothing after
